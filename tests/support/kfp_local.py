"""Running a compiled KFP pipeline with the KFP local runner; the KFP local and search tests share it.
No tests here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.build.kfp import compile_package
from pipelines.config import SweepConfig
from tests.conftest import REPO


def run_kfp_local(cfg: SweepConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kfp import local
    from kfp.components import load_component_from_file
    from kfp.local.subprocess_task_handler import SubprocessTaskHandler

    package = tmp_path / "sweep.kfp.yaml"
    compile_package(cfg, package)
    monkeypatch.setattr(SubprocessTaskHandler, "validate_not_container_component", lambda *_: None)
    # kfp.local's configuration is process-global: undo it after the test.
    monkeypatch.setattr(local.config.LocalExecutionConfig, "instance", None)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp-root"),
        raise_on_error=True,
    )
    monkeypatch.chdir(REPO)
    pipeline = load_component_from_file(str(package))  # the compiled package, as uploaded
    pipeline()  # every parameter at its default: sweep_id "" -> the run's id
