"""The sweep as a Kubeflow Pipelines v2 package: the same steps, commands and image as ``sweep.py``.

plan → fetch → ``trials`` (a nested pipeline: ``ParallelFor`` train, ``parallelism`` from the
config, returning the finished trial ids ``Collected``) → compare (whose Markdown leaderboard, HTML plots, Metrics and
Model artifacts the run page shows), all inside an ``ExitHandler`` whose exit task is notify. Every command line comes from :mod:`pipelines.steps`; KFP placeholders
stand where Argo has ``{{...}}``. The package runs as compiled under ``kfp.local`` too
(``tests/test_kfp_local.py``).

Three things KFP spells differently from Argo, bridged by a one-line ``sh -c`` prelude in front of
the unchanged component command (the image has ``sh``; the prelude ends in ``exec``, so the
component is the container's main process and receives SIGTERM itself on preemption):

* **Output parameters.** KFP reads an output parameter from a file it names
  (``/tmp/kfp/outputs/<name>`` on the cluster, ``<task root>/<name>`` under ``kfp.local``); our
  components write ``$SWEEPYARD_OUTPUTS/<name>``. The prelude points ``SWEEPYARD_OUTPUTS`` at the
  folder of the step's first output file (KFP puts all of a step's output files in one folder).
* **The workflow name** (the sweep id when ``sweep_id`` is empty) is ``{{workflow.name}}`` on Argo;
  KFP resolves placeholders only in command lines, not in ``env``, so the prelude exports
  ``SWEEPYARD_WORKFLOW_NAME`` from the run's UUID (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``).
* **The exit status.** notify's ``--status`` gets KFP's ``PipelineTaskFinalStatus`` (a JSON
  object); the prelude rewrites it to Argo's words: ``SUCCEEDED`` → ``Succeeded``, anything else →
  ``Failed``.

KFP has no ``{{retries}}``: ``SWEEPYARD_ATTEMPT`` is not set (components read it as 0); the trainer
counts its attempts in ``attempts.jsonl`` either way. KFP's retry has no policy: see
``deploy/KUBEFLOW.md`` for the workflow controller's default retry strategy that retries preempted
(deleted) pods.
"""

# No ``from __future__ import annotations``: KFP reads the component signatures at runtime.

from pathlib import Path
from typing import Any, List, Optional  # noqa: UP035 (KFP reads typing.Optional[List])

from kfp import compiler, dsl, kubernetes

from components.durations import whole_seconds
from pipelines import steps
from pipelines.config import ConfigError, SweepConfig

WORKFLOW_NAME = dsl.PIPELINE_JOB_ID_PLACEHOLDER
EXECUTOR_INPUT = "{{$}}"  # KFP's executor input JSON: output artifact URIs, the output file
SPOT_LABEL = "cloud.google.com/gke-spot"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GPU_RESOURCE = "nvidia.com/gpu"
STEP_RETRIES = 3  # plan, fetch, compare: as the Argo templates
TMP_VOLUME = "tmp"
SHM_VOLUME = "dshm"

# $0: workflow name; $1: one of the step's output files ('' for none); then the command.
STEP_PRELUDE = (
    'export SWEEPYARD_WORKFLOW_NAME="$0"; '
    'if [ -n "$1" ]; then export SWEEPYARD_OUTPUTS="${1%/*}"; '
    'mkdir -p "$SWEEPYARD_OUTPUTS" || exit 1; fi; '
    'shift; exec "$@"'
)
# $0: workflow name; $1: the trial's 'done' output file; $2: the trial id; then the command.
# The id is written first: KFP reads the file only when the step succeeds.
TRAIN_PRELUDE = (
    'export SWEEPYARD_WORKFLOW_NAME="$0" SWEEPYARD_OUTPUTS="${1%/*}"; '
    'mkdir -p "$SWEEPYARD_OUTPUTS" && printf %s "$2" > "$1" || exit 1; '
    'shift 2; exec "$@"'
)
# $0: workflow name; then the command, whose --status value is KFP's final-status JSON.
NOTIFY_PRELUDE = (
    'export SWEEPYARD_WORKFLOW_NAME="$0"; n=$#; prev=; '
    'for a in "$@"; do if [ "$prev" = --status ]; then '
    'state=$(printf %s "$a" | sed -n \'s/.*"state": *"\\([A-Z_]*\\)".*/\\1/p\'); '
    'if [ "$state" = SUCCEEDED ]; then a=Succeeded; else a=Failed; fi; fi; '
    'set -- "$@" "$a"; prev=$a; done; shift "$n"; exec "$@"'
)


