"""make submit/schedule BACKEND=kfp, against a loopback server speaking KFP's v2beta1 REST API."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.backends import kfp as backend
from pipelines.build.kfp import compile_package
from pipelines.cli import COMPILED
from pipelines.cli import main as cli_main
from pipelines.config import SweepConfig, load_config
from tests.support.kfp_api import TOKEN, FakeKfp


@pytest.fixture
def kfp_api() -> Iterator[FakeKfp]:
    server = FakeKfp()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def cfg() -> SweepConfig:
    return load_config("sweep")


@pytest.fixture(autouse=True)
def no_kfp_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.Client reads ~/.config/kfp/context.json: keep the user's out of the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    import kfp.client.client as kfp_client

    monkeypatch.setattr(
        kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "home/context.json")
    )


GOLDEN = COMPILED / "sweep.kfp.yaml"


def env(server: FakeKfp, **extra: str) -> dict[str, str]:
    return {"KFP_HOST": server.url, "KFP_TOKEN": TOKEN, **extra}


def test_submit_uploads_the_compiled_package_once_and_starts_runs(
    kfp_api: FakeKfp, cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env=env(kfp_api)) == 0
    golden = GOLDEN.read_bytes()
    version = f"sweep-{hashlib.sha256(golden).hexdigest()[:12]}"
    assert [u["kind"] for u in kfp_api.uploads] == ["upload", "upload_version"]
    assert all(u["data"] == golden for u in kfp_api.uploads), (
        "the uploaded package is the compiled one"
    )
    assert kfp_api.uploads[0]["query"]["name"] == "sweep"
    assert kfp_api.uploads[1]["query"]["name"] == version
    (pipeline,) = kfp_api.pipelines.values()
    ours = kfp_api.versions[pipeline["pipeline_id"]][-1]
    (run,) = kfp_api.runs
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": ours["pipeline_version_id"],
    }
    assert run["runtime_config"].get("parameters", {}) == {}
    assert run["experiment_id"] == "exp-0" and kfp_api.experiments[0]["display_name"] == "sweep"
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in kfp_api.requests)
    out = capsys.readouterr()
    assert f"KFP run {run['run_id']}" in out.out
    assert f"{kfp_api.url}/#/runs/details/{run['run_id']}" in out.out
    assert TOKEN not in out.out + out.err

    # Resubmitting (a resume) reuses the pipeline, the version and the experiment.
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id="digits-1", env=env(kfp_api)) == 0
    assert len(kfp_api.uploads) == 2 and len(kfp_api.experiments) == 1
    assert kfp_api.runs[1]["runtime_config"]["parameters"] == {"sweep_id": "digits-1"}
    assert kfp_api.runs[1]["pipeline_version_reference"] == run["pipeline_version_reference"]


def test_schedule_creates_one_recurring_run_with_the_translated_cron(
    kfp_api: FakeKfp, cfg: SweepConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.schedule(GOLDEN, cfg=cfg, env=env(kfp_api, KFP_EXPERIMENT="nightly")) == 0
    (job,) = kfp_api.recurring.values()
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}  # from "0 3 * * *"
    assert str(job["max_concurrency"]) == "1"
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["display_name"] == "sweep-schedule"
    assert kfp_api.experiments[0]["display_name"] == "nightly"
    assert kfp_api.uploads[-1]["data"] == GOLDEN.read_bytes()
    assert "0 0 3 * * *" in capsys.readouterr().out

    # Unchanged: nothing new. A new package (another image): the old schedule is replaced.
    assert backend.schedule(GOLDEN, cfg=cfg, env=env(kfp_api, KFP_EXPERIMENT="nightly")) == 0
    assert list(kfp_api.recurring) == [job["recurring_run_id"]]
    assert "up to date" in capsys.readouterr().out
    other = load_config("sweep", image="registry.example.com/sweepyard:2")
    package = tmp_path / "sweep.kfp.yaml"
    compile_package(other, package)
    assert backend.schedule(package, cfg=other, env=env(kfp_api, KFP_EXPERIMENT="nightly")) == 0
    assert kfp_api.deleted == [job["recurring_run_id"]]
    (new,) = kfp_api.recurring.values()
    assert (
        new["pipeline_version_reference"]["pipeline_version_id"]
        != job["pipeline_version_reference"]["pipeline_version_id"]
    )
    assert kfp_api.uploads[-1]["data"] == package.read_bytes()


def test_schedule_and_submit_through_the_cli(
    kfp_api: FakeKfp, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KFP_HOST", kfp_api.url)
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.delenv("ARGO_SERVER", raising=False)
    assert cli_main(["schedule", "--pipeline", "sweep", "--backend", "kfp"]) == 0
    (job,) = kfp_api.recurring.values()
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert kfp_api.uploads[-1]["data"] == GOLDEN.read_bytes(), "the CLI uploads the golden package"
    assert cli_main(["submit", "--pipeline", "sweep", "--backend", "kfp", "--sweep-id", "s-1"]) == 0
    (run,) = kfp_api.runs
    assert run["runtime_config"]["parameters"] == {"sweep_id": "s-1"}
    assert len(kfp_api.uploads) == 2, "same package: the version is reused"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _assert_clean_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    assert TOKEN not in out.err + out.out
    for needle in needles:
        assert needle in out.err, out.err
    return out.err


def test_unreachable_host_names_the_host_and_what_to_do(
    cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"http://127.0.0.1:{_free_port()}"
    assert (
        backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env={"KFP_HOST": host, "KFP_TOKEN": TOKEN})
        == 1
    )
    _assert_clean_error(
        capsys, f"cannot reach Kubeflow Pipelines at {host}", "KFP_HOST", "port-forward"
    )
    assert backend.schedule(GOLDEN, cfg=cfg, env={"KFP_HOST": host}) == 1
    _assert_clean_error(capsys, f"cannot reach Kubeflow Pipelines at {host}")


def test_401_asks_for_a_token(
    kfp_api: FakeKfp, cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env={"KFP_HOST": kfp_api.url}) == 1
    _assert_clean_error(capsys, f"KFP at {kfp_api.url} answered 401 Unauthorized", "set KFP_TOKEN")
    bad = {"KFP_HOST": kfp_api.url, "KFP_TOKEN": "expired"}
    assert backend.schedule(GOLDEN, cfg=cfg, env=bad) == 1
    _assert_clean_error(capsys, "401 Unauthorized", "the token was rejected", "Unauthenticated")
    assert not kfp_api.uploads and not kfp_api.recurring


def test_403_names_the_namespace(
    kfp_api: FakeKfp, cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    kfp_api.forbid_uploads = True
    assert (
        backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env=env(kfp_api, KFP_NAMESPACE="team-a"))
        == 1
    )
    _assert_clean_error(
        capsys,
        f"KFP at {kfp_api.url} answered 403 Forbidden when trying to upload the pipeline",
        "namespace team-a",
        "not authorized in namespace",
    )
    assert not kfp_api.runs


def test_configuration_errors_are_caught_before_anything_is_sent(
    kfp_api: FakeKfp, cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env={}) == 1
    _assert_clean_error(capsys, "KFP_HOST is not set")
    assert (
        backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env={"KFP_HOST": "kubeflow.example.com"})
        == 1
    )
    _assert_clean_error(capsys, "must start with http:// or https://")
    kfp_api.multi_user = True
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env=env(kfp_api)) == 1
    _assert_clean_error(capsys, "multi-user: set KFP_NAMESPACE")
    berlin = cfg.model_copy(
        update={"schedule": cfg.schedule.model_copy(update={"timezone": "Europe/Berlin"})}
    )  # type: ignore[union-attr]
    assert backend.schedule(GOLDEN, cfg=berlin, env=env(kfp_api)) == 1
    _assert_clean_error(capsys, "'Europe/Berlin'", "CRON_SCHEDULE_TIMEZONE")
    assert not kfp_api.uploads and not kfp_api.runs and not kfp_api.recurring
    assert (
        backend.submit(
            Path("/nonexistent/sweep.kfp.yaml"),
            cfg=cfg,
            sweep_id=None,
            env=env(kfp_api, KFP_NAMESPACE="a"),
        )
        == 1
    )
    _assert_clean_error(capsys, "cannot read the KFP package /nonexistent/sweep.kfp.yaml")
