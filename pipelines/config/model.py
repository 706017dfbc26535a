"""The sweep config's schema: :class:`SweepConfig` and its parts (pydantic, frozen, unknown keys
are errors), and :class:`ConfigError`, which every config problem raises."""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from components.contract import DEFAULT_MOUNT_PATH, relative_path_problem
from components.durations import whole_seconds
from components.search.spec import ADAPTIVE, Algorithm, EarlyStopping, TimeBudget
from components.space import SearchSpace
from pipelines.trainer import TrainerConfig, default_trainer

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
CPU = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"
MEMORY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
SECRET_FREE_URI = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")


class ConfigError(ValueError):
    """A sweep config that cannot be used; ``problems`` are ``(key path, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path or '(top level)'}: {msg}" for path, msg in problems)
        super().__init__(f"invalid sweep config {source}:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the training data comes from (``gs://``, ``file://``, ``pkg://``, a path, or SQL)."""

    source: Annotated[str, Field(min_length=1)]
    dataset: Annotated[str, Field(pattern=DNS_LABEL)]
    query: str | None = None

    @field_validator("source")
    @classmethod
    def _no_inline_password(cls, v: str) -> str:
        if SECRET_FREE_URI.match(v):
            raise ValueError(
                "the URI carries a password: put it in the Kubernetes Secret "
                "(key db-password) and leave it out of the config"
            )
        return v

    @property
    def is_sql(self) -> bool:
        return self.source.split("://", 1)[0].split("+", 1)[0] in {
            "postgresql",
            "mysql",
            "sqlite",
            "mssql",
        }

    @model_validator(mode="after")
    def _query_for_sql(self) -> DataConfig:
        if self.is_sql and not self.query:
            raise ValueError("a SQL source needs 'query'")
        if not self.is_sql and self.query:
            raise ValueError("'query' is only for SQL sources")
        return self


class Objective(_Strict):
    metric: Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]+$")] = "val_loss"
    direction: Literal["minimize", "maximize"] = "minimize"


class SearchConfig(_Strict):
    """The search space, what is optimised, and how: planned up front (grid, random) or adaptive
    (an Optuna sampler in rounds of ``batch``, optionally with early stopping)."""

    objective: Objective = Objective()
    algorithm: Algorithm | None = None  # None: grid, or random when the space has `random`
    max_trials: Annotated[int, Field(ge=1, le=10_000)] = 256
    max_failed_trials: Annotated[int, Field(ge=0)] = 0  # Katib's maxFailedTrialCount
    max_cost: Annotated[float, Field(gt=0)] | None = None  # no new trial past it (USD)
    max_gpu_hours: Annotated[float, Field(gt=0)] | None = None
    batch: Annotated[int, Field(ge=1)] | None = None  # adaptive: per round; default parallelism
    # adaptive: trials one train pod runs in turn, in one process (default batch: parallelism * k)
    trials_per_pod: Annotated[int, Field(ge=1)] = 1
    seed: int | None = None  # adaptive: the sampler's seed (default 0)
    time_budget: TimeBudget | None = None
    storage: Literal["secret"] | None = None  # None: the journal file on the shared disk
    early_stopping: EarlyStopping | None = None
    space: SearchSpace

    @property
    def method(self) -> str:
        """The algorithm in effect (the default resolved)."""
        return self.algorithm or ("random" if self.space.random is not None else "grid")

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE

    @property
    def stopping_metric(self) -> str | None:
        """The metric early stopping watches (the objective's unless it names one)."""
        if self.early_stopping is None:
            return None
        return self.early_stopping.metric or self.objective.metric

    @model_validator(mode="after")
    def _fits(self) -> SearchConfig:
        if not self.adaptive and self.space.size() > self.max_trials:
            raise ValueError(
                f"the search space has {self.space.size()} trials, more than max_trials={self.max_trials}"
            )
        return self


class GpuConfig(_Strict):
    type: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "nvidia-l4"
    count: Annotated[int, Field(ge=0, le=16)] = 1


