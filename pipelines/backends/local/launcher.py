"""How one attempt's pod runs here: the launcher interface and the process runtime behind it.

A runner describes the pod it wants as a :class:`PodRequest` (the manifest's command line and env
as written, volumes as local folders); a :class:`PodLauncher` turns it into what runs
(:class:`~pipelines.backends.local.pod.PodSpec`) and runs it. :class:`ProcessLauncher` runs it as a
process of this project's environment; ``RUNTIME=image`` runs it in the built image
(:class:`pipelines.backends.local.image.ImageLauncher`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipelines.backends.local.pod import (
    Attempt,
    PodSpec,
    ProcessTable,
    local_argv,
    map_mounts,
    run_attempt,
)


@dataclass(frozen=True)
class EnvVar:
    """One env entry of the manifest: a value as written, or a secret (None: optional, unset)."""

    name: str
    value: str | None
    secret: bool = False


@dataclass
class PodRequest:
    """One attempt's pod as the manifest asks for it, substituted; nothing runtime-specific.

    Attributes:
        command: the container's command (never empty).
        args: its arguments.
        script: a script template's source, written to this local file (None: a container).
        env: the manifest's env entries in order.
        overrides: the caller's environment that wins over everything (``MLFLOW_TRACKING_URI``).
        mounts: path in the pod -> local folder (the outputs folder and every volumeMount).
        outputs_dir: the attempt's local outputs folder (``/tmp/outputs`` in the pod).
        grace: seconds between SIGTERM and SIGKILL (``terminationGracePeriodSeconds``).
        deadline: the template's ``activeDeadlineSeconds`` (None: none).
        preempt_after: seconds after the start of an injected preemption (None: none).
    """

    command: list[str]
    args: list[str]
    script: Path | None
    env: list[EnvVar]
    overrides: Mapping[str, str]
    mounts: dict[str, Path]
    outputs_dir: Path
    grace: float
    deadline: float | None
    preempt_after: float | None = None


class PodLauncher(Protocol):
    """A runtime for one attempt's pod: what runs for a request, and running it to its end."""

    def pod_spec(self, request: PodRequest) -> PodSpec:
        """What runs for ``request`` (command line, environment, working directory, timings)."""
        ...

    def launch(
        self, spec: PodSpec, attempt: Attempt, table: ProcessTable, stopping: threading.Event
    ) -> str:
        """Run ``spec`` to its end; fills ``attempt`` and returns the pod's stdout."""
        ...


@dataclass(frozen=True)
class ProcessLauncher:
    """Each pod is a process group of this project's environment (``python``: this interpreter).

    Env values under a volume's mount path point at the volume's local folder; secrets that are
    not set are unset (as Kubernetes leaves an optional secret out); ``$SWEEPYARD_OUTPUTS`` is the
    attempt's outputs folder.
    """

    base_env: Mapping[str, str]
    cwd: Path

    def pod_spec(self, request: PodRequest) -> PodSpec:
        command = list(request.command)
        if request.script is not None:
            command.append(str(request.script))
        return PodSpec(
            argv=local_argv(command, request.args),
            env=self._env(request),
            cwd=self.cwd,
            grace=request.grace,
            deadline=request.deadline,
            preempt_after=request.preempt_after,
        )

    def _env(self, request: PodRequest) -> dict[str, str]:
        env = dict(self.base_env)
        for e in request.env:
            if not e.secret:
                env[e.name] = map_mounts(e.value or "", request.mounts)
            elif e.value is not None:
                env[e.name] = e.value
            else:
                env.pop(e.name, None)  # optional and not set: unset, as Kubernetes does
        env["SWEEPYARD_OUTPUTS"] = str(request.outputs_dir)
        env.update(request.overrides)
        return env

    def launch(
        self, spec: PodSpec, attempt: Attempt, table: ProcessTable, stopping: threading.Event
    ) -> str:
        return run_attempt(spec, attempt, table, stopping)
