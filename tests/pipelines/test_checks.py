"""A team's own pipeline, not committed, never breaks the project's tests; ``make check`` names it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_ARGO

SCHEMA = next(SHARED_ARGO.glob("schema-*.json"))  # ../shared/argo, beside the repository


def _copy_of_the_repo(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        if Path(name).parent in (Path("pipelines"), Path("pipelines/compiled")):
            stem = Path(name).name.split(".")[0].removesuffix("-cron")
            if name.endswith((".yaml", ".json")) and stem != "sweep":
                continue  # one pipeline of the project's is enough: each compile costs seconds
        if (REPO / name).is_file() and not name.startswith(("tests/", "benchmarks/", "deploy/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)


def _pipelines(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args], cwd=repo, capture_output=True, text=True,
        timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo), "HOME": str(repo),
                          "SWEEPYARD_ARGO_SCHEMA": str(SCHEMA),
                          "SWEEPYARD_CRDS": str(SHARED_ARGO.parent / "crds")},
    )  # fmt: skip


@pytest.mark.slow
def test_an_uncommitted_pipeline_is_checked_by_make_check_not_by_the_golden_check(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    _copy_of_the_repo(repo)
    mine = (repo / "pipelines" / "sweep.yaml").read_text().replace("name: sweep", "name: mine")
    (repo / "pipelines" / "mine.yaml").write_text(mine.split("schedule:")[0])
    assert _pipelines(repo, "compile", "--all").returncode == 0  # leaves mine's manifests too
    golden = _pipelines(repo, "check-compiled")
    assert golden.returncode == 0, golden.stderr
    assert "mine" not in golden.stdout
    ok = _pipelines(repo, "check")
    assert ok.returncode == 0 and "ok     pipelines/mine.yaml" in ok.stdout
    (repo / "pipelines" / "mine.yaml").write_text(mine.replace("parallelism: 4", "parallelism: -1"))
    broken = _pipelines(repo, "check")
    assert broken.returncode == 1
    assert "FAILED pipelines/mine.yaml" in broken.stderr and "parallelism" in broken.stderr
    assert "ok     pipelines/sweep.yaml" in broken.stdout  # the project's own results still shown
    assert _pipelines(repo, "check-compiled").returncode == 0
    golden_file = repo / "pipelines" / "compiled" / "sweep.yaml"
    golden_file.write_text(golden_file.read_text().replace("parallelism: 4", "parallelism: 5"))
    stale = _pipelines(repo, "check-compiled")
    assert stale.returncode == 1
    assert "pipelines/compiled/sweep.yaml: differs from what pipelines/sweep.yaml" in stale.stderr
