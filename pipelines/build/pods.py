"""What a pod gets besides its command line, the same from both builders: where a trial is placed
(GKE's spot and accelerator node labels, the tolerations of their taints), the emptyDir volumes at
``/tmp`` and ``/dev/shm``, and how often a step is retried. :mod:`pipelines.build.argo` and
:mod:`pipelines.build.kfp` each spell these in their own API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines.config import SweepConfig

SPOT_LABEL = "cloud.google.com/gke-spot"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GPU_RESOURCE = "nvidia.com/gpu"

# an emptyDir at /tmp: with a read-only root, the only writable place besides the shared disk
TMP_VOLUME = "tmp"
TMP_PATH = "/tmp"
# a trial's shared memory: a memory-backed emptyDir of resources.shm
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"

STEP_RETRIES = 3  # plan, suggest, fetch, compare; train: retries.limit; notify: never retried


@dataclass(frozen=True)
class Toleration:
    """A toleration of a node taint (``value`` only with operator ``Equal``)."""

    key: str
    operator: Literal["Equal", "Exists"]
    value: str | None = None
    effect: Literal["NoSchedule"] = "NoSchedule"


def node_selector(cfg: SweepConfig) -> dict[str, str]:
    """A trial's node labels: spot nodes (``resources.spot``), the GPU type when it has GPUs."""
    res = cfg.resources
    selector: dict[str, str] = {}
    if res.spot:
        selector[SPOT_LABEL] = "true"
    if res.gpu.count > 0:
        selector[ACCELERATOR_LABEL] = res.gpu.type
    return selector


def tolerations(cfg: SweepConfig) -> list[Toleration]:
    """The taints a trial's nodes carry, in the order of :func:`node_selector`'s labels."""
    res = cfg.resources
    tolerated = []
    if res.spot:
        tolerated.append(Toleration(key=SPOT_LABEL, operator="Equal", value="true"))
    if res.gpu.count > 0:
        tolerated.append(Toleration(key=GPU_RESOURCE, operator="Exists"))
    return tolerated


def retry_limit(cfg: SweepConfig, step: str) -> int | None:
    """How often a step is retried: ``retries.limit`` for a trial (every preemption and every
    application error), :data:`STEP_RETRIES` for the others; None: never (notify).

    A pod that runs ``search.trials_per_pod`` = k trials in turn runs k trials' time, so it may be
    preempted k trials' worth (``retries.preemptions`` each); its application errors need no
    more retries than one trial's: each retry resumes every trial it left retryable at once, and
    a trial gives up when its own count reaches ``retries.app_errors``."""
    if step == "notify":
        return None
    if step != "train":
        return STEP_RETRIES
    k = cfg.search.trials_per_pod
    return cfg.retries.limit + cfg.retries.preemptions * (k - 1)
