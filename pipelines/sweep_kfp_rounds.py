"""An adaptive search as a KFP v2 package: rounds unrolled, each behind ``dsl.If`` on ``more``.

KFP v2 has no recursion, so the rounds of Argo's recursive ``round`` template are unrolled:
``ceil(max_trials / batch)`` rounds of suggest → fan-out of train, plus one last suggest that tells
the study the last round's results. Round ``r + 1`` sits inside round ``r``'s ``dsl.If(more ==
"true")``; compare sits in each round's ``dsl.Else`` (the search ended there) and after the last
round, so it runs once. The commands, env and images are the Argo path's (:mod:`pipelines.steps`).
"""

# No ``from __future__ import annotations``: KFP reads the component signatures at runtime.

import json
import math
from typing import Any  # noqa: UP035 (KFP reads typing.List)

from kfp import dsl

from pipelines import steps
from pipelines.config import SweepConfig


def rounds(cfg: SweepConfig) -> int:
    """Suggest steps in the package: one per round of ``batch``, and the last that only tells."""
    return math.ceil(cfg.search.max_trials / cfg.batch) + 1


def suggest_component(cfg: SweepConfig) -> Any:
    from pipelines.sweep_kfp import STEP_PRELUDE, _set, _spec

    @dsl.container_component
    def suggest(
        sweep_id: str,
        search: str,
        trials: dsl.OutputPath(list),  # type: ignore[valid-type]
        more: dsl.OutputPath(str),  # type: ignore[valid-type]
    ) -> dsl.ContainerSpec:
        args = _set(steps.suggest_args(cfg, sweep_id=sweep_id), {"--search": search})
        return _spec(steps.image(cfg, "suggest"), STEP_PRELUDE, [trials], "suggest", args)

    return suggest


def build(cfg: SweepConfig) -> Any:
    """The adaptive sweep's KFP pipeline (``sweep_kfp.build`` hands an adaptive config here)."""
    from pipelines.sweep_kfp import _components, _step, fan_out_pipeline, fetched

    _, fetch, train, compare, notify = _components(cfg)
    suggest = suggest_component(cfg)
    search = json.dumps(steps.search_spec(cfg), sort_keys=True)

    fan_out = fan_out_pipeline(cfg, train, "suggested")

    @dsl.pipeline(name=cfg.name, description=cfg.description or None)
    def sweep(
        sweep_id: str = "",
        search: str = search,
        data_source: str = cfg.data.source if cfg.data else "",
        dataset: str = cfg.data.dataset if cfg.data else "",
        objective: str = cfg.search.objective.metric,
        direction: str = cfg.search.objective.direction,
        checkpoint_interval: int = cfg.checkpoint.interval_seconds,
        keep_checkpoints: int = cfg.checkpoint.keep,
        max_app_errors: int = cfg.retries.app_errors,
        model_name: str = cfg.tracking.model_name or "",  # "": registration is off
    ) -> None:
        def compare_step(after: Any) -> None:
            task = compare(  # trials: compare reads every result from the shared disk
                sweep_id=sweep_id,
                objective=objective,
                direction=direction,
                model_name=model_name,
                trials=[],
            )
            _step(cfg, "compare", task.after(after).ignore_upstream_failure())

        def round_(r: int, after: Any) -> None:
            s = _step(cfg, "suggest", suggest(sweep_id=sweep_id, search=search))
            s.set_display_name(f"suggest-{r + 1}")
            if after is not None:
                s.after(after)
            if r > 0:
                s.ignore_upstream_failure()  # a failed trial ends its own round, not the search
            if r + 1 == rounds(cfg):  # the last: tells the study, asks nothing more
                compare_step(s)
                return
            with dsl.If(s.outputs["more"] == "true", name=f"round-{r + 1}"):
                fan = fan_out(
                    trials=s.outputs["trials"],
                    **data,
                    sweep_id=sweep_id,
                    objective=objective,
                    direction=direction,
                    checkpoint_interval=checkpoint_interval,
                    keep_checkpoints=keep_checkpoints,
                    max_app_errors=max_app_errors,
                )
                fan.set_caching_options(False)
                round_(r + 1, fan)
            with dsl.Else(name=f"done-{r + 1}"):
                compare_step(s)

        exit_task = _step(cfg, "notify", notify(sweep_id=sweep_id), retries=0)
        with dsl.ExitHandler(exit_task, name="sweep"):
            data, fetch_task = fetched(cfg, fetch, data_source, dataset, after=None)
            round_(0, fetch_task)

    return sweep
