"""``python -m pipelines <compile|validate|run|submit|schedule|status|ui|new|import>``: what the
Makefile calls."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.contract import check_sweep_id
from pipelines import checks
from pipelines.backends import BACKENDS, pick_backend
from pipelines.build.compile import (
    checked,
    checked_with_warnings,
    compile_kfp,
    dump_yaml,
    manifests,
    pipeline_names,
    validated,
)
from pipelines.config import PIPELINES_DIR, ConfigError, config_path, load_config
from pipelines.rerun import add_parser as add_rerun_parser
from pipelines.scaffold import add_parser as add_new_parser

REPO = PIPELINES_DIR.parent
COMPILED = PIPELINES_DIR / "compiled"


# What a compiled manifest depends on, besides the environment: every source, config and lock
# file of the project (and of PYTHONPATH), so that any edit compiles and validates anew.
SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".toml", ".lock", ".cfg")
SKIPPED_DIRS = {".git", ".venv", ".sweepyard", "__pycache__", "node_modules", "compiled"}
MAX_SOURCE_FILES = 20000


def sources_key(name: str, roots: Sequence[Path]) -> str | None:
    """A hash of what compiling pipeline ``name`` reads: the interpreter, ``IMAGE``,
    ``PYTHONPATH``, the working folder and every source file under ``roots`` (path, size, mtime),
    the installed packages' stamp; None (do not cache) when there are too many files to say."""
    h = hashlib.sha256()
    env = {k: os.environ.get(k, "") for k in ("IMAGE", "PYTHONPATH")}
    h.update(json.dumps([name, sys.executable, sys.version, os.getcwd(), env]).encode())
    try:  # the config itself, wherever it is
        h.update(config_path(name).read_bytes())
    except (OSError, ConfigError):
        return None
    for extra in (REPO / ".venv" / ".sweepyard-installed", Path(sys.prefix) / "pyvenv.cfg"):
        with contextlib.suppress(OSError):
            h.update(f"{extra}:{extra.stat().st_mtime_ns}\n".encode())
    count = 0
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
            for f in sorted(files):
                if not f.endswith(SOURCE_SUFFIXES):
                    continue
                count += 1
                if count > MAX_SOURCE_FILES:
                    return None
                path = os.path.join(folder, f)
                with contextlib.suppress(OSError):
                    st = os.stat(path)
                    h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def submit_manifest(name: str) -> dict[str, Any]:
    """The compiled, validated manifest of pipeline ``name`` for a local run, its warnings printed.

    Compiling checks the trainer in a subprocess that imports it and loads Hera: seconds. What
    it produced is kept in ``.sweepyard/compiled/`` under :func:`sources_key`, and used again
    while no source, config, lock or environment it depends on has changed.
    """
    roots = [REPO] + [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    key = sources_key(name, [r for r in dict.fromkeys(roots) if r.is_dir()])
    cache = REPO / ".sweepyard" / "compiled" / f"{name}.json"
    if key is not None:
        try:
            doc = json.loads(cache.read_text())
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and doc.get("key") == key:
            for line in doc["warnings"]:
                print(line, file=sys.stderr)
            return dict(doc["manifest"])
    cfg, warnings = checked_with_warnings(name)
    for line in warnings:
        print(line, file=sys.stderr)
    manifest = validated(manifests(cfg)[f"{cfg.name}.yaml"], f"{cfg.name} (compiled)")
    if key is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "warnings": warnings, "manifest": manifest}))
        tmp.replace(cache)
    return manifest


def cmd_compile(args: argparse.Namespace) -> int:
    names = pipeline_names() if args.all else [args.pipeline]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        cfg = checked(name)
        for filename, doc in manifests(cfg).items():
            _write(out_dir / filename, dump_yaml(validated(doc, filename)))
        from pipelines.build.kfp import unsupported

        if (why := unsupported(cfg)) is not None:  # a multi-node trial: Argo only
            print(f"skipped {cfg.name}.kfp.yaml: {why}")
            continue
        print(f"wrote {compile_kfp(cfg, out_dir)}")
    return 0


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    print(f"wrote {path}")


def cmd_validate(args: argparse.Namespace) -> int:
    from pipelines.validate import main as validate_main

    return validate_main(list(args.files))


def cmd_submit(args: argparse.Namespace) -> int:
    if args.sweep_id is not None:
        try:  # refused here, before anything is compiled or submitted
            check_sweep_id(args.sweep_id)
        except ValueError as e:
            print(f"error: --sweep-id (SWEEP_ID): {e}", file=sys.stderr)
            return 2
    backend = pick_backend(args.backend, os.environ)
    if backend == "local":
        from pipelines.backends.local import cli as local_cli

        manifest = submit_manifest(args.pipeline)
        return local_cli.submit(
            manifest,
            sweep_id=args.sweep_id,
            chaos=args.chaos,
            project_root=REPO,
            runtime=args.runtime,
        )
    cfg = checked(args.pipeline)
    manifest = validated(manifests(cfg)[f"{cfg.name}.yaml"], f"{cfg.name} (compiled)")
    if backend == "argo":
        from pipelines.backends import argo

        return argo.submit(manifest, cfg=cfg, sweep_id=args.sweep_id, env=os.environ)
    from pipelines.backends import kfp as kfp_backend

    package = compile_kfp(cfg, REPO / ".sweepyard" / "kfp")
    return kfp_backend.submit(package, cfg=cfg, sweep_id=args.sweep_id, env=os.environ)


