"""The command line and environment of each component: the one contract both compilers share.

:mod:`pipelines.build.argo` (Argo) and :mod:`pipelines.build.kfp` (KFP) call these with their own
placeholders for the run-time values (``{{inputs.parameters.trial-id}}`` or a KFP input), so both
paths run exactly the same commands in the same image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from components.contract import DEFAULT_OUTPUTS_DIR
from components.outputs import ARGO_ARTIFACTS
from pipelines.config import SweepConfig
from pipelines.config.pricing import prices

IMAGE_UID = 10001  # the image's non-root user and group (containers/Dockerfile); pods run as it
OUTPUTS_DIR = DEFAULT_OUTPUTS_DIR  # where components write output parameters ($SWEEPYARD_OUTPUTS)
STEPS = ("plan", "suggest", "fetch", "train", "compare", "notify")
# compare's output artifacts (name: file in OUTPUTS_DIR), written by components/outputs.py
COMPARE_ARTIFACTS = ARGO_ARTIFACTS


def command(step: str) -> list[str]:
    """``python -m components.<step>``."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
    return ["python", "-m", f"components.{step}"]


def image(cfg: SweepConfig, step: str) -> str:
    """The image a step runs in: the trainer's for ``train``, sweepyard's for the others."""
    return cfg.trainer_image if step == "train" else cfg.image


def trainer_args(cfg: SweepConfig) -> list[str]:
    """How the supervisor finds the trainer: ``--trainer-function`` or ``--trainer-command`` (with
    its collectors and the model it leaves in its working folder)."""
    t = cfg.trainer
    if t.command is not None:
        return [
            "--trainer-command", json.dumps(t.command),
            *(["--collect", json.dumps(collect_arg(cfg), sort_keys=True)] if t.collect else []),
            *(["--model", t.model] if t.model else []),
        ]  # fmt: skip
    assert cfg.trainer.function is not None
    return ["--trainer-function", cfg.trainer.function]


def output_path(name: str) -> str:
    """Where a component leaves the output parameter ``name``."""
    return f"{OUTPUTS_DIR}/{name}"


def plan_args(cfg: SweepConfig, *, sweep_id: str) -> list[str]:
    space = json.dumps(
        cfg.search.space.model_dump(mode="json", exclude_defaults=True), sort_keys=True
    )
    return ["--sweep-id", sweep_id, "--space", space, "--max-trials", str(cfg.search.max_trials)]


def search_spec(cfg: SweepConfig) -> dict[str, Any]:
    """What the suggest step needs of an adaptive search (components.search.spec.SearchSpec)."""
    s = cfg.search
    spec = {
        "algorithm": s.method,
        "space": s.space.model_dump(mode="json", exclude_defaults=True),
        "max_trials": s.max_trials,
        "batch": cfg.batch,
        "metric": s.objective.metric,
        "direction": s.objective.direction,
        "seed": s.seed or 0,
        "time_budget": s.time_budget,
        "storage": s.storage,
        "early_stopping": s.early_stopping.model_dump(mode="json") if s.early_stopping else None,
        "trials_per_pod": s.trials_per_pod if s.trials_per_pod > 1 else None,
    }
    return {k: v for k, v in spec.items() if v is not None}


def suggest_args(cfg: SweepConfig, *, sweep_id: str) -> list[str]:
    search = json.dumps(search_spec(cfg), sort_keys=True)
    return ["--sweep-id", sweep_id, "--search", search, "--budget", budget_arg(cfg)]


def pruner_spec(cfg: SweepConfig) -> dict[str, Any] | None:
    """The train step's ``--pruner`` (components.runtime.pruning.from_spec); None: no pruning."""
    es = cfg.search.early_stopping
    if es is None:
        return None
    spec = es.model_dump(mode="json")
    spec["metric"] = cfg.search.stopping_metric
    spec["direction"] = cfg.search.objective.direction
    if cfg.search.storage:
        spec["storage"] = cfg.search.storage  # "secret": the URL is read from the env at run time
    return spec


