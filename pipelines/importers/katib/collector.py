"""``spec.metricsCollectorSpec`` as ``trainer.collect``: the program's output, a metrics file or
TensorBoard events; a file the program writes at an absolute path is moved into the trial's
working folder (a trial's root filesystem is read-only), on the command line too."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from components.contract import relative_path_problem
from pipelines.importers.katib.common import Context, mapping

PATH = "spec.metricsCollectorSpec"
DEFAULT_FILE = "/var/log/katib/metrics.log"
DEFAULT_TFEVENT_DIR = "/var/log/katib/tfevent/"
ABS_PATH = re.compile(r"(?<![\w./-])/[\w./-]*")


def collector(
    ctx: Context, mc: Any, command: list[str] | None
) -> tuple[list[str] | None, dict[str, Any] | None]:
    """``trainer.collect`` of ``spec.metricsCollectorSpec``, and the command with the
    collector's absolute path made relative to the trial's working folder (None: the trial
    was refused, so only the collector's own fields are checked)."""
    found = _kind_and_source(ctx, mc)
    if found is None:
        return command, None
    kind, source = found
    for key in sorted(set(source) - {"filter", "fileSystemPath", "httpGet"}):
        ctx.refuse(f"{PATH}.source.{key}", "not a field of a Katib metrics source")
    if source.get("httpGet") is not None:
        ctx.note(f"{PATH}.source.httpGet", f"dropped: a {kind} collector does not use it")
    formats = _formats(ctx, source.get("filter"), f"{PATH}.source.filter")
    fsp = source.get("fileSystemPath")
    if kind == "StdOut":
        if fsp is not None:
            ctx.note(
                f"{PATH}.source.fileSystemPath",
                "dropped: a StdOut collector reads the program's output",
            )
        return command, {"stdout": formats or "name=value"}
    return _from_file(ctx, kind, mapping(fsp), formats, command)


def _kind_and_source(ctx: Context, mc: Any) -> tuple[Any, Mapping[str, Any]] | None:
    """The collector's kind (StdOut when not given) and its ``source``; None after refusing a
    collector that cannot map."""
    if mc is None:
        mc = {}
    if not isinstance(mc, Mapping):
        ctx.refuse(PATH, "must be {collector, source}")
        return None
    for key in sorted(set(mc) - {"collector", "source"}):
        ctx.refuse(f"{PATH}.{key}", "not a field of a Katib metrics collector")
    collector = mc.get("collector") or {}
    source = mc.get("source") or {}
    if not isinstance(collector, Mapping) or not isinstance(source, Mapping):
        ctx.refuse(PATH, "collector and source must be mappings")
        return None
    kind = collector.get("kind") or "StdOut"
    for key in sorted(set(collector) - {"kind", "customCollector"}):
        ctx.refuse(f"{PATH}.collector.{key}", "not a field of a Katib collector")
    refused = {
        "Custom": "a Custom collector (a sidecar image of your own) cannot map: print "
        "name=value, write a metrics file or TensorBoard events instead",
        "PrometheusMetric": "PrometheusMetric cannot map: sweepyard does not scrape a trial's "
        "HTTP endpoint",
        "Push": "Push cannot map: the program reports to Katib's DB manager through the Katib "
        "SDK; print name=value or write SWEEPYARD_METRICS instead",
    }
    for name, why in refused.items():
        if kind == name:
            ctx.refuse(f"{PATH}.collector.kind", why)
            return None
    if kind not in ("StdOut", "File", "TensorFlowEvent"):
        ctx.refuse(f"{PATH}.collector.kind", f"unknown collector kind {kind!r}")
        return None
    return kind, source


def _from_file(
    ctx: Context,
    kind: str,
    fsp: Mapping[str, Any],
    formats: list[str],
    command: list[str] | None,
) -> tuple[list[str] | None, dict[str, Any] | None]:
    """A File or TensorFlowEvent collector: what :func:`collector` returns, of its
    ``fileSystemPath`` ``fsp`` and the metric formats of its filter."""
    fpath = f"{PATH}.source.fileSystemPath"
    for key in sorted(set(fsp) - {"path", "kind", "format"}):
        ctx.refuse(f"{fpath}.{key}", "not a field of a Katib fileSystemPath")
    want = "File" if kind == "File" else "Directory"
    if fsp.get("kind") not in (None, "", want):
        ctx.refuse(f"{fpath}.kind", f"a {kind} collector reads a {want}, got {fsp.get('kind')!r}")
    default = DEFAULT_FILE if kind == "File" else DEFAULT_TFEVENT_DIR
    raw = fsp.get("path") or default
    if command is None:
        return command, None
    moved = relocate(
        ctx, str(raw), command, f"{fpath}.path", default=raw == default and not fsp.get("path")
    )
    if moved is None:
        return command, None
    command, relative = moved
    if kind == "TensorFlowEvent":
        if fsp.get("format"):
            ctx.refuse(f"{fpath}.format", "a TensorFlowEvent collector takes no format")
        if formats:
            ctx.note(f"{PATH}.source.filter", "dropped: TensorBoard events name their metrics")
        return command, {"tensorboard": relative}
    return command, _metrics_file(ctx, fsp.get("format") or "TEXT", formats, relative)


def _metrics_file(
    ctx: Context, fmt: Any, formats: list[str], relative: str
) -> dict[str, Any] | None:
    """``collect.file`` of a File collector in format ``fmt``; None after refusing."""
    if fmt not in ("TEXT", "JSON"):
        ctx.refuse(f"{PATH}.source.fileSystemPath.format", f"must be TEXT or JSON, got {fmt!r}")
        return None
    spec: dict[str, Any] = {"path": relative, "format": "text" if fmt == "TEXT" else "jsonl"}
    if fmt == "JSON" and formats:
        ctx.refuse(f"{PATH}.source.filter", "a JSON metrics file takes no filter (nor in Katib)")
    elif formats:
        spec["regex"] = formats
    return {"file": spec}


def _formats(ctx: Context, flt: Any, path: str) -> list[str]:
    """The filter's ``metricsFormat`` regexes that compile with 2 groups (name, value)."""
    if flt is None:
        return []
    formats = flt.get("metricsFormat") if isinstance(flt, Mapping) else None
    if not isinstance(formats, list):
        ctx.refuse(f"{path}.metricsFormat", "must be a list of regexes")
        return []
    out = []
    for i, regex in enumerate(formats):
        where = f"{path}.metricsFormat[{i}]"
        try:
            pattern = re.compile(str(regex))
        except re.error as e:
            ctx.refuse(where, f"{regex!r} is not a regex here (Python's re): {e}")
            continue
        if pattern.groups < 2:
            ctx.refuse(where, f"{regex!r} needs 2 groups: the metric's name, then its value")
            continue
        out.append(str(regex))
    return out


def relocate(
    ctx: Context, path: str, command: list[str], where: str, *, default: bool
) -> tuple[list[str], str] | None:
    """The command with ``path`` (or the folder above it that the command names) moved into
    the trial's working folder, and ``path``'s new relative name; None after refusing."""
    target = posixpath.normpath(path)
    if not target.startswith("/"):
        why = relative_path_problem(target)
        if why:
            ctx.refuse(where, why.replace("shared disk's root", "trial's working folder"))
            return None
        return command, target
    tokens = {t.rstrip("/") for word in command for t in ABS_PATH.findall(word)} - {""}
    if any(t == target or t.startswith(target + "/") for t in tokens):
        root = target
    else:
        above = [t for t in tokens if target.startswith(t + "/")]
        if not above:
            said = f"{path} (Katib's default)" if default else path
            ctx.refuse(
                where,
                f"the program writes {said}, which is not on its command line: sweepyard "
                "cannot move it into the trial's working folder (a trial's root filesystem is "
                "read-only). Pass the path as an argument, or print name=value (StdOut)",
            )
            return None
        root = max(above, key=len)
    base = posixpath.basename(root)
    relative = base + target[len(root) :]

    def move(m: re.Match[str]) -> str:
        token = m.group(0)
        bare = token.rstrip("/")
        if bare == root or bare.startswith(root + "/"):
            return base + token[len(root) :]
        return token

    moved = [ABS_PATH.sub(move, word) for word in command]
    moved_too = "" if root == target else f" (the command's folder {root} is {base})"
    ctx.note(
        where,
        f"{path} is {relative}, in the trial's working folder, here and in the command{moved_too}",
    )
    return moved, relative
