"""deploy/: every kustomization renders with `kubectl kustomize` and passes kubernetes-validate
--strict (Kueue's objects: their upstream CRDs, strictly), and the rendered objects agree with what
the compiled workflows expect (names, claim, ServiceAccount, Secret keys, MLflow address,
TensorBoard root, Kueue's queue and the spot GPU nodes)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from pipelines.build import steps
from pipelines.config import load_config
from tests.conftest import SHARED_ARGO

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
KUBERNETES_VALIDATE = BIN / "kubernetes-validate"
OVERLAYS = ["overlays/gke", "overlays/gke-premium-rwx", "argo", "overlays/kueue"]


def kustomize(path: Path) -> str:
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return done.stdout


def strict_validate(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBERNETES_VALIDATE), "--strict", "--quiet", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(d for d in yaml.safe_load_all(kustomize(DEPLOY / overlay)) if d)


def secrets_rendered(tmp_path: Path) -> str:
    """deploy/secrets rendered from its example env files (the values a user has not filled in)."""
    work = tmp_path / "secrets"
    shutil.copytree(DEPLOY / "secrets", work)
    for example in work.glob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return kustomize(work)


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def cfg() -> Any:
    return load_config("sweep")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay: str) -> None:
    from pipelines.validate.crds import is_custom_resource, object_problems

    docs = [d for d in yaml.safe_load_all(kustomize(DEPLOY / overlay)) if d]
    assert docs, "nothing rendered"
    custom = [d for d in docs if is_custom_resource(d)]  # Kueue's: against its CRDs
    for doc in custom:
        assert object_problems(doc) == [], f"{doc['kind']} {doc['metadata']['name']}"
    core = [d for d in docs if not is_custom_resource(d)]
    if core:
        done = strict_validate(yaml.safe_dump_all(core))
        assert done.returncode == 0, done.stdout + done.stderr


def test_kueue_queues_the_spot_gpu_trials_the_pipelines_name() -> None:
    """deploy/overlays/kueue: a LocalQueue a pipeline names, a ClusterQueue with quotas for what a
    trial requests, on a flavor of the nodes the trials select."""
    from pipelines.build.pods import ACCELERATOR_LABEL, GPU_RESOURCE, SPOT_LABEL

    cfg = load_config("charlm-ddp")
    docs = rendered("overlays/kueue")
    local = one(docs, "LocalQueue", cfg.cluster.queue)  # type: ignore[arg-type]
    assert local["metadata"]["name"] == cfg.cluster.queue
    assert local["metadata"]["namespace"] == cfg.cluster.namespace
    cq = one(docs, "ClusterQueue", local["spec"]["clusterQueue"])
    assert cq["spec"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": cfg.cluster.namespace
    }
    [group] = cq["spec"]["resourceGroups"]
    assert group["coveredResources"] == ["cpu", "memory", GPU_RESOURCE]
    [flavor_quota] = group["flavors"]
    quotas = {r["name"]: r["nominalQuota"] for r in flavor_quota["resources"]}
    res = cfg.resources
    assert quotas[GPU_RESOURCE] >= res.gpu.count * res.nodes, "one whole trial fits the quota"
    assert quotas["cpu"] >= int(res.cpu) * res.nodes
    flavor = one(docs, "ResourceFlavor", flavor_quota["name"])
    assert flavor["metadata"].get("namespace") is None, "cluster-scoped"
    assert flavor["spec"]["nodeLabels"] == {SPOT_LABEL: "true", ACCELERATOR_LABEL: res.gpu.type}
    assert {"key": SPOT_LABEL, "value": "true", "effect": "NoSchedule"} in flavor["spec"][
        "nodeTaints"
    ]
    # the CRD check can fail: a misspelt field and a wrong enum value are caught, naming the path
    from pipelines.validate.crds import object_problems

    bad = copy.deepcopy(cq)
    bad["spec"]["queueingStrategy"] = "FIFO"
    bad["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuotta"] = 1
    problems = [str(p) for p in object_problems(bad)]
    assert any(p.startswith("spec.queueingStrategy:") for p in problems), problems
    assert any(
        p.startswith("spec.resourceGroups[0].flavors[0].resources[0].nominalQuotta: unknown field")
        for p in problems
    ), problems


def test_secret_templates_render_validate_and_carry_no_values(tmp_path: Path, cfg: Any) -> None:
    text = secrets_rendered(tmp_path)
    done = strict_validate(text)
    assert done.returncode == 0, done.stdout + done.stderr
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text)}
    assert set(docs) == {cfg.cluster.secret, "sweepyard-mlflow"}
    for doc in docs.values():
        assert doc["kind"] == "Secret"
        assert doc["metadata"]["namespace"] == cfg.cluster.namespace
        assert all(v == "" for v in doc.get("data", {}).values()), "a template carries a value"
    # every key a step may read is in the template, and nothing else (a SQL source's password and
    # an adaptive search's database URL are read only by configs that use them)
    keys = {ref.key for step in steps.STEPS for ref in steps.secret_env(cfg, step)} | {
        "db-password",
        "study-storage-url",
    }
    assert set(docs[cfg.cluster.secret]["data"]) == keys
    assert set(docs["sweepyard-mlflow"]["data"]) == {"backend-store-uri"}
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert "*.env" in ignored, "filled-in env files must stay out of git"


def test_strict_validation_rejects_an_unknown_field() -> None:
    """The check above can fail: a misspelt field in a rendered Deployment is rejected."""
    docs = copy.deepcopy(list(rendered("overlays/gke")))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    done = strict_validate(yaml.safe_dump_all(docs))
    assert done.returncode != 0
    assert "imagePullPolice" in done.stdout + done.stderr


def test_every_object_lives_in_the_workflows_namespace(cfg: Any) -> None:
    for doc in rendered("overlays/gke"):
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == cfg.cluster.namespace
        else:
            assert doc["metadata"]["namespace"] == cfg.cluster.namespace, doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("overlay", "storage_class"),
    [("overlays/gke", "standard-rwx"), ("overlays/gke-premium-rwx", "premium-rwx")],
)
def test_shared_claim_is_filestore_read_write_many(
    cfg: Any, overlay: str, storage_class: str
) -> None:
    pvc = one(rendered(overlay), "PersistentVolumeClaim", cfg.cluster.claim)
    assert pvc["metadata"]["name"] == cfg.cluster.claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"] == storage_class
    job = one(rendered(overlay), "Job", "sweepyard-shared-init")
    [volume] = job["spec"]["template"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == cfg.cluster.claim


def test_mlflow_server_matches_the_tracking_uri_and_keeps_its_secrets_in_a_secret(
    cfg: Any,
) -> None:
    docs = rendered("overlays/gke")
    uri = urlsplit(cfg.tracking.mlflow_uri)
    service_name, namespace = uri.hostname.split(".")[:2]  # type: ignore[union-attr]
    assert namespace == cfg.cluster.namespace
    service = one(docs, "Service", service_name)
    assert [p["port"] for p in service["spec"]["ports"]] == [uri.port]
    deployment = one(docs, "Deployment", "mlflow")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("us-docker.pkg.dev/"), "the overlay names the image"
    assert "--serve-artifacts" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    backend = env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert backend == {"name": "sweepyard-mlflow", "key": "backend-store-uri"}
    config = one(docs, "ConfigMap", "sweepyard-mlflow-config")
    assert config["data"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("gs://")
    for name in ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"):
        ref = env[name]["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == config["metadata"]["name"]
    pool = int(config["data"]["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"])
    workers = int(config["data"]["MLFLOW_WORKERS"])
    assert workers * pool >= cfg.parallelism + 2, "the pool is too small for the sweep"
    # the server answers the in-cluster name the steps use (MLflow checks Host headers)
    allowed = config["data"]["MLFLOW_ALLOWED_HOSTS"].split(",")
    assert f"{uri.hostname}:*" in allowed
    assert "--allowed-hosts=$(MLFLOW_ALLOWED_HOSTS)" in container["args"]
    for arg in container["args"]:  # every $(VAR) the args use is defined in env
        if "$(" in arg:
            assert arg.split("$(")[1].split(")")[0] in env, arg
    assert "password" not in json.dumps(deployment).lower()


def test_tensorboard_reads_the_shared_tensorboard_root(cfg: Any) -> None:
    docs = rendered("overlays/gke")
    deployment = one(docs, "Deployment", "tensorboard")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    [mount] = container["volumeMounts"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == cfg.cluster.claim
    assert mount["mountPath"] == cfg.cluster.mount_path
    logdir = f"{cfg.cluster.mount_path}/{cfg.tracking.tensorboard_root}"
    assert f"--logdir={logdir}" in container["args"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    one(docs, "Service", "tensorboard")


def test_workflow_service_account_has_only_what_the_executor_needs(cfg: Any) -> None:
    docs = rendered("overlays/gke")
    one(docs, "ServiceAccount", cfg.cluster.service_account)
    bindings = [
        b
        for b in docs
        if b["kind"] == "RoleBinding"
        and any(s["name"] == cfg.cluster.service_account for s in b["subjects"])
    ]
    assert [b["roleRef"]["kind"] for b in bindings] == ["Role"], "namespaced, one Role"
    role = one(docs, "Role", bindings[0]["roleRef"]["name"])
    assert role["rules"] == [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtaskresults"],
            "verbs": ["create", "patch"],
        },
        {  # a multi-node trial's resource template creates and watches its JobSet
            "apiGroups": ["jobset.x-k8s.io"],
            "resources": ["jobsets"],
            "verbs": ["create", "get", "list", "watch", "patch", "delete"],
        },
    ]
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]


def test_submitter_may_submit_and_read_but_not_delete() -> None:
    role = one(rendered("overlays/gke"), "Role", "sweepyard-submitter")
    verbs = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("workflows", "create"), ("workflows", "list"), ("workflows", "get")} <= verbs
    assert {
        ("cronworkflows", "create"),
        ("cronworkflows", "get"),
        ("cronworkflows", "update"),
    } <= verbs
    assert not {v for _, v in verbs} & {"delete", "deletecollection", "*"}


def _strict(schema: Any) -> Any:
    """Argo's schema with additionalProperties: false (what `argo lint` enforces), IntOrString fixed."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def test_controller_default_retry_strategy_is_a_valid_workflow_spec() -> None:
    [cm] = rendered("argo")
    assert (cm["metadata"]["name"], cm["metadata"]["namespace"]) == (
        "workflow-controller-configmap",
        "argo",
    )
    defaults = yaml.safe_load(cm["data"]["workflowDefaults"])
    retry = defaults["spec"]["templateDefaults"]["retryStrategy"]
    assert retry["retryPolicy"] == "Always"
    assert "asInt(lastRetry.exitCode) != 3" in retry["expression"], "never retry 'give up'"
    assert 'lastRetry.status == "Error"' in retry["expression"], "retry lost pods"
    schema = json.loads((SHARED_ARGO / "schema-v4.1.2.json").read_text())
    definitions = _strict(schema["definitions"])
    validator = jsonschema.Draft202012Validator(
        {
            "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.WorkflowSpec",
            "definitions": definitions,
        }
    )
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(defaults["spec"])
    ]
    assert errors == []
    bad = copy.deepcopy(defaults["spec"])
    bad["templateDefaults"]["retryStrategy"]["retryPolcy"] = "Always"
    assert list(validator.iter_errors(bad)), "the schema check must catch a misspelt field"


