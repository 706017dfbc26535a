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
    assert runs[-2:] == ["make test", "make test-slow"]
    # the validator tests read Argo's schema and examples from ../shared/argo: fetched first
    assert '"$GITHUB_WORKSPACE/../shared/argo"' in runs[0]
    assert "schema-$ARGO_REF.json" in runs[0]
    assert test["steps"][-3]["env"]["ARGO_REF"] == "v4.1.2"
    assert test["services"]["postgres"]["ports"] == ["5432:5432"]
    image = workflow["jobs"]["image"]
    assert image["needs"] == "test"
    assert image["if"] == "github.event_name == 'push'"


def test_image_is_pushed_with_the_commit_sha_and_a_build_cache(workflow: dict[Any, Any]) -> None:
    image = workflow["jobs"]["image"]
    build = step_using(image, "docker/build-push-action")["with"]
    assert build["file"] == "containers/Dockerfile"
    assert build["target"] == "cuda"
    assert build["push"] is True
    assert build["tags"] == "${{ env.IMAGE }}:${{ github.sha }}"
    assert image["env"]["IMAGE"].split("/")[0].endswith("-docker.pkg.dev"), "Artifact Registry"
    assert build["cache-from"] == "type=gha"
    assert build["cache-to"].startswith("type=gha")
    # keyless: Workload Identity Federation through GitHub's OIDC token, no key in secrets
    auth = step_using(image, "google-github-actions/auth")["with"]
    assert "workload_identity_provider" in auth and "credentials_json" not in auth
    assert image["permissions"]["id-token"] == "write"
    assert "secrets." not in WORKFLOW.read_text()


def test_digest_is_recorded_and_manifests_compiled_against_the_image(
    workflow: dict[Any, Any],
) -> None:
    image = workflow["jobs"]["image"]
    build_id = step_using(image, "docker/build-push-action")["id"]
    [record] = steps_running(image, "dist/image.txt")
    assert record["env"]["DIGEST"] == f"${{{{ steps.{build_id}.outputs.digest }}}}"
    assert "imagetools inspect" in record["run"], "the CUDA base's resolved digest"
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
        'dest="$WORKSPACE/../shared/argo"',
        "ARGO_REF = 'v4.1.2'",
        "--file containers/Dockerfile",
        "--target cuda",
        '--tag "$IMAGE:$GIT_COMMIT"',
        "--cache-from",
        "--push",
        'IMAGE="$IMAGE:$GIT_COMMIT@$digest" make compile',
        "dist/image.txt",
        "imagetools inspect",
        "archiveArtifacts artifacts: 'dist/**'",
        "-docker.pkg.dev",
    ):
        assert fragment in text, fragment
    # the same build target as the GitHub workflow, and it is a stage of the Dockerfile
    dockerfile = (REPO / "containers" / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+ AS cuda$", dockerfile, flags=re.MULTILINE)
