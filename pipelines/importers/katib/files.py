"""The files of an import: the Katib YAML read in, the config file's text rendered and written."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from components.fsio import fsync_dir
from pipelines.importers.katib.common import KatibImportError


def read_experiment(path: Path) -> dict[str, Any]:
    """The one Katib Experiment in a YAML file (other documents beside it are ignored).

    Raises:
        KatibImportError: the file cannot be read or parsed, or holds no or several Experiments.
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise KatibImportError([("", f"cannot read {path}: {e.strerror}")]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise KatibImportError(
            [("", f"not valid YAML: {where}{getattr(e, 'problem', e)}")]
        ) from None
    experiments = [d for d in docs if isinstance(d, Mapping) and d.get("kind") == "Experiment"]
    if len(experiments) == 1:
        return dict(experiments[0])
    if not experiments:
        kinds = ", ".join(
            str(d.get("kind")) if isinstance(d, Mapping) else type(d).__name__ for d in docs
        )
        why = f"no Katib Experiment in the file (found: {kinds or 'nothing'})"
        raise KatibImportError([("kind", why)])
    names = ", ".join(str((d.get("metadata") or {}).get("name")) for d in experiments)
    raise KatibImportError(
        [("", f"{len(experiments)} Experiments in one file ({names}): import one file each")]
    )


def render(
    cfg: Mapping[str, Any], notes: list[str], *, source: Path, doc: Mapping[str, Any]
) -> str:
    """The config file's text: a header (where it came from, the notes), then the YAML."""
    meta = doc.get("metadata") or {}
    head = [
        f"# Imported from Katib Experiment {qualified(meta)} ({source.name}) by `make import`.",
        "# Review it, then `make submit PIPELINE=" + str(cfg["name"]) + "`.",
    ]
    if notes:
        head.append("# Notes from the import:")
        head += [f"#   - {n}" for n in notes]

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    body = yaml.dump(
        dict(cfg),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=None,
        width=100,
        allow_unicode=True,
    )
    return "\n".join(head) + "\n" + body


def qualified(meta: Mapping[str, Any]) -> str:
    """The Experiment's ``namespace/name`` (its name alone when it names no namespace)."""
    name, namespace = meta.get("name"), meta.get("namespace")
    return f"{namespace}/{name}" if namespace else str(name)


def write(path: Path, text: str, *, replace: bool) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it into place
    (``replace``) or link it there only if ``path`` does not exist (never overwriting).

    Raises:
        KatibImportError: ``path`` exists already (and ``replace`` is not set).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.import-{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise exists(path) from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def exists(path: Path) -> KatibImportError:
    """The error for a config file that is there already."""
    return KatibImportError(
        [("metadata.name", f"{path} exists already: --force (make import FORCE=1) replaces it")]
    )
