"""``make check-compiled`` and ``make check``: the project's golden files, and every pipeline.

``check-compiled`` (part of ``make test``) compiles the pipelines committed to the repository into
a temporary folder and compares each manifest with its golden file in ``pipelines/compiled/``: a
team's own pipeline that is not committed (``make new``) is not the project's to check, and never
breaks the project's tests. ``check`` (a team's CI) compiles and validates every
``pipelines/*.yaml``, committed or not, and names each broken file without stopping at the first.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.build.compile import (
    checked,
    compile_kfp,
    dump_yaml,
    manifests,
    pipeline_names,
    validated,
)
from pipelines.config import PIPELINES_DIR, ConfigError

COMPILED = PIPELINES_DIR / "compiled"


def committed_pipelines(repo: Path) -> list[str] | None:
    """The pipelines whose config git tracks (None: not a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--", "pipelines/*.yaml"],
            cwd=repo, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return sorted(Path(line).stem for line in out.splitlines() if line.count("/") == 1)


def compile_into(name: str, out_dir: Path) -> list[Path]:
    """Compile and validate pipeline ``name`` into ``out_dir``; the files written."""
    cfg = checked(name)
    written = []
    for filename, doc in manifests(cfg).items():
        path = out_dir / filename
        path.write_text(dump_yaml(validated(doc, filename)))
        written.append(path)
    from pipelines.build.kfp import unsupported

    if unsupported(cfg) is None:  # a multi-node trial has no KFP package (Argo only)
        written.append(compile_kfp(cfg, out_dir))
    return written


def check_golden(repo: Path) -> int:
    """Exit 1 when a committed pipeline no longer compiles to its committed golden files."""
    names = committed_pipelines(repo)
    if names is None:
        print("check-compiled: not a git checkout; nothing to compare with", file=sys.stderr)
        return 1
    tracked = set(subprocess.run(["git", "ls-files", "--", "pipelines/compiled"], cwd=repo,
                                 capture_output=True, text=True).stdout.split())  # fmt: skip
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for path in compile_into(name, Path(tmp)):
                golden = COMPILED / path.name
                rel = str(golden.relative_to(repo))
                if rel not in tracked:
                    problems.append(f"{rel}: not committed (pipelines/{name}.yaml is)")
                elif golden.read_text() != path.read_text():
                    problems.append(f"{rel}: differs from what pipelines/{name}.yaml compiles to")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("run `make compile` and commit pipelines/compiled/", file=sys.stderr)
        return 1
    print(f"golden manifests current: {', '.join(names)}")
    return 0


def check_all() -> int:
    """Compile and validate every ``pipelines/*.yaml``; exit 1 naming each one that breaks."""
    broken = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in pipeline_names():
            source = f"pipelines/{name}.yaml"
            try:
                compile_into(name, Path(tmp))
            except (ConfigError, ValueError) as exc:
                broken += 1
                print(f"FAILED {source}: {exc}", file=sys.stderr)
                continue
            print(f"ok     {source}")
    if broken:
        print(f"{broken} pipeline(s) broken", file=sys.stderr)
    return 1 if broken else 0
