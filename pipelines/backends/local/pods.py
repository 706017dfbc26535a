"""From a substituted container or script body to the pod that runs one attempt of it.

Shared by the pod runner (:mod:`.retry`) and the JobSet runner (:mod:`.jobset`): the volumes
as local folders, the env entries, the command line (a script's source written to a file), the
grace period and deadline; the launcher (:mod:`.launcher`) makes it a process or an image sandbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.argo.expr import ExprError
from pipelines.backends.local.launcher import EnvVar, PodLauncher, PodRequest
from pipelines.backends.local.pod import PodSpec
from pipelines.backends.local.records import LOCAL_OVERRIDES, Node, safe_name, text_of
from pipelines.backends.local.spec import deadline_seconds, grace_seconds
from pipelines.backends.local.state import RunState
from pipelines.build.steps import OUTPUTS_DIR


class PodBuilder:
    """Builds the :class:`PodSpec` of an attempt with the run's :class:`PodLauncher`."""

    def __init__(self, state: RunState, launcher: PodLauncher):
        self.state = state
        self.launcher = launcher

    def pod_spec(
        self,
        node: Node,
        t: Mapping[str, Any],
        body: Mapping[str, Any],
        attempt_no: int,
        outputs_dir: Path,
        preempt_after: float | None,
    ) -> PodSpec:
        """What runs for this attempt of ``node`` (``body``: the template's substituted
        container or script; ``t``: the template, for its volumes, grace period and deadline).

        Raises:
            ExprError: a volumeMount that names no volume, or no command.
        """
        where = f"template {t['name']}"
        mounts = self._mounts(node, t, body, outputs_dir, where)
        env = self._env(body)
        command = list(body.get("command") or [])
        if not command:
            raise ExprError(f"{where}: no command (a local run cannot use the image's entrypoint)")
        script = self._script(node, attempt_no, str(body["source"])) if "source" in body else None
        request = PodRequest(
            command=command,
            args=list(body.get("args") or []),
            script=script,
            env=env,
            overrides={k: v for k, v in self.state.opts.overrides.items() if k in LOCAL_OVERRIDES},
            mounts=mounts,
            outputs_dir=outputs_dir,
            grace=grace_seconds(t, self.state.spec),
            deadline=deadline_seconds(t, where),
            preempt_after=preempt_after,
        )
        return self.launcher.pod_spec(request)

    def _mounts(
        self,
        node: Node,
        t: Mapping[str, Any],
        body: Mapping[str, Any],
        outputs_dir: Path,
        where: str,
    ) -> dict[str, Path]:
        """Path in the pod -> local folder: the outputs folder, then each volumeMount."""
        mounts: dict[str, Path] = {OUTPUTS_DIR: outputs_dir}
        own = self.state.volume_dirs(t.get("volumes") or [], safe_name(node.name))
        volumes = {**self.state.claims, **own}
        for vm in body.get("volumeMounts") or []:
            if vm["name"] not in volumes:
                raise ExprError(f"{where}: volumeMount {vm['name']!r} names no volume")
            mounts[vm["mountPath"]] = volumes[vm["name"]] / (vm.get("subPath") or "")
        return mounts

    def _env(self, body: Mapping[str, Any]) -> list[EnvVar]:
        """The body's env entries; a secret's value from the run's secrets (None: not set)."""
        secrets = self.state.opts.secrets
        return [
            EnvVar(e["name"], secrets.get(e["name"]), secret=True)
            if "valueFrom" in e
            else EnvVar(e["name"], text_of(e.get("value", "")))
            for e in body.get("env") or []
        ]

    def _script(self, node: Node, attempt_no: int, source: str) -> Path:
        """A script template's source as an executable file of the run."""
        script = self.state.opts.run_dir / "scripts" / f"{safe_name(node.name)}-{attempt_no}"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(source)
        script.chmod(0o755)
        return script