class Resources(_Strict):
    """Per-trial resources; ``spot`` places trials on GKE spot nodes."""

    gpu: GpuConfig = GpuConfig()
    cpu: Annotated[str, Field(pattern=CPU)] = "4"
    memory: Annotated[str, Field(pattern=MEMORY)] = "16Gi"
    shm: Annotated[str, Field(pattern=MEMORY)] = "2Gi"
    spot: bool = True
    # nodes per trial: past 1, the trial runs as a JobSet of `nodes` pods (pipelines/build/jobset.py),
    # each running `gpu.count` processes under torchrun
    nodes: Annotated[int, Field(ge=1, le=64)] = 1

    @property
    def procs_per_node(self) -> int:
        """Trial processes per node under torchrun: one per GPU, one on a CPU-only node."""
        return max(self.gpu.count, 1)

    @property
    def distributed(self) -> bool:
        """Whether a trial runs more than one process (torchrun: ``--nproc-per-node``)."""
        return self.procs_per_node * self.nodes > 1

    @field_validator("cpu", "memory", "shm", mode="before")
    @classmethod
    def _quantity_as_string(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


def _whole_seconds(text: str) -> str:
    whole_seconds(text)  # raises, naming the text, unless a whole number of seconds
    return text


class Backoff(_Strict):
    """Go durations (components.durations) of whole seconds, zero or more: KFP counts whole seconds."""

    duration: Annotated[str, AfterValidator(_whole_seconds)] = "15s"
    factor: Annotated[int, Field(ge=1, le=10)] = 2
    max_duration: Annotated[str, AfterValidator(_whole_seconds)] = "10m"


class Retries(_Strict):
    """Separate budgets: preemptions (and lost pods) versus the trial's own application errors."""

    preemptions: Annotated[int, Field(ge=0, le=100)] = 20
    app_errors: Annotated[int, Field(ge=0, le=20)] = 2
    backoff: Backoff = Backoff()

    @property
    def limit(self) -> int:
        """Argo's retry limit: every preemption plus every application error may be retried."""
        return self.preemptions + self.app_errors


class CheckpointConfig(_Strict):
    interval_seconds: Annotated[int, Field(ge=1, le=86_400)] = 60
    keep: Annotated[int, Field(ge=1, le=100)] = 3


class Tracking(_Strict):
    mlflow_uri: Annotated[str, Field(pattern=r"^(https?|file)://\S+$")] = (
        "http://mlflow.sweepyard.svc.cluster.local:5000"
    )
    experiment: Annotated[str, Field(min_length=1)] | None = None
    tensorboard_root: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = (
        "tensorboard"
    )
    # null turns registration off (compare is passed --model-name "")
    model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = "sweep-model"
    ui_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    tensorboard_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None

    @field_validator("tensorboard_root")
    @classmethod
    def _on_the_shared_disk(cls, v: str) -> str:
        why = relative_path_problem(v)
        if why:
            raise ValueError(why)
        return v

    @field_validator("mlflow_uri", "ui_url", "tensorboard_url")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        if SECRET_FREE_URI.match(v):
            raise ValueError(
                "the URI carries credentials: use the Kubernetes Secret (MLFLOW_TRACKING_TOKEN)"
            )
        return v


class Cluster(_Strict):
    """Names of the objects `deploy/` creates, and the workflow's limits on the cluster."""

    namespace: Annotated[str, Field(pattern=DNS_LABEL)] = "sweepyard"
    service_account: Annotated[str, Field(pattern=DNS_LABEL)] = "sweepyard-workflow"
    claim: Annotated[str, Field(pattern=DNS_LABEL)] = "sweepyard-shared"
    mount_path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9_./-]*$")] = DEFAULT_MOUNT_PATH
    secret: Annotated[str, Field(pattern=DNS_LABEL)] = "sweepyard-secrets"
    grace_seconds: Annotated[int, Field(ge=1, le=15)] = 15
    active_deadline_seconds: Annotated[int, Field(ge=60)] = 86_400
    ttl_seconds_after_completion: Annotated[int, Field(ge=0)] = 7 * 86_400
    argo_ui_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    # a Kueue LocalQueue in `namespace` (deploy/overlays/kueue): trials are admitted through it
    queue: Annotated[str, Field(pattern=DNS_LABEL)] | None = None


class Schedule(_Strict):
    cron: str
    timezone: str = "Etc/UTC"
    starting_deadline_seconds: Annotated[int, Field(ge=0)] = 600

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5:
            raise ValueError(
                f"cron must have 5 fields (minute hour day month weekday), got {len(fields)} in {v!r}"
            )
        if not croniter.is_valid(v):
            raise ValueError(f"{v!r} is not a valid cron expression")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name such as Europe/Berlin)"
            ) from None
        return v


class Rates(_Strict):
    spot: Annotated[float, Field(ge=0)]
    on_demand: Annotated[float, Field(ge=0)]


class CostConfig(_Strict):
    """Prices that replace the dated table's (``components/prices.py``) for this sweep: per GPU of
    ``resources.gpu.type`` and per vCPU, per hour (USD); :mod:`pipelines.config.pricing` applies
    them."""

    gpu_hour: Rates | None = None
    cpu_hour: Rates | Annotated[float, Field(ge=0)] | None = None


class SweepConfig(_Strict):
    """Everything a sweep needs: data, search space, resources, retries, tracking, schedule."""

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=40)]
    description: str = ""
    image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")]
    trainer: TrainerConfig = Field(default_factory=default_trainer)
    data: DataConfig | None = None  # None: the program makes or fetches its own data
    search: SearchConfig
    parallelism: Annotated[int, Field(ge=1, le=1000)] = 4
    resources: Resources = Resources()
    retries: Retries = Retries()
    checkpoint: CheckpointConfig = CheckpointConfig()
    tracking: Tracking = Tracking()
    cluster: Cluster = Cluster()
    schedule: Schedule | None = None
    cost: CostConfig | None = None

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def batch(self) -> int:
        """Trials per round of an adaptive search (``search.batch``, default ``parallelism`` times
        ``search.trials_per_pod``: every pod of a round runs that many trials in turn)."""
        default = self.parallelism * self.search.trials_per_pod
        return min(self.search.batch or default, self.search.max_trials)

    @property
    def trainer_image(self) -> str:
        """The image a trial runs in (``trainer.image``, default ``image``)."""
        return self.trainer.image or self.image
