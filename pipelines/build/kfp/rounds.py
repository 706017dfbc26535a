"""An adaptive search as a KFP v2 package: rounds unrolled, each behind ``dsl.If`` on ``more``.

KFP v2 has no recursion, so the rounds of Argo's recursive ``round`` template are unrolled:
``ceil(max_trials / batch)`` rounds of suggest → fan-out of train, plus one last suggest that tells
the study the last round's results. Round ``r + 1`` sits inside round ``r``'s ``dsl.If(more ==
"true")``; compare sits in each round's ``dsl.Else`` (the search ended there) and after the last
round, so it runs once. The steps are :mod:`pipelines.build.kfp.tasks`'s, the commands, env and
images the Argo path's (:mod:`pipelines.build.steps`).
"""

# No ``from __future__ import annotations``: KFP reads the component signatures at runtime.

import json
import math
from dataclasses import dataclass
from typing import Any

from kfp import dsl

from pipelines.build import steps
from pipelines.build.kfp.tasks import (
    STEP_PRELUDE,
    compare_component,
    configure_task,
    container_spec,
    fan_out_pipeline,
    fetch_component,
    fetched,
    notify_component,
    set_args,
    train_component,
)
from pipelines.config import SweepConfig


def rounds(cfg: SweepConfig) -> int:
    """Suggest steps in the package: one per round of ``batch``, and the last that only tells."""
    return math.ceil(cfg.search.max_trials / cfg.batch) + 1


def suggest_component(cfg: SweepConfig) -> Any:
    """suggest: the search spec is a pipeline parameter; outputs the round's trials and ``more``."""

    @dsl.container_component
    def suggest(
        sweep_id: str,
        search: str,
        trials: dsl.OutputPath(list),  # type: ignore[valid-type]
        more: dsl.OutputPath(str),  # type: ignore[valid-type]
    ) -> dsl.ContainerSpec:
        args = set_args(steps.suggest_args(cfg, sweep_id=sweep_id), {"--search": search})
        return container_spec(steps.image(cfg, "suggest"), STEP_PRELUDE, [trials], "suggest", args)

    return suggest


def build(cfg: SweepConfig) -> Any:
    """The adaptive sweep's KFP pipeline (:func:`pipelines.build.kfp.build` hands an adaptive
    config here)."""
    fetch, train = fetch_component(cfg), train_component(cfg)
    compare, notify = compare_component(cfg), notify_component(cfg)
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
        exit_task = configure_task(cfg, "notify", notify(sweep_id=sweep_id))
        with dsl.ExitHandler(exit_task, name="sweep"):
            data, fetch_task = fetched(cfg, fetch, data_source, dataset, after=None)
            on_args = {"sweep_id": sweep_id, "objective": objective, "direction": direction}
            trial_args = {
                **data,
                **on_args,
                "checkpoint_interval": checkpoint_interval,
                "keep_checkpoints": keep_checkpoints,
                "max_app_errors": max_app_errors,
            }
            unrolled = _Rounds(
                cfg,
                suggest=lambda: suggest(sweep_id=sweep_id, search=search),
                fan_out=lambda trials: fan_out(trials=trials, **trial_args),
                compare=lambda: compare(**on_args, model_name=model_name, trials=[]),
            )
            unrolled.round(0, fetch_task)

    return sweep


@dataclass(frozen=True)
class _Rounds:
    """The unrolled rounds: each makes its tasks from the pipeline's parameters (the callables)."""

    cfg: SweepConfig
    suggest: Any  # () -> the suggest task
    fan_out: Any  # (trials) -> the fan-out task over them
    compare: Any  # () -> the compare task (trials: compare reads every result from the disk)

    def round(self, r: int, after: Any) -> None:
        """Round ``r`` (after ``after``, if any): suggest, then the next round or compare."""
        s = configure_task(self.cfg, "suggest", self.suggest())
        s.set_display_name(f"suggest-{r + 1}")
        if after is not None:
            s.after(after)
        if r > 0:
            s.ignore_upstream_failure()  # a failed trial ends its own round, not the search
        if r + 1 == rounds(self.cfg):  # the last: tells the study, asks nothing more
            self.compare_after(s)
            return
        with dsl.If(s.outputs["more"] == "true", name=f"round-{r + 1}"):
            fan = self.fan_out(s.outputs["trials"])
            fan.set_caching_options(False)
            self.round(r + 1, fan)
        with dsl.Else(name=f"done-{r + 1}"):
            self.compare_after(s)

    def compare_after(self, after: Any) -> None:
        """compare, once the search ended at ``after`` (whatever its trials did)."""
        task = self.compare()
        configure_task(self.cfg, "compare", task.after(after).ignore_upstream_failure())
