"""CI, checked offline: the GitHub workflow against GitHub's published schema (check-jsonschema's
vendored copy), the Jenkinsfile structurally, and both doing the same things."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yaml"
JENKINSFILE = REPO / "Jenkinsfile"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def check_workflow_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True)  # YAML 1.1 reads the key `on` as a boolean
    return doc


def steps_running(job: dict[str, Any], needle: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if needle in s.get("run", "")]


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    [step] = [s for s in job["steps"] if s.get("uses", "").startswith(action + "@")]
    return step


def test_github_workflow_matches_the_published_schema() -> None:
    done = check_workflow_schema(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "ci.yaml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    done = check_workflow_schema(broken)
    assert done.returncode != 0
    assert "runs_on" in done.stdout + done.stderr or "runs-on" in done.stdout + done.stderr


def test_every_push_runs_the_tests_then_builds(workflow: dict[Any, Any]) -> None:
    assert "push" in workflow["on"] and workflow["on"]["push"] is None, "every branch, every push"
    test = workflow["jobs"]["test"]
    runs = [s["run"].strip() for s in test["steps"] if "run" in s]
    assert runs == [".ci/reference-data.sh", "make test", "make test-slow"]
    assert test["services"]["postgres"]["ports"] == ["5432:5432"]
    image = workflow["jobs"]["image"]
    assert image["needs"] == "test"
    assert image["if"] == "github.event_name == 'push'"


NEEDS_REFERENCE_DATA = ("make test", "make compile", "make check-compiled", "make validate")


@pytest.mark.parametrize("job", ["test", "image"])
def test_every_job_that_compiles_or_tests_fetches_the_reference_data_first(
    workflow: dict[Any, Any], job: str
) -> None:
    """`make compile` validates against Argo's schema in ../shared/argo: a job without it fails."""
    runs = [s.get("run", "") for s in workflow["jobs"][job]["steps"]]
    users = [i for i, r in enumerate(runs) if any(n in r for n in NEEDS_REFERENCE_DATA)]
    assert users, f"{job} runs none of {NEEDS_REFERENCE_DATA}"
    fetch = [i for i, r in enumerate(runs) if r.strip() == ".ci/reference-data.sh"]
    assert fetch and fetch[0] < users[0], f"{job}: fetch the reference data before {runs[users[0]]}"


def test_reference_data_is_pinned_to_exact_refs() -> None:
    script = (REPO / ".ci" / "reference-data.sh").read_text()
    argo = re.search(r'ARGO_REF="\$\{ARGO_REF:-([^}]+)\}"', script)
    kfp = re.search(r'KFP_REF="\$\{KFP_REF:-([^}]+)\}"', script)
    assert argo and re.fullmatch(r"v\d+\.\d+\.\d+", argo[1]), "Argo at a release tag"
    assert kfp and re.fullmatch(r"[0-9a-f]{40}", kfp[1]), "Kubeflow's test data at a commit"
    schema = sorted(p.name for p in (REPO.parent / "shared" / "argo").glob("schema-*.json"))
    assert schema == [f"schema-{argo[1]}.json"], "the validator reads the schema the script fetches"
    for text in (WORKFLOW.read_text(), JENKINSFILE.read_text()):
        assert "master" not in text and "--branch" not in text


def test_image_is_built_by_make_image_and_pushed_with_the_commit_sha(
    workflow: dict[Any, Any],
) -> None:
    image = workflow["jobs"]["image"]
    [build] = steps_running(image, "make image")
    assert 'make image IMAGE_TARGET=cuda IMAGE_TAG="$IMAGE:$GITHUB_SHA"' in build["run"]
    # CI builds on the Dockerfile's own exact-tag base, not a locally made one
    assert "BASE_IMAGE=\"$(sed -n 's/^ARG BASE_IMAGE=//p' containers/Dockerfile)\"" in build["run"]
    [push] = steps_running(image, "buildah push")
    assert '"$IMAGE:$GITHUB_SHA" "docker://$IMAGE:$GITHUB_SHA"' in push["run"]
    assert "--password-stdin" in push["run"] and push["env"]["TOKEN"].startswith("${{ steps.auth")
    steps = image["steps"]
    assert steps.index(build) < steps.index(push), "build, then push"
    assert image["env"]["IMAGE"].split("/")[0].endswith("-docker.pkg.dev"), "Artifact Registry"
    # keyless: Workload Identity Federation through GitHub's OIDC token, no key in secrets
    auth = step_using(image, "google-github-actions/auth")["with"]
    assert "workload_identity_provider" in auth and "credentials_json" not in auth
    assert image["permissions"]["id-token"] == "write"
    assert "secrets." not in WORKFLOW.read_text()