def cmd_schedule(args: argparse.Namespace) -> int:
    cfg = load_config(args.pipeline, image=os.environ.get("IMAGE") or None)
    if cfg.schedule is None:
        raise SystemExit(f"pipeline {cfg.name!r} has no 'schedule' in pipelines/{cfg.name}.yaml")
    backend = pick_backend(args.backend, os.environ)
    if backend == "argo":
        from pipelines.backends import argo

        cron = validated(manifests(cfg)[f"{cfg.name}-cron.yaml"], f"{cfg.name}-cron (compiled)")
        return argo.schedule(cron, cfg=cfg, env=os.environ)
    if backend == "kfp":
        from pipelines.backends import kfp as kfp_backend

        package = compile_kfp(cfg, REPO / ".sweepyard" / "kfp")
        return kfp_backend.schedule(package, cfg=cfg, env=os.environ)
    raise SystemExit(
        "schedules run on a cluster: set ARGO_SERVER (or BACKEND=argo) or KFP_HOST (or BACKEND=kfp); "
        "the local backend runs one sweep at a time (make submit)"
    )


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.pipeline)
    backend = pick_backend(args.backend, os.environ)
    if backend == "argo":
        from pipelines.backends import argo

        return argo.status(cfg=cfg, env=os.environ)
    if backend == "local":
        from pipelines.backends import local

        return local.status(cfg=cfg, project_root=REPO)
    raise SystemExit(
        "status is available for the local and argo backends; use the Kubeflow UI for KFP runs"
    )


def cmd_ui(args: argparse.Namespace) -> int:
    from pipelines import ui

    return ui.main(["--pipeline", args.pipeline, *args.rest])


def cmd_import(args: argparse.Namespace) -> int:
    from pipelines.importers.katib import KatibImportError, import_file

    notes: list[str] = []
    try:
        path = import_file(args.katib, args.out, force=args.force, notes=notes)
    except KatibImportError as e:
        print(f"error: cannot import {args.katib}:", file=sys.stderr)
        for field, why in e.problems:
            print(f"  {field or '(file)'}: {why}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    print(path)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _add_compile_parsers(sub)
    # listed for --help only: main() hands `run ...` to the local runner before parsing
    sub.add_parser("run", help="validate and run a compiled Workflow file locally", add_help=False)
    _add_backend_parsers(sub)

    u = sub.add_parser("ui", help="serve the local MLflow UI and TensorBoard")
    u.add_argument("--pipeline", default="sweep")
    u.add_argument("rest", nargs=argparse.REMAINDER)
    u.set_defaults(func=cmd_ui)

    add_new_parser(sub, REPO)
    add_rerun_parser(sub, REPO)

    i = sub.add_parser("import", help="a Katib Experiment as pipelines/<name>.yaml")
    i.add_argument("--katib", required=True, metavar="FILE", help="the Experiment's YAML")
    i.add_argument("--force", action="store_true", help="replace an existing pipeline config")
    i.add_argument("--out", default=str(PIPELINES_DIR), help="folder to write <name>.yaml in")
    i.set_defaults(func=cmd_import)
    return p


def _add_compile_parsers(sub: Any) -> None:
    """``compile``, ``check-compiled``, ``check``, ``validate``."""
    c = sub.add_parser("compile", help="write pipelines/compiled/ (validated)")
    c.add_argument("--pipeline", default="sweep")
    c.add_argument("--all", action="store_true", help="every pipelines/*.yaml")
    c.add_argument("--out", default=str(COMPILED))
    c.set_defaults(func=cmd_compile)

    g = sub.add_parser("check-compiled", help="committed pipelines still compile to their goldens")
    g.set_defaults(func=lambda args: checks.check_golden(REPO))
    k = sub.add_parser(
        "check", help="compile and validate every pipelines/*.yaml, naming each broken one"
    )
    k.set_defaults(func=lambda args: checks.check_all())

    v = sub.add_parser("validate", help="strict Argo schema + lint of manifest files")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_validate)


def _add_backend_parsers(sub: Any) -> None:
    """``submit``, ``schedule``, ``status``: a pipeline on a backend (``--backend``)."""
    for name, func, text in (
        ("submit", cmd_submit, "compile, validate and run a pipeline"),
        ("schedule", cmd_schedule, "create or update the pipeline's recurring run"),
        ("status", cmd_status, "trial states of the pipeline's last submission"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--pipeline", default="sweep")
        s.add_argument("--backend", choices=BACKENDS, default=None)
        if name == "submit":
            s.add_argument(
                "--sweep-id", default=None, help="resume this sweep (finished trials are skipped)"
            )
            s.add_argument(
                "--chaos",
                type=float,
                default=0.0,
                help="local only: preemption probability per trial attempt",
            )
            s.add_argument(
                "--runtime",
                choices=("process", "image"),
                default="process",
                help="local only: each step as a process, or inside the built image (make image)",
            )
        s.set_defaults(func=func)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the local runner owns its flags (argparse.REMAINDER would drop leading options)
    if argv[:1] == ["run"]:
        from pipelines.backends.local import cli as local_cli

        return local_cli.main(argv[1:])
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the validator's refusals: say what and where, no traceback
        from pipelines.validate import ManifestInvalid
        from pipelines.validate.schema import SchemaNotFound

        if isinstance(e, ManifestInvalid | SchemaNotFound):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
