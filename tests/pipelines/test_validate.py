"""The validator against Argo's upstream corpus, the compiled sweep, and its command line."""

from __future__ import annotations

import collections
import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import validate
from pipelines.validate import (
    ManifestInvalid,
    load_documents,
    validate_document,
    validate_file,
    validate_or_raise,
)
from pipelines.validate.schema import SCHEMA_ENV, SchemaNotFound
from tests.conftest import REPO, SHARED_ARGO
from tests.support.validate import COMPILED, compiled

KINDS = set(validate.KINDS)


@pytest.fixture
def sweep() -> dict[str, Any]:
    return compiled()


def _corpus(folder: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(file, index in file, document) for every Argo document of one corpus folder."""
    out = []
    for path in sorted((SHARED_ARGO / folder).glob("*.yaml")):
        for i, doc in enumerate(load_documents(path)):
            if isinstance(doc, dict) and doc.get("kind") in KINDS:
                out.append((path.name, i, doc))
    return out


def _problems_by_file(docs: list[tuple[str, int, dict[str, Any]]]) -> dict[str, list[str]]:
    found = {}
    for name, i, doc in docs:
        problems = validate_document(doc)
        if problems:
            found[f"{name}#{i}"] = [str(p) for p in problems]
    return found


def test_every_upstream_example_is_accepted() -> None:
    docs = _corpus("examples")
    kinds = collections.Counter(doc["kind"] for _, _, doc in docs)
    assert len(list((SHARED_ARGO / "examples").glob("*.yaml"))) == 190
    assert len(docs) == 191
    assert kinds == {
        "Workflow": 180,
        "WorkflowTemplate": 5,
        "CronWorkflow": 5,
        "ClusterWorkflowTemplate": 1,
    }
    assert _problems_by_file(docs) == {}


def test_every_kfp_compiled_workflow_is_accepted_with_status_dropped() -> None:
    docs = _corpus("kfp-compiled")
    assert len(docs) == 147
    assert all(doc["kind"] == "Workflow" for _, _, doc in docs)
    for _, _, doc in docs:
        doc.pop("status", None)
    assert _problems_by_file(docs) == {}


def test_status_is_ignored_because_the_controller_owns_it() -> None:
    # kfp's status carries nulls the schema does not allow; the API server drops status anyway.
    (doc,) = load_documents(SHARED_ARGO / "kfp-compiled" / "add_numbers.yaml")
    assert doc["status"] == {"finishedAt": None, "startedAt": None}
    assert validate_document(doc) == []


def test_every_lintfail_case_is_rejected_for_its_real_reason() -> None:
    found = _problems_by_file(_corpus("lintfail"))
    assert found == {
        "disallow-unknown.yaml#0": [
            "spec.templates[0].container.someExtraField: unknown field 'someExtraField' in Container"
        ],
        "invalid-spec.yaml#0": [
            "spec.entrypoint: no template named 'doesnotexist' (templates: whalesay)"
        ],
        "malformed-spec.yaml#0": ["spec.entrypoint: expected string, got array"],
    }


@pytest.mark.parametrize("name", ["sweep.yaml", "sweep-cron.yaml"])
def test_the_compiled_sweep_is_accepted(name: str) -> None:
    path = COMPILED / name
    assert path.is_file(), f"{path} missing: run `make compile`"
    assert validate_file(path) == []
    (doc,) = load_documents(path)
    assert doc["kind"] == ("CronWorkflow" if "cron" in name else "Workflow")
    validate_or_raise(doc, name)


def test_a_file_of_several_documents_names_the_document() -> None:
    path = SHARED_ARGO / "examples" / "cron-backfill.yaml"
    assert validate_file(path) == []  # 4 Argo documents, a PVC-free file of several kinds


def test_validate_or_raise_lists_every_problem(sweep: dict[str, Any]) -> None:
    doc = copy.deepcopy(sweep)
    doc["spec"]["entrypoint"] = "nope"
    doc["spec"]["onExit"] = "gone"
    with pytest.raises(ManifestInvalid) as e:
        validate_or_raise(doc, "sweep (compiled)")
    listed = ", ".join(t["name"] for t in doc["spec"]["templates"])
    assert [str(p) for p in e.value.problems] == [
        f"spec.entrypoint: no template named 'nope' (templates: {listed})",
        f"spec.onExit: no template named 'gone' (templates: {listed})",
    ]
    assert str(e.value).splitlines() == [
        "sweep (compiled): invalid Argo manifest, 2 problems:",
        *(f"  {p}" for p in e.value.problems),
    ]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", "validate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_exit_codes_and_one_line_per_problem(tmp_path: Path, sweep: dict[str, Any]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(sweep))
    broken = copy.deepcopy(sweep)
    broken["spec"]["templates"][0]["retryStrategy"]["retryPolicy"] = "Sometimes"
    broken["spec"]["templates"][0]["container"]["imagePullPolicy2"] = "Always"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(broken))
    not_yaml = tmp_path / "not.yaml"
    not_yaml.write_text("spec: [unclosed\n")

    ok = _cli(str(good))
    assert (ok.returncode, ok.stdout) == (0, "")

    invalid = _cli(str(good), str(bad))
    assert invalid.returncode == 1
    assert invalid.stdout.splitlines() == [
        f"{bad}: spec.templates[0].container.imagePullPolicy2: unknown field 'imagePullPolicy2' "
        "in Container (did you mean 'imagePullPolicy'?)"
    ]  # the lint runs once the structure is valid: fix the schema problem, then this shows up
    broken["spec"]["templates"][0]["container"].pop("imagePullPolicy2")
    bad.write_text(yaml.safe_dump(broken))
    invalid = _cli(str(bad))
    assert invalid.stdout.splitlines() == [
        f"{bad}: spec.templates[0].retryStrategy.retryPolicy: 'Sometimes' is not a valid retry "
        "policy: one of Always, OnFailure, OnError, OnTransientError"
    ]

    unreadable = _cli(str(good), str(not_yaml), str(tmp_path / "missing.yaml"))
    assert unreadable.returncode == 2
    assert unreadable.stdout == ""
    assert f"{not_yaml}: not valid YAML" in unreadable.stderr
    assert f"{tmp_path / 'missing.yaml'}: cannot read" in unreadable.stderr


def test_missing_schema_is_a_clear_error(
    tmp_path: Path, sweep: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCHEMA_ENV, str(tmp_path / "nowhere.json"))
    with pytest.raises(SchemaNotFound, match="nowhere.json: no such file"):
        validate_document(sweep)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(sweep))
    result = _cli(str(good), env={"PATH": "/usr/bin:/bin", SCHEMA_ENV: str(tmp_path / "x.json")})
    assert result.returncode == 2
    assert f"error: {SCHEMA_ENV}={tmp_path / 'x.json'}: no such file" in result.stderr


def test_schema_override_is_read(
    tmp_path: Path, sweep: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    copied = tmp_path / "schema.json"
    copied.write_text((SHARED_ARGO / "schema-v4.1.2.json").read_text())
    monkeypatch.setenv(SCHEMA_ENV, str(copied))
    assert validate_document(sweep) == []


def test_files_without_argo_documents_and_foreign_kinds(tmp_path: Path) -> None:
    pvc = tmp_path / "pvc.yaml"
    pvc.write_text("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: x}\n")
    assert validate_file(pvc) == [
        f"{pvc}: (root): no Workflow, WorkflowTemplate, ClusterWorkflowTemplate, CronWorkflow "
        "document in this file"
    ]
    sensor = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Sensor", "metadata": {"name": "s"}}
    assert [str(p) for p in validate_document(sensor)] == [
        "kind: unsupported kind 'Sensor': one of Workflow, WorkflowTemplate, "
        "ClusterWorkflowTemplate, CronWorkflow"
    ]
    assert [str(p) for p in validate_document(["a", "list"])] == [
        "(root): a manifest must be a mapping, got list"
    ]


def test_timestamps_stay_strings(tmp_path: Path, sweep: dict[str, Any]) -> None:
    doc = copy.deepcopy(sweep)
    text = yaml.safe_dump(doc).replace(
        "metadata:\n", "metadata:\n  creationTimestamp: 2026-01-01T00:00:00Z\n", 1
    )
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    assert load_documents(path)[0]["metadata"]["creationTimestamp"] == "2026-01-01T00:00:00Z"
    assert validate_file(path) == []


def test_make_validate_accepts_every_compiled_file_and_skips_the_kfp_package(
    tmp_path: Path,
) -> None:
    package = COMPILED / "sweep.kfp.yaml"
    if not package.is_file():  # `make compile` writes it; build it here when it has not yet
        from pipelines.build.kfp import compile_package
        from pipelines.config import load_config

        package = tmp_path / "sweep.kfp.yaml"
        compile_package(load_config("sweep"), package)
    assert validate_file(package) == []
    files = sorted({*COMPILED.glob("*.yaml"), package})
    result = _cli(*map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert f"{package}: skipped, a Kubeflow Pipelines package" in result.stderr
    packages = [f for f in files if f.name.endswith(".kfp.yaml")]  # one per pipeline
    assert f"{len(files) - len(packages)} files valid" in result.stderr


def test_schema_not_found_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sweep: dict[str, Any]
) -> None:
    from pipelines.validate import schema as validate_schema

    monkeypatch.delenv(SCHEMA_ENV, raising=False)
    monkeypatch.setattr(validate_schema, "REPO", tmp_path / "checkout")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SchemaNotFound) as e:
        validate_document(sweep)
    assert str(e.value) == (
        f"Argo's JSON schema schema-v4.1.2.json not found (looked in "
        f"{tmp_path / 'shared' / 'argo' / 'schema-v4.1.2.json'}, "
        f"{tmp_path.parent / 'shared' / 'argo' / 'schema-v4.1.2.json'}); "
        f"set {SCHEMA_ENV} to its path"
    )


def test_a_sweep_config_is_not_a_manifest() -> None:
    config = REPO / "pipelines" / "sweep.yaml"
    assert validate_file(config) == [
        f"{config}: kind: missing: not an Argo manifest? (one of Workflow, WorkflowTemplate, "
        "ClusterWorkflowTemplate, CronWorkflow)"
    ]


def test_a_set_of_files_skips_files_of_other_kinds(tmp_path: Path, sweep: dict[str, Any]) -> None:
    pvc = tmp_path / "pvc.yaml"
    pvc.write_text("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: x}\n")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(sweep))

    together = _cli(str(pvc), str(good))
    assert together.returncode == 0, together.stdout + together.stderr
    assert f"{pvc}: skipped, no Argo document" in together.stderr

    alone = _cli(str(pvc))
    assert alone.returncode == 1
    assert f"{pvc}: (root): no Workflow, WorkflowTemplate" in alone.stdout
