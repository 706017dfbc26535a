"""``python -m pipelines new NAME [--kind python|command]``: a new pipeline and its trainer, ready to run.

Writes ``pipelines/NAME.yaml`` and ``trainers/<module>/`` (``module`` is NAME with ``-`` as ``_``)
from the templates in ``pipelines/templates/``; ``make submit PIPELINE=NAME`` runs them at once.
Nothing is overwritten: an existing file is an error that names it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAME = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
KINDS = ("python", "command")


class ScaffoldError(ValueError):
    """A name that cannot be a pipeline, or a file that already exists."""


@dataclass(frozen=True)
class Scaffold:
    """What ``new`` writes: file paths (relative to the project root) and their text."""

    files: dict[str, str]


def _indent(lines: list[str], spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in lines)


def plan(name: str, kind: str = "python") -> Scaffold:
    """The files of a new pipeline ``name`` with a trainer of ``kind`` (nothing written yet).

    Raises:
        ScaffoldError: the name is not a DNS label (lowercase letters, digits, ``-``; at most 40)
            or the kind is unknown.
    """
    if not NAME.match(name):
        raise ScaffoldError(
            f"pipeline name {name!r}: use lowercase letters, digits and '-', starting with a "
            "letter, at most 40 characters (it names Kubernetes objects)"
        )
    if kind not in KINDS:
        raise ScaffoldError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
    module = name.replace("-", "_")
    folder = f"trainers/{module}"
    if kind == "python":
        trainer_file = f"{folder}/train.py"
        trainer = [f"function: trainers.{module}.train:train"]
        grid = ["lr: [0.003, 0.03]", "hidden: [32, 128]"]
        fixed = ["steps: 200", "seed: 0"]
        description = "a PyTorch trainer on the digits table (Python contract)"
        body = (TEMPLATES / "train.py.tmpl").read_text()
    else:
        trainer_file = f"{folder}/train.py"
        command = f'["python", "-u", "{trainer_file}", "--lr", "{{lr}}", "--steps", "{{steps}}"]'
        trainer = [f"command: {command}", "params: {lr: float, steps: int}   # their types"]
        grid = ["lr: [0.03, 0.3, 1.0]"]
        fixed = ["steps: 300"]
        description = "softmax regression in NumPy, any program (command contract)"
        body = (TEMPLATES / "command.py.tmpl").read_text()
    values = {
        "name": name,
        "module": module,
        "description": description,
        "trainer_path": trainer_file,
        "trainer": _indent(trainer, 2),
        "grid": _indent(grid, 6),
        "fixed": _indent(fixed, 6),
    }
    pipeline = Template((TEMPLATES / "pipeline.yaml.tmpl").read_text()).substitute(values)
    files = {
        f"pipelines/{name}.yaml": pipeline,
        trainer_file: Template(body).substitute(values),
    }
    if kind == "python":
        files[f"{folder}/__init__.py"] = f'"""The trainer of the {name} pipeline."""\n'
    return Scaffold(files=files)


def write(root: Path, scaffold: Scaffold) -> list[Path]:
    """Write the scaffold under ``root``; refuses (before writing anything) if a file exists."""
    paths = [root / rel for rel in scaffold.files]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise ScaffoldError(f"not overwriting {', '.join(existing)}: pick another name")
    for path, text in zip(paths, scaffold.files.values(), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths


def cmd_new(args: argparse.Namespace) -> int:
    try:
        paths = write(Path(args.root), plan(args.name, args.kind))
    except ScaffoldError as exc:
        raise SystemExit(f"new: {exc}") from None
    for path in paths:
        print(f"wrote {path}")
    print(f"next: make submit PIPELINE={args.name}   (then edit {paths[1]})")
    return 0


# (argparse names no public type for what add_subparsers returns: typeshed's is this one)
def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], root: Path) -> None:
    """The ``new`` subcommand of ``python -m pipelines``."""
    n = sub.add_parser("new", help="scaffold pipelines/NAME.yaml and its trainer")
    n.add_argument("name", help="the pipeline's name (lowercase letters, digits, '-')")
    n.add_argument("--kind", choices=KINDS, default="python", help="the trainer's contract")
    n.add_argument("--root", default=str(root), help="the project root to write into")
    n.set_defaults(func=cmd_new)