class KfpUnsupported(ConfigError):
    """A pipeline KFP cannot run as configured (the problem names the config key)."""


def unsupported(cfg: SweepConfig) -> str | None:
    """Why KFP cannot run this pipeline, or None. A KFP task is one pod: a trial on several nodes
    (``resources.nodes`` > 1, a JobSet on Argo) has no KFP equivalent here."""
    if cfg.resources.nodes > 1:
        return (
            f"resources.nodes is {cfg.resources.nodes}: a KFP task is one pod, so KFP cannot run a "
            "multi-node trial; run this pipeline on Argo (BACKEND=argo: each trial a JobSet) or "
            "set resources.nodes: 1"
        )
    return None


def build(cfg: SweepConfig) -> Any:
    """The sweep's KFP pipeline (a ``GraphComponent``), parameters defaulting to the config.

    Raises:
        KfpUnsupported: :func:`unsupported` says why KFP cannot run it.
    """
    why = unsupported(cfg)
    if why is not None:
        raise KfpUnsupported(f"pipelines/{cfg.name}.yaml (KFP)", [("resources.nodes", why)])
    if cfg.search.adaptive:
        from pipelines import sweep_kfp_rounds

        return sweep_kfp_rounds.build(cfg)
    plan, fetch, train, compare, notify = _components(cfg)
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
        exit_task = _step(cfg, "notify", notify(sweep_id=sweep_id), retries=0)
        with dsl.ExitHandler(exit_task, name="sweep"):
            plan_task = _step(
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
            _step(cfg, "compare", compare_task.ignore_upstream_failure())

    return sweep


def compile_package(cfg: SweepConfig, path: Path) -> None:
    """Write the package a user uploads in the Kubeflow UI (deterministic: golden-file safe).

    Raises:
        KfpUnsupported: :func:`unsupported` says why KFP cannot run it.
    """
    pipeline = build(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))


