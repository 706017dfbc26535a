"""The KFP builders' shared parts: the container components, what every task gets, the fan-out.

Both :mod:`~pipelines.build.kfp.grid` and :mod:`~pipelines.build.kfp.rounds` wire these; every
command line comes from :mod:`pipelines.build.steps`, with KFP placeholders where Argo has
``{{...}}``; placement, volumes and retries come from :mod:`pipelines.build.pods`.

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

from typing import Any, List, Optional  # noqa: UP035 (KFP reads typing.Optional[List])

from kfp import dsl, kubernetes

from components.durations import whole_seconds
from pipelines.build import pods, steps
from pipelines.config import SweepConfig

WORKFLOW_NAME = dsl.PIPELINE_JOB_ID_PLACEHOLDER
EXECUTOR_INPUT = "{{$}}"  # KFP's executor input JSON: output artifact URIs, the output file

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


def fetch_component(cfg: SweepConfig) -> Any:
    """fetch: the data source and dataset are pipeline parameters."""

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
        return container_spec(
            steps.image(cfg, "fetch"),
            STEP_PRELUDE,
            [path],
            "fetch",
            set_args(args, {"--dataset": dataset}),
        )

    return fetch


def train_component(cfg: SweepConfig) -> Any:
    """train: one trial; its ``done`` output is the trial's id (the fan-in collects them)."""

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
        return container_spec(
            steps.image(cfg, "train"),
            TRAIN_PRELUDE,
            [done, trial_id],
            "train",
            set_args(args, knobs),
        )

    return train


def compare_component(cfg: SweepConfig) -> Any:
    """compare, with the run page's artifacts: leaderboard, plots, metrics, model."""

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
        args = [*set_args(args, knobs), "--kfp-executor-input", EXECUTOR_INPUT]
        return container_spec(steps.image(cfg, "compare"), STEP_PRELUDE, [summary], "compare", args)

    return compare


def notify_component(cfg: SweepConfig) -> Any:
    """notify: the exit task; its ``status`` is KFP's final status (the prelude rewrites it)."""

    @dsl.container_component
    def notify(sweep_id: str, status: dsl.PipelineTaskFinalStatus) -> dsl.ContainerSpec:
        args = steps.notify_args(
            cfg, sweep_id=sweep_id, status=str(status), workflow_name=WORKFLOW_NAME
        )
        return container_spec(steps.image(cfg, "notify"), NOTIFY_PRELUDE, [], "notify", args)

    return notify


def fetched(
    cfg: SweepConfig, fetch: Any, data_source: Any, dataset: Any, after: Any
) -> tuple[dict[str, Any], Any]:
    """The fan-out's ``data_path``/``data_hash`` and the fetch task (it runs after ``after``, if
    any): the task's outputs, or empty strings and no task when the sweep has no data."""
    if cfg.data is None:
        return {"data_path": "", "data_hash": ""}, None
    task = configure_task(cfg, "fetch", fetch(data_source=data_source, dataset=dataset))
    if after is not None:
        task.after(after)
    return {"data_path": task.outputs["path"], "data_hash": task.outputs["hash"]}, task


def container_spec(
    image: str, prelude: str, prelude_args: list[Any], step: str, args: list[Any]
) -> dsl.ContainerSpec:
    """The step's command behind its prelude (``sh -c PRELUDE WORKFLOW_NAME ARGS... COMMAND``)."""
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
            _train_placement(cfg, configure_task(cfg, "train", train_task))
        return dsl.Collected(train_task.outputs["done"])  # type: ignore[return-value]

    return fan_out


def set_args(args: list[str], values: dict[str, Any]) -> list[Any]:
    """``args`` with the value after each flag in ``values`` replaced (a pipeline parameter)."""
    out: list[Any] = list(args)
    for flag, value in values.items():
        if flag not in out:
            raise ValueError(f"pipelines/build/steps.py's command line has no {flag}: {args}")
        out[out.index(flag) + 1] = value
    return out


def configure_task(cfg: SweepConfig, step: str, task: Any) -> Any:
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
    kubernetes.empty_dir_mount(task, volume_name=pods.TMP_VOLUME, mount_path=pods.TMP_PATH)
    kubernetes.add_pod_label(task, "app.kubernetes.io/name", "sweepyard")
    kubernetes.add_pod_label(task, "sweepyard.io/pipeline", cfg.name)
    retries = pods.retry_limit(cfg, step)
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
    if res.gpu.count > 0:
        task.set_accelerator_type(pods.GPU_RESOURCE)
        task.set_accelerator_limit(res.gpu.count)
    for label, value in pods.node_selector(cfg).items():
        kubernetes.add_node_selector(task, label, value)
    for t in pods.tolerations(cfg):
        kubernetes.add_toleration(
            task, key=t.key, operator=t.operator, value=t.value, effect=t.effect
        )
    kubernetes.empty_dir_mount(
        task,
        volume_name=pods.SHM_VOLUME,
        mount_path=pods.SHM_PATH,
        medium="Memory",
        size_limit=res.shm,
    )