def test_digest_is_recorded_and_manifests_compiled_against_the_image(
    workflow: dict[Any, Any],
) -> None:
    image = workflow["jobs"]["image"]
    [push] = steps_running(image, "buildah push")
    [record] = steps_running(image, "dist/image.txt")
    assert record["env"]["DIGEST"] == f"${{{{ steps.{push['id']}.outputs.digest }}}}"
    assert "org.opencontainers.image.base.digest" in record["run"], "the base's resolved digest"
    [compile_step] = steps_running(image, "make compile")
    assert 'IMAGE="$IMAGE:$GITHUB_SHA@$DIGEST" make compile' in compile_step["run"]
    assert compile_step["env"]["DIGEST"] == record["env"]["DIGEST"]
    upload = step_using(image, "actions/upload-artifact")["with"]
    assert upload["path"] == "dist/" and upload["if-no-files-found"] == "error"


def test_actions_are_pinned_to_a_version(workflow: dict[Any, Any]) -> None:
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", step["uses"]), (
                    f"{name}: {step['uses']}"
                )


def _strip_groovy(text: str) -> str:
    """The Jenkinsfile without comments and string contents (to check its brackets)."""
    text = re.sub(r"'''.*?'''", "''", text, flags=re.DOTALL)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"'(?:\\.|[^'\\\n])*'", "''", text)
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)


def test_jenkinsfile_is_a_declarative_pipeline_with_balanced_blocks() -> None:
    code = _strip_groovy(JENKINSFILE.read_text())
    assert code.lstrip().startswith("pipeline {")
    for open_, close in ("{}", "()", "[]"):
        depth = 0
        for ch in code:
            depth += {open_: 1, close: -1}.get(ch, 0)
            assert depth >= 0, f"unbalanced {close}"
        assert depth == 0, f"unbalanced {open_}{close}"
    assert JENKINSFILE.read_text().count("'''") % 2 == 0


def test_jenkinsfile_does_what_the_github_workflow_does() -> None:
    text = JENKINSFILE.read_text()
    stages = re.findall(r"stage\('([^']+)'\)", text)
    assert stages == [
        "reference data",
        "make test",
        "make test-slow",
        "build and push image",
        "record digests",
        "compile manifests",
    ]
    assert "sh 'make test'" in text and "sh 'make test-slow'" in text
    for fragment in (
        "sh '.ci/reference-data.sh'",
        'make image IMAGE_TARGET=cuda IMAGE_TAG="$IMAGE:$GIT_COMMIT"',
        "BASE_IMAGE=\"$(sed -n 's/^ARG BASE_IMAGE=//p' containers/Dockerfile)\"",
        '"$IMAGE:$GIT_COMMIT" "docker://$IMAGE:$GIT_COMMIT"',
        'IMAGE="$IMAGE:$GIT_COMMIT@$(cat digest.txt)" make compile',
        "dist/image.txt",
        "org.opencontainers.image.base.digest",
        "archiveArtifacts artifacts: 'dist/**'",
        "-docker.pkg.dev",
    ):
        assert fragment in text, fragment
    # the reference data comes before anything that tests or compiles
    assert text.index(".ci/reference-data.sh") < text.index("make test")
    # the same build target as the GitHub workflow, and it is a stage of the Dockerfile
    dockerfile = (REPO / "containers" / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+ AS cuda$", dockerfile, flags=re.MULTILINE)