def _components(cfg: SweepConfig) -> tuple[Any, Any, Any, Any, Any]:
    """The five container components; their command lines are ``pipelines.steps``'s."""
    image, train_image = steps.image(cfg, "plan"), steps.image(cfg, "train")

    @dsl.container_component
    def plan(
        sweep_id: str,
        space: str,
        max_trials: int,
        trials: dsl.OutputPath(list),  # type: ignore[valid-type]
    ) -> dsl.ContainerSpec:
        args = steps.plan_args(cfg, sweep_id=sweep_id)
        return _spec(
            image,
            STEP_PRELUDE,
            [trials],
            "plan",
            _set(args, {"--space": space, "--max-trials": max_trials}),
        )

    @dsl.container_component
    def fetch(
        data_source: str,
        dataset: str,
        path: dsl.OutputPath(str),  # type: ignore[valid-type]
        hash: dsl.OutputPath(str),  # type: ignore[valid-type]  # noqa: A002 (the output's name)
    ) -> dsl.ContainerSpec:
        # (defined for every sweep; a sweep without data never calls it: see `fetched`)
        args = steps.fetch_args(cfg) if cfg.data else ["", "--dataset", ""]
        args[0] = data_source
        return _spec(image, STEP_PRELUDE, [path], "fetch", _set(args, {"--dataset": dataset}))

    @dsl.container_component
    def train(
        sweep_id: str,
        trial_id: str,
        params: str,
        data_path: str,
        data_hash: str,
        objective: str,
        direction: str,
        checkpoint_interval: int,
        keep_checkpoints: int,
        max_app_errors: int,
        done: dsl.OutputPath(str),  # type: ignore[valid-type]
    ) -> dsl.ContainerSpec:
        args = steps.train_args(
            cfg,
            sweep_id=sweep_id,
            trial_id=trial_id,
            params=params,
            data_path=data_path,
            data_hash=data_hash,
        )
        knobs = {
            "--objective": objective,
            "--direction": direction,
            "--checkpoint-interval": checkpoint_interval,
            "--keep-checkpoints": keep_checkpoints,
            "--max-app-errors": max_app_errors,
        }
        return _spec(train_image, TRAIN_PRELUDE, [done, trial_id], "train", _set(args, knobs))

    @dsl.container_component
    def compare(
        sweep_id: str,
        objective: str,
        direction: str,
        model_name: str,
        summary: dsl.OutputPath(str),  # type: ignore[valid-type]
        leaderboard: dsl.Output[dsl.Markdown],
        plots: dsl.Output[dsl.HTML],
        metrics: dsl.Output[dsl.Metrics],
        model: dsl.Output[dsl.Model],
        trials: Optional[List[str]] = None,  # noqa: UP006, UP045
    ) -> dsl.ContainerSpec:
        # `trials` (the trial ids that finished) only orders compare after the fan-in: compare
        # reads every result from the shared disk, including trials finished by earlier runs.
        # The run page's artifacts: compare writes each at the path KFP's executor input names
        # ({{$}}, resolved by KFP's launcher and by kfp.local alike) plus their metadata.
        args = steps.compare_args(cfg, sweep_id=sweep_id)
        knobs = {"--objective": objective, "--direction": direction, "--model-name": model_name}
        args = [*_set(args, knobs), "--kfp-executor-input", EXECUTOR_INPUT]
        return _spec(image, STEP_PRELUDE, [summary], "compare", args)

    @dsl.container_component
    def notify(sweep_id: str, status: dsl.PipelineTaskFinalStatus) -> dsl.ContainerSpec:
        args = steps.notify_args(
            cfg, sweep_id=sweep_id, status=str(status), workflow_name=WORKFLOW_NAME
        )
        return _spec(image, NOTIFY_PRELUDE, [], "notify", args)

    return plan, fetch, train, compare, notify


def fetched(
    cfg: SweepConfig, fetch: Any, data_source: Any, dataset: Any, after: Any
) -> tuple[dict[str, Any], Any]:
    """The fan-out's ``data_path``/``data_hash`` and the fetch task (it runs after ``after``, if
    any): the task's outputs, or empty strings and no task when the sweep has no data."""
    if cfg.data is None:
        return {"data_path": "", "data_hash": ""}, None
    task = _step(cfg, "fetch", fetch(data_source=data_source, dataset=dataset))
    if after is not None:
        task.after(after)
    return {"data_path": task.outputs["path"], "data_hash": task.outputs["hash"]}, task


def _spec(
    image: str, prelude: str, prelude_args: list[Any], step: str, args: list[Any]
) -> dsl.ContainerSpec:
    if prelude is STEP_PRELUDE and not prelude_args:
        prelude_args = [""]
    command = ["sh", "-c", prelude, WORKFLOW_NAME, *prelude_args, *steps.command(step)]
    return dsl.ContainerSpec(image=image, command=command, args=args)