def test_gke_guide_names_what_exists(cfg: Any) -> None:
    """The README's "Running on GKE" refers to real paths, targets and names."""
    readme = (REPO / "README.md").read_text()
    assert "\n## Running on GKE\n" in readme
    guide = readme.split("\n## Running on GKE\n", 1)[1].split("\n## ", 1)[0]
    deployments = {
        d["metadata"]["name"] for d in rendered("overlays/gke") if d["kind"] == "Deployment"
    }
    for path in set(re.findall(r"\b(deploy/[\w./-]*[\w])", guide)):
        if path.removeprefix("deploy/") in deployments:
            continue  # `kubectl rollout status deploy/mlflow`: a Deployment that exists
        assert (REPO / path).exists() or (REPO / path).with_suffix(".env.example").exists(), path
    assert "rollout status deploy/mlflow deploy/tensorboard" in guide
    for applied in re.findall(r"kubectl apply -k (\S+)", guide):
        assert (REPO / applied / "kustomization.yaml").is_file(), applied
    makefile = (REPO / "Makefile").read_text()
    for target in set(re.findall(r"\bmake ([a-z-]+)", guide)):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), f"make {target}"
    assert "--node-taints=cloud.google.com/gke-spot=true:NoSchedule" in guide
    assert "--spot" in guide and f"type={cfg.resources.gpu.type}" in guide
    assert "standard-rwx" in guide and "premium-rwx" in guide
    for name in (cfg.cluster.claim, cfg.cluster.service_account, cfg.cluster.secret):
        assert name in guide
    for variable in ("ARGO_SERVER", "ARGO_TOKEN", "ARGO_NAMESPACE", "ARGO_CA_BUNDLE"):
        assert variable in guide


