"""A planned search (grid, random) as a KFP v2 package.

plan → fetch → ``trials`` (a nested pipeline: ``ParallelFor`` train, ``parallelism`` from the
config, returning the finished trial ids ``Collected``) → compare (whose Markdown leaderboard, HTML
plots, Metrics and Model artifacts the run page shows), all inside an ``ExitHandler`` whose exit
task is notify. The steps are :mod:`pipelines.build.kfp.tasks`'s.
"""

# No ``from __future__ import annotations``: KFP reads the component signatures at runtime.

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


def plan_component(cfg: SweepConfig) -> Any:
    """plan: the space and the trial count are pipeline parameters."""

    @dsl.container_component
    def plan(
        sweep_id: str,
        space: str,
        max_trials: int,
        trials: dsl.OutputPath(list),  # type: ignore[valid-type]
    ) -> dsl.ContainerSpec:
        args = steps.plan_args(cfg, sweep_id=sweep_id)
        return container_spec(
            steps.image(cfg, "plan"),
            STEP_PRELUDE,
            [trials],
            "plan",
            set_args(args, {"--space": space, "--max-trials": max_trials}),
        )

    return plan


def build(cfg: SweepConfig) -> Any:
    """The planned sweep's KFP pipeline (a ``GraphComponent``), parameters defaulting to the
    config (:func:`pipelines.build.kfp.build` hands a planned search here)."""
    plan, fetch = plan_component(cfg), fetch_component(cfg)
    train, compare, notify = train_component(cfg), compare_component(cfg), notify_component(cfg)
    plan_args = steps.plan_args(cfg, sweep_id="")
    space = plan_args[plan_args.index("--space") + 1]

    fan_out = fan_out_pipeline(cfg, train, "planned")

    @dsl.pipeline(name=cfg.name, description=cfg.description or None)
    def sweep(
        sweep_id: str = "",
        space: str = space,
        max_trials: int = cfg.search.max_trials,
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
            plan_task = configure_task(
                cfg, "plan", plan(sweep_id=sweep_id, space=space, max_trials=max_trials)
            )
            data, _ = fetched(cfg, fetch, data_source, dataset, after=plan_task)
            trial_ids = fan_out(
                trials=plan_task.outputs["trials"],
                **data,
                sweep_id=sweep_id,
                objective=objective,
                direction=direction,
                checkpoint_interval=checkpoint_interval,
                keep_checkpoints=keep_checkpoints,
                max_app_errors=max_app_errors,
            )
            trial_ids.set_caching_options(False)
            compare_task = compare(
                sweep_id=sweep_id,
                objective=objective,
                direction=direction,
                model_name=model_name,
                trials=trial_ids.output,
            )
            # As Argo's `train.AnySucceeded || train.AllFailed`: compare whatever finished.
            configure_task(cfg, "compare", compare_task.ignore_upstream_failure())

    return sweep
