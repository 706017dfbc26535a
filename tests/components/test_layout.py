"""The shared-disk layout is spelled in one module (components/contract.py), as DESIGN.md draws it.

DESIGN.md, "Contracts"::

    data/<dataset>/<content-hash>/...   MANIFEST.json, then .complete
    sweeps/<sweep-id>/plan.json  study.journal  summary.json  leaderboard.md|csv  plots/
    sweeps/<sweep-id>/trials/<trial-id>/checkpoints/  model/  work/  result.json  attempts.jsonl
        lineage.json
    tensorboard/<sweep-id>/<trial-id> <varying params>/

Every other module builds its paths with the layout's helpers: the last tests scan ``components/``
and ``pipelines/`` for a file or folder name of the layout written out anywhere else.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import TypeGuard

import pytest

from components import contract as layout
from tests.conftest import REPO

LAYOUT_MODULE = REPO / "components" / "contract.py"
SCANNED = ("components", "pipelines")
SKIPPED = ("pipelines/compiled",)  # golden YAML, not source

# Names that mean the shared disk (or the outputs folder) wherever they appear as a string.
FILE_NAMES = frozenset(
    {
        layout.RESULT_FILE,
        layout.ATTEMPTS_FILE,
        layout.PLAN_FILE,
        layout.STUDY_FILE,
        layout.SUMMARY_FILE,
        layout.SWEEP_RUN_ENDED_FILE,
        layout.LEADERBOARD_MD,
        layout.LEADERBOARD_CSV,
        layout.CURVES_PLOT,
        layout.PARAMS_PLOT,
        layout.PLOTS_PAGE,
        layout.LINEAGE_FILE,
        layout.SPOOL_FILE,
        layout.MLFLOW_RUN_FILE,
        layout.COLLECTED_FILE,
        layout.METRICS_FILE,
        layout.PRUNED_FILE,
        layout.MANIFEST_FILE,
        layout.COMPLETE_FILE,
        layout.LATEST_FILE,
        layout.SWEEPS_DIR,
        layout.CHECKPOINTS_DIR,
        layout.SUPERVISOR_CHECKPOINTS_DIR,
        layout.RANK_RECORDS,
    }
)
ROOTS = (layout.DEFAULT_OUTPUTS_DIR, layout.DEFAULT_MOUNT_PATH)
# Common words that are a layout name only in a path join (``folder / "data"``, ``Path("work")``).
JOINED_WORDS = frozenset(
    {
        layout.DATA_DIR,
        layout.TRIALS_DIR,
        layout.MODEL_DIR,
        layout.WORK_DIR,
        layout.TENSORBOARD_DIR,
        layout.PLOTS_DIR,
        layout.RANKS_DIR,
        layout.WORK_TMP_DIR,
    }
)


# --------------------------------------------------------------------------- the helpers


def test_trial_paths_are_designs(tmp_path: Path) -> None:
    trial = layout.trial_dir(tmp_path, "s1", "t1")
    assert trial == tmp_path / "sweeps/s1/trials/t1"
    assert layout.trials_dir(tmp_path, "s1") == tmp_path / "sweeps/s1/trials"
    expected = {
        layout.result_file: "result.json",
        layout.attempts_file: "attempts.jsonl",
        layout.lineage_file: "lineage.json",
        layout.checkpoints_dir: "checkpoints",
        layout.model_dir: "model",
        layout.work_dir: "work",
        layout.spool_file: "metrics.spool.jsonl",
        layout.pruned_file: "pruned.json",
        layout.mlflow_run_file: "mlflow_run_id",
    }
    for helper, name in expected.items():
        assert helper(trial) == tmp_path / "sweeps/s1/trials/t1" / name, helper.__name__
    assert layout.latest_file(layout.checkpoints_dir(trial)) == trial / "checkpoints/LATEST"
    assert layout.work_tmp_dir(trial) == trial / "work/.tmp"
    assert layout.rank_records_dir(trial) == trial / "ranks"
    assert layout.rank_record_file(trial, 2, 3) == trial / "ranks/2/rank-3.json"


def test_sweep_paths_are_designs(tmp_path: Path) -> None:
    sweep = layout.sweep_dir(tmp_path, "s1")
    assert sweep == tmp_path / "sweeps/s1"
    assert layout.sweeps_dir(tmp_path) == tmp_path / "sweeps"
    assert layout.plan_file(tmp_path, "s1") == tmp_path / "sweeps/s1/plan.json"
    assert layout.study_file(tmp_path, "s1") == tmp_path / "sweeps/s1/study.journal"
    assert layout.summary_file(sweep) == tmp_path / "sweeps/s1/summary.json"
    assert layout.sweep_run_ended_file(sweep) == sweep / "mlflow-ended.json"
    assert layout.leaderboard_files(sweep) == (sweep / "leaderboard.md", sweep / "leaderboard.csv")
    assert layout.plot_files(sweep) == (sweep / "plots/curves.png", sweep / "plots/params.png")


def test_data_and_tensorboard_paths_are_designs(tmp_path: Path) -> None:
    version = layout.dataset_dir(tmp_path, "digits", "abc123")
    assert version == tmp_path / "data/digits/abc123"
    assert layout.datasets_dir(tmp_path, "digits") == tmp_path / "data/digits"
    assert layout.manifest_file(version) == version / "MANIFEST.json"
    assert layout.complete_file(version) == version / ".complete"
    assert layout.dataset_temporary(tmp_path, "digits", "abc123").parent == tmp_path / "data/digits"
    assert layout.dataset_lock(tmp_path, "digits", "abc123").parent == tmp_path / "data/digits"
    assert layout.tensorboard_root(tmp_path) == tmp_path / "tensorboard"
    assert layout.tensorboard_root(tmp_path, "tb/runs") == tmp_path / "tb/runs"


def test_the_manifests_defaults_are_unchanged() -> None:
    assert layout.DEFAULT_MOUNT_PATH == "/mnt/shared"
    assert layout.DEFAULT_OUTPUTS_DIR == "/tmp/outputs"
    assert layout.outputs_dir({}) == Path("/tmp/outputs")
    assert layout.outputs_dir({layout.OUTPUTS_ENV: "/o"}) == Path("/o")


# --------------------------------------------------------------------------- shared_root


def test_shared_root_reads_the_variable(tmp_path: Path) -> None:
    assert layout.shared_root({layout.SHARED_ENV: str(tmp_path)}) == tmp_path
    assert layout.shared_root({layout.SHARED_ENV: f" {tmp_path} "}) == tmp_path
    assert layout.shared_root({layout.SHARED_ENV: str(tmp_path)}, default="/x") == tmp_path


@pytest.mark.parametrize("env", [{}, {"SWEEPYARD_SHARED": ""}, {"SWEEPYARD_SHARED": "  "}])
def test_shared_root_unset_is_an_error_naming_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(layout.SharedRootError, match="SWEEPYARD_SHARED is not set"):
        layout.shared_root(env)
    with pytest.raises(ValueError, match="SWEEPYARD_SHARED"):  # (a ValueError: bad input)
        layout.shared_root(env)


def test_shared_root_default_is_the_callers(tmp_path: Path) -> None:
    assert layout.shared_root({}, default=tmp_path) == tmp_path
    assert layout.shared_root({layout.SHARED_ENV: ""}, default=str(tmp_path)) == tmp_path


def test_shared_root_is_found_one_way() -> None:
    """No other module reads ``SWEEPYARD_SHARED`` itself or defines a ``shared_root``."""
    found = []
    for path, tree in _sources():
        if path == LAYOUT_MODULE:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "shared_root":
                found.append(f"{_rel(path)}:{node.lineno}: defines shared_root")
            if isinstance(node, ast.Call) and _reads_env(node):
                found.append(f"{_rel(path)}:{node.lineno}: reads the shared root's variable")
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- the one spelling


def test_no_layout_name_is_spelled_outside_the_layout_module() -> None:
    found = [
        f"{_rel(path)}:{line}: {why}"
        for path, tree in _sources()
        if path != LAYOUT_MODULE
        for line, why in _violations(tree)
    ]
    assert not found, "shared-disk names outside components/contract.py:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for() -> None:
    source = (
        '"""A docstring may say sweeps/<id>/plan.json."""\n'
        'a = root / "sweeps" / s / "plan.json"\n'
        'b = Path(env.get("SWEEPYARD_OUTPUTS", "/tmp/outputs"))\n'
        'c = folder / "work"\n'
        'd = glob(f"*/attempts.jsonl")\n'
        'e = {"data": 1, "model": None, "summary.json": 0}\n'  # dict keys, not paths
        'f = "unreadable result.json: bad"\n'  # prose
        'g = Path("data")\n'
        '__all__ = ["LATEST"]\n'  # Python names
    )
    assert [line for line, _ in _violations(ast.parse(source))] == [2, 2, 3, 4, 5, 8]


def _violations(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of each layout name spelled in ``tree`` (docstrings, dict keys and
    ``__all__`` aside)."""
    skip = _docstrings(tree) | _all_lists(tree) | _dict_keys(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node not in skip:
            if (why := _names_the_disk(node.value)) is not None:
                found.append((node.lineno, why))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Path":
            found += [(node.lineno, f"Path({a.value!r})") for a in node.args if _is_word(a)]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found += [(node.lineno, f"joins {s.value!r}") for s in (node.left, node.right) if _is_word(s)]  # fmt: skip
    return sorted(found)


def _names_the_disk(value: str) -> str | None:
    if any(value == root or value.startswith(root + "/") for root in ROOTS):
        return f"spells {value!r}"
    if value in FILE_NAMES or ("/" in value and set(value.split("/")) & FILE_NAMES):
        return f"spells {value!r}"
    return None


def _is_word(node: ast.AST) -> TypeGuard[ast.Constant]:
    """A common word of the layout (``"data"``, ``"work"``) as a path part."""
    return isinstance(node, ast.Constant) and node.value in JOINED_WORDS


def _reads_env(call: ast.Call) -> bool:
    """``os.environ.get("SWEEPYARD_SHARED"...)`` / ``env.get(SHARED_ENV ...)``-style reads."""
    if getattr(call.func, "attr", "") not in ("get", "getenv") or not call.args:
        return False
    first = call.args[0]
    if isinstance(first, ast.Constant):
        return bool(first.value == layout.SHARED_ENV)
    return isinstance(first, ast.Name) and first.id == "SHARED_ENV"


def _docstrings(tree: ast.AST) -> set[ast.AST]:
    out: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(body[0].value)
    return out


def _all_lists(tree: ast.AST) -> set[ast.AST]:
    """The strings of ``__all__``: Python names, not paths."""
    out: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            out.update(ast.walk(node.value))
    return out


def _dict_keys(tree: ast.AST) -> set[ast.AST]:
    """The keys of dict displays: names in a document (``{"mlflow_run_id": ...}``), not paths."""
    return {k for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if k is not None}


def _sources() -> Iterator[tuple[Path, ast.AST]]:
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            if any(_rel(path).startswith(s) for s in SKIPPED):
                continue
            yield path, ast.parse(path.read_text(encoding="utf-8"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))