def fan_out_pipeline(cfg: SweepConfig, train: Any, what: str) -> Any:
    """The nested pipeline that runs one ``train`` task per trial of a list (``what``: whose)."""

    @dsl.pipeline(name="trials", description=f"one train task per {what} trial")
    def fan_out(
        trials: List[dict],  # noqa: UP006
        data_path: str,
        data_hash: str,
        sweep_id: str,
        objective: str,
        direction: str,
        checkpoint_interval: int,
        keep_checkpoints: int,
        max_app_errors: int,
    ) -> List[str]:  # noqa: UP006
        # A nested pipeline: the fan-out reads only its own inputs (kfp.local's ParallelFor
        # resolves nothing else correctly) and hands the finished trial ids back, collected.
        with dsl.ParallelFor(trials, name="trial", parallelism=cfg.parallelism) as trial:
            train_task = train(
                sweep_id=sweep_id,
                trial_id=trial.id,
                params=trial.params,
                data_path=data_path,
                data_hash=data_hash,
                objective=objective,
                direction=direction,
                checkpoint_interval=checkpoint_interval,
                keep_checkpoints=keep_checkpoints,
                max_app_errors=max_app_errors,
            )
            _train_placement(cfg, _step(cfg, "train", train_task, cfg.retries.limit))
        return dsl.Collected(train_task.outputs["done"])  # type: ignore[return-value]

    return fan_out


def _set(args: list[str], values: dict[str, Any]) -> list[Any]:
    """``args`` with the value after each flag in ``values`` replaced (a pipeline parameter)."""
    out: list[Any] = list(args)
    for flag, value in values.items():
        if flag not in out:
            raise ValueError(f"pipelines/steps.py's command line has no {flag}: {args}")
        out[out.index(flag) + 1] = value
    return out


def _step(cfg: SweepConfig, step: str, task: Any, retries: int = STEP_RETRIES) -> Any:
    """What every step gets: env, secrets, the shared claim, labels, retries; caching off."""
    task.set_display_name(step)
    # Every step reads or writes the shared disk, which KFP's cache key cannot see.
    task.set_caching_options(False)
    for name, value in steps.plain_env(cfg, step).items():
        task.set_env_variable(name, value)
    for optional in (True, False):
        refs = {s.key: s.env for s in steps.secret_env(cfg, step) if s.optional is optional}
        if refs:
            kubernetes.use_secret_as_env(
                task, secret_name=cfg.cluster.secret, secret_key_to_env=refs, optional=optional
            )
    kubernetes.mount_pvc(task, pvc_name=cfg.cluster.claim, mount_path=cfg.cluster.mount_path)
    # As on Argo: the image's non-root user (KFP's compiler adds no privilege escalation, no
    # capabilities and RuntimeDefault seccomp itself; KFP cannot make the root read-only) and an
    # emptyDir at /tmp, where the outputs are written.
    kubernetes.set_security_context(
        task, run_as_user=steps.IMAGE_UID, run_as_group=steps.IMAGE_UID, run_as_non_root=True
    )
    kubernetes.empty_dir_mount(task, volume_name=TMP_VOLUME, mount_path="/tmp")
    kubernetes.add_pod_label(task, "app.kubernetes.io/name", "sweepyard")
    kubernetes.add_pod_label(task, "sweepyard.io/pipeline", cfg.name)
    if retries:
        b = cfg.retries.backoff
        task.set_retry(
            num_retries=retries,
            # KFP reads one integer and a unit only: hand it the Go duration's whole seconds
            backoff_duration=f"{whole_seconds(b.duration)}s",
            backoff_factor=float(b.factor),
            backoff_max_duration=f"{whole_seconds(b.max_duration)}s",
        )
    return task


def _train_placement(cfg: SweepConfig, task: Any) -> None:
    """Spot and GPU placement, resources and /dev/shm of a trial (as the Argo ``train``)."""
    res = cfg.resources
    task.set_cpu_request(res.cpu)
    task.set_memory_request(res.memory)
    task.set_memory_limit(res.memory)
    if res.spot:
        kubernetes.add_node_selector(task, SPOT_LABEL, "true")
        kubernetes.add_toleration(
            task, key=SPOT_LABEL, operator="Equal", value="true", effect="NoSchedule"
        )
    if res.gpu.count > 0:
        task.set_accelerator_type(GPU_RESOURCE)
        task.set_accelerator_limit(res.gpu.count)
        kubernetes.add_node_selector(task, ACCELERATOR_LABEL, res.gpu.type)
        kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    kubernetes.empty_dir_mount(
        task, volume_name=SHM_VOLUME, mount_path="/dev/shm", medium="Memory", size_limit=res.shm
    )
