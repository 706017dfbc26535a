"""The contract both halves import: ids, the shared-disk layout, configured paths, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from components import contract
from pipelines import cli
from pipelines.build.argo import RETRY_EXPRESSION


@pytest.mark.parametrize("bad", ["../../../tmp/pwn", "a/b", "UPPER", "-x", "x" * 64, ""])
def test_bad_sweep_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid sweep id"):
        contract.check_sweep_id(bad)


def test_layout_is_the_documented_one(tmp_path: Path) -> None:
    assert contract.trial_dir(tmp_path, "s1", "t1") == tmp_path / "sweeps/s1/trials/t1"


@pytest.mark.parametrize(
    ("value", "ok"),
    [("tensorboard", True), ("tb/runs", True), ("../x", False), ("/etc/x", False), ("a//b", False)],
)
def test_configured_paths_stay_on_the_shared_disk(value: str, ok: bool) -> None:
    assert (contract.relative_path_problem(value) is None) is ok


def test_the_retry_expression_gives_up_on_the_contracts_exit_code() -> None:
    assert f"!= {contract.EXIT_GIVE_UP}" in RETRY_EXPRESSION


def test_submit_refuses_a_bad_sweep_id_before_anything_is_submitted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> int:
        raise AssertionError("submitted")

    monkeypatch.setattr(cli, "load_config", must_not_run)
    assert cli.main(["submit", "--sweep-id", "../../../tmp/pwn"]) == 2
    err = capsys.readouterr().err
    assert "--sweep-id (SWEEP_ID): invalid sweep id '../../../tmp/pwn'" in err
