"""containers/Dockerfile: hadolint clean, and the image is what the compiled manifests assume."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipelines.build import steps

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "containers" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [v for k, v in self.instructions if k == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined, comments dropped)."""
    logical: list[str] = []
    buf = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), flags=re.IGNORECASE)
            assert m, f"every stage is named: {line}"
            stages.append(Stage(m.group(1), m.group(2)))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                k, v = rest.split("=", 1)
                args[k.strip()] = v.strip()
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage], list[Stage]]:
    args, stages = parse(DOCKERFILE.read_text())
    return args, {s.name: s for s in stages}, stages


def test_hadolint_clean() -> None:
    for config in (REPO / ".hadolint.yaml", DOCKERFILE.parent / ".hadolint.yaml"):
        assert not config.exists(), "rules are waived inline, with a reason, not by a config"
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nRUN pip install requests\n")
    done = hadolint(bad)
    assert done.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013"):
        assert rule in done.stdout


def test_every_target_is_one_debian_base_by_exact_tag_with_the_locks_python(
    dockerfile: tuple,
) -> None:
    args, stages, ordered = dockerfile
    base = args["BASE_IMAGE"]
    assert re.fullmatch(r"debian:\d+\.\d+-slim", base), f"an exact point-release tag: {base}"
    assert "@sha256" not in DOCKERFILE.read_text(), "digests are recorded by CI, never written"
    assert stages["os"].base == "${BASE_IMAGE}"
    assert all(s.base in stages or s.name == "os" for s in ordered), "one OS below every stage"
    # Debian 12's Python is 3.11, the one the lock was resolved with (and no other Python)
    assert set(re.findall(r"python3\.\d+", DOCKERFILE.read_text())) == {"python3.11"}
    assert 'requires-python = ">=3.11' in (REPO / "pyproject.toml").read_text()


def test_targets_cpu_test_and_cuda_by_default(dockerfile: tuple) -> None:
    _, stages, ordered = dockerfile
    assert {"cpu", "cuda", "test"} <= set(stages)
    assert ordered[-1].name == "cuda", "a plain `docker build` gives the cluster's image"
    assert stages["test"].base == "cpu"


def test_the_lock_is_installed_offline_from_the_wheelhouse_and_torch_matches_it(
    dockerfile: tuple,
) -> None:
    _, stages, _ = dockerfile
    lock = (REPO / "requirements.lock").read_text()
    [torch_pin] = re.findall(r"^torch==(\S+)$", lock, flags=re.MULTILINE)
    version = torch_pin.split("+")[0]
    cpu_run = " ".join(stages["deps-cpu"].values("RUN"))
    assert "-r /tmp/requirements.lock" in cpu_run
    cuda_run = " ".join(stages["deps-cuda"].values("RUN"))
    assert "grep -v '^torch==' /tmp/requirements.lock" in cuda_run
    assert f'"torch=={version}+cu128"' in cuda_run, "the CUDA build of the locked version"
    assert "-r /tmp/requirements-no-torch.txt" in cuda_run
    for name in ("deps-cpu", "deps-cuda", "project"):
        [run] = stages[name].values("RUN")
        assert run.startswith("--mount=type=bind,from=wheelhouse,target=/wheelhouse ")
        assert "--no-index --find-links /wheelhouse" in run, "the build needs no network"
    for name in ("deps-cpu", "deps-cuda"):
        # the dependency layers hold the lock alone: a code change leaves them cached
        assert stages[name].values("COPY") == ["requirements.lock /tmp/requirements.lock"]


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_runtime_runs_the_steps_as_a_non_root_user_with_the_venvs_python(
    dockerfile: tuple, target: str
) -> None:
    _, stages, _ = dockerfile
    stage = stages[target]
    [user] = stage.values("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, non-root (runAsNonRoot can check it)"
    assert any("PATH=/opt/venv/bin:$PATH" in env for env in stage.values("ENV"))
    assert stage.values("ENTRYPOINT") == ['["/usr/bin/tini", "--"]']
    # dependencies below, the project's wheel last: a code-only change rebuilds the last layers
    assert stage.base == f"deps-{target}"
    assert stage.values("COPY") == ["--from=project /wheels /tmp/wheels"]
    assert stage.instructions[-1] == ("USER", user)
    # the image proves at build time that the steps' imports resolve: nothing to install at start
    [install] = stage.values("RUN")
    assert install.startswith("pip install --no-index --no-deps /tmp/wheels/*.whl")
    assert 'python -c "import torch' in install and "components" in install
    for step in steps.STEPS:
        cmd = steps.command(step)
        assert cmd[:2] == ["python", "-m"]
        module = cmd[2].replace(".", "/")
        assert (REPO / f"{module}.py").is_file() or (REPO / module / "__main__.py").is_file(), (
            f"{cmd[2]} is not in the project"
        )


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", "**/*.env", ".sweepyard"} <= ignored
    needed = {"requirements.lock", "pyproject.toml", "README.md", "pipelines", "components"}
    assert not needed & ignored