@pytest.mark.parametrize("overlay", ["overlays/gke", "overlays/gke-premium-rwx"])
def test_argo_artifact_repository_is_gcs_through_workload_identity(overlay: str) -> None:
    """compare's output artifacts go to a GCS bucket the workflow's ServiceAccount reaches by WI."""
    docs = rendered(overlay)
    cm = one(docs, "ConfigMap", "artifact-repositories")
    assert cm["metadata"]["namespace"] == "sweepyard"
    key = cm["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"]
    repo = yaml.safe_load(cm["data"][key])
    assert repo["gcs"]["bucket"].endswith("-sweepyard-artifacts")
    assert "serviceAccountKeySecret" not in repo["gcs"], "Workload Identity: no key in a Secret"
    schema = json.loads((SHARED_ARGO / "schema-v4.1.2.json").read_text())
    validator = jsonschema.Draft202012Validator(
        {
            "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.ArtifactRepository",
            "definitions": _strict(schema["definitions"]),
        }
    )
    assert [e.message for e in validator.iter_errors(repo)] == []
    assert list(validator.iter_errors({**repo, "gcs": {**repo["gcs"], "bukket": "x"}}))
    account = one(docs, "ServiceAccount", "sweepyard-workflow")
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith(
        "sweepyard-workflow@"
    )
    # ...and the compiled workflow declares the artifacts the repository receives.
    compiled = yaml.safe_load((REPO / "pipelines" / "compiled" / "sweep.yaml").read_text())
    (compare,) = [t for t in compiled["spec"]["templates"] if t["name"] == "compare"]
    declared = {a["name"]: a["path"] for a in compare["outputs"]["artifacts"]}
    assert declared == {n: steps.output_path(f) for n, f in steps.COMPARE_ARTIFACTS.items()}


def test_argo_executor_containers_are_locked_down_too() -> None:
    """Our pods set runAsNonRoot; Argo's init/wait containers must satisfy it (a valid Container)."""
    [cm] = rendered("argo")
    executor = yaml.safe_load(cm["data"]["executor"])
    ctx = executor["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0
    assert ctx["readOnlyRootFilesystem"] is True and ctx["capabilities"] == {"drop": ["ALL"]}
    schema = json.loads((SHARED_ARGO / "schema-v4.1.2.json").read_text())
    validator = jsonschema.Draft202012Validator(
        {
            "$ref": "#/definitions/io.k8s.api.core.v1.SecurityContext",
            "definitions": _strict(schema["definitions"]),
        }
    )
    assert set(executor) <= set(schema["definitions"]["io.k8s.api.core.v1.Container"]["properties"])
    assert [e.message for e in validator.iter_errors(ctx)] == []
    assert list(validator.iter_errors({**ctx, "runAsNonRot": True})), "a misspelt field is caught"
