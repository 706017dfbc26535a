"""``make import KATIB=experiment.yaml`` and its file: what is read (one Experiment per file, nothing
else), what is written (kept unless forced, with its origin and notes), and the CLI's output and
refusals.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import load_config
from pipelines.importers.katib import KatibImportError, import_file
from tests.support.katib import COLLECTOR, KATIB, REPO, experiment


def _write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


def test_a_file_that_is_not_an_experiment_is_refused_and_nothing_written(tmp_path: Path) -> None:
    src = _write(tmp_path / "deploy.yaml", {"apiVersion": "apps/v1", "kind": "Deployment"})
    out = tmp_path / "out"
    with pytest.raises(KatibImportError) as err:
        import_file(src, out)
    assert err.value.problems[0][0] == "kind" and "Deployment" in err.value.problems[0][1]
    assert not out.exists()
    old = experiment()
    old["apiVersion"] = "kubeflow.org/v1alpha3"
    with pytest.raises(KatibImportError) as err:
        import_file(_write(tmp_path / "old.yaml", old), out)
    assert err.value.problems == [
        ("apiVersion", "expected kubeflow.org/v1beta1, got 'kubeflow.org/v1alpha3'")
    ]
    (tmp_path / "broken.yaml").write_text("spec: [\n")
    with pytest.raises(KatibImportError) as err:
        import_file(tmp_path / "broken.yaml", out)
    assert "not valid YAML" in err.value.problems[0][1]
    assert not out.exists()


def test_multi_document_files_need_exactly_one_experiment(tmp_path: Path) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    src = _write(tmp_path / "both.yaml", config_map, experiment("multi"))
    assert import_file(src, tmp_path / "out") == tmp_path / "out" / "multi.yaml"
    two = _write(tmp_path / "two.yaml", experiment("a"), experiment("b"))
    with pytest.raises(KatibImportError) as err:
        import_file(two, tmp_path / "out2")
    assert "2 Experiments in one file (a, b)" in err.value.problems[0][1]
    assert not (tmp_path / "out2").exists()


def test_an_existing_config_is_kept_unless_forced(tmp_path: Path) -> None:
    src = _write(tmp_path / "e.yaml", experiment("mine"))
    out = tmp_path / "pipelines"
    out.mkdir()
    (out / "mine.yaml").write_text("# someone's own pipeline\n")
    with pytest.raises(KatibImportError) as err:
        import_file(src, out)
    assert err.value.problems[0][0] == "metadata.name" and "--force" in err.value.problems[0][1]
    assert (out / "mine.yaml").read_text() == "# someone's own pipeline\n"
    assert sorted(p.name for p in out.iterdir()) == ["mine.yaml"]
    assert import_file(src, out, force=True) == out / "mine.yaml"
    assert load_config(out / "mine.yaml").trainer.image == "example.com/team/train:1"
    assert sorted(p.name for p in out.iterdir()) == ["mine.yaml"]


def test_the_written_file_carries_its_origin_and_notes(tmp_path: Path) -> None:
    doc = experiment("Noted_Name")
    doc["spec"]["objective"]["goal"] = 0.99
    notes: list[str] = []
    out = import_file(_write(tmp_path / "e.yaml", doc), tmp_path, notes=notes)
    assert out.name == "noted-name.yaml"
    text = out.read_text()
    assert text.startswith("# Imported from Katib Experiment team/Noted_Name (e.yaml)")
    assert "spec.objective.goal: 0.99 dropped" in text and any("goal" in n for n in notes)
    assert any(
        n.startswith("metadata.name: 'Noted_Name' is the pipeline 'noted-name'") for n in notes
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", "import", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_prints_the_written_path_last(tmp_path: Path) -> None:
    src = KATIB / "hp-tuning" / "tpe.yaml"
    proc = _cli("--katib", str(src), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == str(tmp_path / "tpe.yaml")
    assert any(line.startswith("note: spec.objective.goal") for line in lines[:-1])
    assert load_config(tmp_path / "tpe.yaml").search.method == "tpe"
    again = _cli("--katib", str(src), "--out", str(tmp_path))
    assert again.returncode == 2 and "exists already" in again.stderr
    forced = _cli("--katib", str(src), "--out", str(tmp_path), "--force")
    assert forced.returncode == 0 and forced.stdout.strip().splitlines()[-1].endswith("tpe.yaml")


def test_the_cli_refuses_with_one_line_per_field_and_exit_2(tmp_path: Path) -> None:
    doc = experiment()
    doc["spec"]["metricsCollectorSpec"] = {"collector": {"kind": "Custom"}}
    doc["spec"]["trialTemplate"]["trialSpec"]["kind"] = "TFJob"
    src = _write(tmp_path / "bad.yaml", doc)
    out = tmp_path / "out"
    proc = _cli("--katib", str(src), "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"error: cannot import {src}:"
    assert len(lines) == 3 and proc.stdout == "" and not out.exists()
    by_field = dict(line.split(": ", 1) for line in lines[1:])
    assert by_field.keys() == {
        f"  {COLLECTOR}.collector.kind",
        "  spec.trialTemplate.trialSpec.kind",
    }
    assert by_field[f"  {COLLECTOR}.collector.kind"].startswith("a Custom collector")
    assert (
        "multi-node trials are not supported yet" in by_field["  spec.trialTemplate.trialSpec.kind"]
    )


def test_the_pbt_example_is_refused_through_the_cli(tmp_path: Path) -> None:
    proc = _cli("--katib", str(KATIB / "hp-tuning" / "simple-pbt.yaml"), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "  spec.algorithm.algorithmName: pbt: population based training" in proc.stderr
    assert list(tmp_path.iterdir()) == []