def collect_arg(cfg: SweepConfig) -> dict[str, Any]:
    """``trainer.collect`` as the supervisor takes it: with the declared metrics (``only``), so a
    ``name=value`` line's other pairs (``lr=0.1`` echoed by the program) are not taken as metrics."""
    collect = dict(cfg.trainer.collect or {})
    if cfg.trainer.metrics:
        collect["only"] = list(cfg.trainer.metrics)
    return collect


def budget_arg(cfg: SweepConfig) -> str:
    """``--budget`` of train, suggest and compare (components.budget.Budget): the sweep's limits,
    what one trial requests, and the prices it is costed with."""
    s, res = cfg.search, cfg.resources
    doc = {
        "max_failed_trials": s.max_failed_trials,
        "max_cost": s.max_cost,
        "max_gpu_hours": s.max_gpu_hours,
        "resources": {
            "gpu_type": res.gpu.type,
            "gpu_count": res.gpu.count,
            "cpus": cpu_count(cfg),
            "spot": res.spot,
            **({"nodes": res.nodes} if res.nodes > 1 else {}),
        },
    }
    if cfg.cost is not None:
        table = prices(cfg)
        doc["prices"] = {
            "gpu_hour": {k: dict(v) for k, v in table.gpu_hour.items() if k == res.gpu.type},
            "cpu_hour": dict(table.cpu_hour),
            "as_of": table.as_of,
            "source": table.source,
        }
    return json.dumps({k: v for k, v in doc.items() if v is not None}, sort_keys=True)


def cpu_count(cfg: SweepConfig) -> float:
    """A trial's CPU request as a number of vCPUs (``500m`` is 0.5)."""
    cpu = cfg.resources.cpu
    return int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def cpu_threads(cfg: SweepConfig) -> int:
    """Whole CPUs of a trial's request (at least 1): its torch/OpenMP threads."""
    return max(1, int(cpu_count(cfg)))


def fetch_args(cfg: SweepConfig) -> list[str]:
    assert cfg.data is not None, "no data: the builders leave fetch out"
    args = [cfg.data.source, "--dataset", cfg.data.dataset]
    if cfg.data.query:
        args += ["--query", cfg.data.query]
    return args


def train_args(
    cfg: SweepConfig, *, sweep_id: str, trial_id: str, params: str, data_path: str, data_hash: str
) -> list[str]:
    return [
        "--sweep-id", sweep_id,
        "--trial-id", trial_id,
        "--params", params,
        "--data", data_path,
        "--data-hash", data_hash,
        "--objective", cfg.search.objective.metric,
        "--direction", cfg.search.objective.direction,
        "--checkpoint-interval", str(cfg.checkpoint.interval_seconds),
        "--keep-checkpoints", str(cfg.checkpoint.keep),
        "--max-app-errors", str(cfg.retries.app_errors),
        "--threads", str(cpu_threads(cfg)),
        "--budget", budget_arg(cfg),
        *trainer_args(cfg),
        *(["--pruner", json.dumps(p, sort_keys=True)] if (p := pruner_spec(cfg)) else []),
        *distributed_args(cfg),
    ]  # fmt: skip


def pod_trials_args(cfg: SweepConfig, *, sweep_id: str, item: str, data_path: str,
                    data_hash: str) -> list[str]:  # fmt: skip
    """The train step's args when a pod runs several trials in turn (``search.trials_per_pod``
    > 1): ``--pod-trials <the suggest step's item>`` for ``--trial-id`` and ``--params``
    (components/runtime/pod_trials.py)."""
    args = train_args(
        cfg, sweep_id=sweep_id, trial_id="", params="", data_path=data_path, data_hash=data_hash
    )
    at = args.index("--trial-id")
    return [*args[:at], "--pod-trials", item, *args[at + 4 :]]


MASTER_PORT = 29500  # torchrun's default; the supervisor reads SWEEPYARD_MASTER_PORT (default this)


