"""The config checks of a trial bigger than one node (its JobSet: :mod:`pipelines.build.jobset`)."""

from __future__ import annotations

from components.contract import TRIAL_ID_LENGTH
from pipelines.config.model import SweepConfig

# JobSet's webhook: "<jobset>-<replicatedJob>-<job index>-<pod index>-<5 random>" must be a DNS-1035
# label (63 characters); with replicatedJob "node", job index 0 and pod index <= 63, the JobSet's name
# (pipelines/build/jobset.py: "<workflow name>-<trial id>") may have 63 - len("-node-0-63-abcde") = 47.
JOBSET_NAME_MAX = 47


def check_nodes(cfg: SweepConfig) -> list[tuple[str, str]]:
    """A multi-node trial's JobSet name must fit: ``<workflow name>-<trial id>`` is at most
    :data:`JOBSET_NAME_MAX` characters and starts with a letter (a DNS-1035 label)."""
    if cfg.resources.nodes == 1:
        return []
    # the workflow's name: `<name>-` + 5 random characters; a scheduled run's `<name>-<unix time>`
    suffix = 11 if cfg.schedule is not None else 6
    longest = JOBSET_NAME_MAX - 1 - TRIAL_ID_LENGTH - suffix
    problems = []
    if len(cfg.name) > longest:
        problems.append((
            "name",
            f"at most {longest} characters with resources.nodes > 1: each trial runs as a JobSet "
            f"named <workflow name>-<trial id>, at most {JOBSET_NAME_MAX} characters "
            f"(JobSet's limit on its pods' names); {cfg.name!r} has {len(cfg.name)}",
        ))  # fmt: skip
    if not cfg.name[:1].isalpha():
        problems.append(
            (
                "name",
                "must start with a letter with resources.nodes > 1 (a JobSet's name is a DNS-1035 label)",
            )
        )
    return problems
