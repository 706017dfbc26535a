"""The checks between the ``search`` keys (and the trainer's declared metrics), at load time.

Each problem is ``(key path, message)``, like every config error: ``search.algorithm`` for an
adaptive algorithm on a space with nothing continuous, ``search.batch`` above ``max_trials``,
``search.early_stopping.metric`` for a metric the trainer does not declare.
"""

from __future__ import annotations

from components.search.spec import ADAPTIVE, continuous
from pipelines.config.model import SweepConfig
from pipelines.trainer import declared_metrics

ADAPTIVE_ONLY = ("batch", "seed", "time_budget", "storage", "early_stopping")


def check_search(cfg: SweepConfig) -> list[tuple[str, str]]:
    """Every inconsistency of ``cfg.search`` (empty: none)."""
    s = cfg.search
    method = s.method
    if not s.adaptive:
        problems = [
            (f"search.{key}", f"applies to adaptive search ({', '.join(ADAPTIVE)}), not {method}")
            for key in ADAPTIVE_ONLY
            if getattr(s, key) is not None
        ]
        if s.trials_per_pod > 1:
            problems.append(
                ("search.trials_per_pod", f"{s.trials_per_pod} trials per pod needs an adaptive "
                 f"algorithm ({', '.join(ADAPTIVE)}), whose rounds hand a pod several trials; "
                 f"{method} search runs one trial per pod: set it to 1 or remove it")
            )  # fmt: skip
        if method == "random" and s.space.random is None:
            problems.append(("search.algorithm", "random search needs space.random.params"))
        elif method == "random" and s.space.random is not None and s.space.random.n_trials is None:
            problems.append(("search.space.random.n_trials", "required key is missing"))
        elif method == "grid" and s.space.random is not None:
            problems.append(
                ("search.algorithm", "grid search takes space.grid lists; space.random needs "
                 "algorithm random or an adaptive one")
            )  # fmt: skip
        return problems
    problems = []
    if not continuous(s.space):
        problems.append(
            ("search.algorithm", f"{method} models continuous params, and this space has none "
             "(only grid lists or choices): add space.random.params with uniform or loguniform "
             "ranges, or use algorithm: grid")
        )  # fmt: skip
    if s.space.random is not None and s.space.random.n_trials is not None:
        problems.append(
            ("search.space.random.n_trials", f"not used by {method}: search.max_trials counts "
             "its trials")
        )  # fmt: skip
    if s.batch is not None and s.batch > s.max_trials:
        problems.append(
            ("search.batch", f"{s.batch} trials per round is more than max_trials={s.max_trials}")
        )
    if s.trials_per_pod > 1 and cfg.resources.nodes > 1:
        problems.append(
            ("search.trials_per_pod", f"{s.trials_per_pod} trials per pod: a trial on "
             f"resources.nodes={cfg.resources.nodes} nodes is a JobSet of its own; set it to 1")
        )  # fmt: skip
    metric = s.stopping_metric
    if metric is not None:
        declared = declared_metrics(cfg.trainer)
        if declared is not None and metric not in declared:
            problems.append(
                ("search.early_stopping.metric", f"the trainer never reports {metric!r} (it "
                 f"declares: {', '.join(declared)})")
            )  # fmt: skip
    return problems