def distributed_args(cfg: SweepConfig) -> list[str]:
    """How many processes a trial runs under torchrun: ``--nproc-per-node N`` (one per GPU) when a
    trial runs more than one process, ``--nnodes M`` past one node. Nothing per pod: the supervisor
    reads its node rank from ``JOB_COMPLETION_INDEX`` and the master's address from
    :func:`rendezvous_env`."""
    res = cfg.resources
    if not res.distributed:
        return []
    nodes = ["--nnodes", str(res.nodes)] if res.nodes > 1 else []
    return [*nodes, "--nproc-per-node", str(res.procs_per_node)]


def rendezvous_env(master_addr: str) -> dict[str, str]:
    """Where a multi-node trial's processes meet: node rank 0's address and torchrun's port."""
    return {"SWEEPYARD_MASTER_ADDR": master_addr, "SWEEPYARD_MASTER_PORT": str(MASTER_PORT)}


def compare_args(cfg: SweepConfig, *, sweep_id: str) -> list[str]:
    return [
        "--sweep-id", sweep_id,
        "--objective", cfg.search.objective.metric,
        "--direction", cfg.search.objective.direction,
        "--model-name", cfg.tracking.model_name or "",  # "": registration is off
        "--budget", budget_arg(cfg),
    ]  # fmt: skip


def notify_args(cfg: SweepConfig, *, sweep_id: str, status: str, workflow_name: str) -> list[str]:
    return ["--sweep-id", sweep_id, "--status", status, "--workflow-name", workflow_name]


def plain_env(cfg: SweepConfig, step: str = "") -> dict[str, str]:
    """Environment every step gets (no secrets: those come from :func:`secret_env`)."""
    env = {
        "SWEEPYARD_SHARED": cfg.cluster.mount_path,
        "SWEEPYARD_OUTPUTS": OUTPUTS_DIR,
        "SWEEPYARD_PIPELINE": cfg.name,
        "SWEEPYARD_IMAGE": image(cfg, step),
        "SWEEPYARD_TENSORBOARD_ROOT": cfg.tracking.tensorboard_root,
        "SWEEPYARD_GRACE_SECONDS": str(cfg.cluster.grace_seconds),
        "MLFLOW_TRACKING_URI": cfg.tracking.mlflow_uri,
        "MLFLOW_EXPERIMENT_NAME": cfg.experiment,
        "PYTHONUNBUFFERED": "1",
    }
    links = {  # for the Slack digest's links; each left out when the config has none
        "MLFLOW_UI_URL": cfg.tracking.ui_url,
        "TENSORBOARD_URL": cfg.tracking.tensorboard_url,
        "ARGO_UI_URL": cfg.cluster.argo_ui_url,
    }
    env.update({k: v for k, v in links.items() if v})
    if cfg.cluster.argo_ui_url:
        env["ARGO_NAMESPACE"] = cfg.cluster.namespace
    return env


@dataclass(frozen=True)
class SecretRef:
    """An env var filled from a key of the Kubernetes Secret (never a value in the manifest)."""

    env: str
    key: str
    optional: bool = True


def secret_env(cfg: SweepConfig, step: str) -> list[SecretRef]:
    """The secrets a step reads; all optional except the database password of a SQL source."""
    refs = [
        SecretRef("SENTRY_DSN", "sentry-dsn"),
        SecretRef("MLFLOW_TRACKING_TOKEN", "mlflow-tracking-token"),
    ]
    if step == "fetch" and cfg.data is not None and cfg.data.is_sql:
        refs.append(SecretRef("SWEEPYARD_DB_PASSWORD", "db-password", optional=False))
    if step == "notify":
        refs.append(SecretRef("SLACK_WEBHOOK_URL", "slack-webhook-url"))
    uses_study = step == "suggest" or (step == "train" and cfg.search.early_stopping is not None)
    if cfg.search.storage == "secret" and uses_study:
        refs.append(SecretRef("SWEEPYARD_STUDY_STORAGE", "study-storage-url", optional=False))
    return refs
