"""A step with its retries: attempts, the retry policy and expression, backoff, chaos, outputs.

A mixin of :class:`pipelines.backends.local.engine.Engine` (the seam between "what runs when" and
"how one step runs until it is done").
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.durations import parse_seconds_or_duration
from pipelines.argo.expr import ExprError, eval_expr, eval_value
from pipelines.argo.tags import deep_substitute, substitute
from pipelines.argo.vocab import DEFAULT_RETRY_POLICY
from pipelines.backends.local.artifacts import keep_artifacts
from pipelines.backends.local.model import LOCAL_OVERRIDES, Node, Options, safe_name, text_of
from pipelines.backends.local.pod import (
    Attempt,
    PodSpec,
    ProcessTable,
    local_argv,
    map_mounts,
    read_output,
    run_attempt,
)
from pipelines.backends.local.slots import OrderedSlots
from pipelines.backends.local.spec import deadline_seconds, grace_seconds
from pipelines.build.steps import OUTPUTS_DIR

SCRIPT_IN_POD = "/argo/staging/script"  # where Argo puts a script template's source
DEFAULT_CHAOS_WINDOW = 20.0  # seconds: preemptions land in (0.1, 0.9) x this before any trial ends


def chaos_draw(seed: int | None, node: str, attempt: int) -> tuple[float, float]:
    """Two uniform numbers for one attempt: whether it is preempted, and when.

    Seeded per (seed, node, attempt), so a seed gives the same preemptions whatever order the
    parallel steps start in; unseeded, fresh randomness.
    """
    rng = random.Random(f"{seed}:{node}:{attempt}") if seed is not None else random.SystemRandom()
    return rng.random(), rng.random()


class PodRunner:
    """Runs container and script templates; expects the engine's state below."""

    name: str
    spec: dict[str, Any]
    opts: Options
    pods: OrderedSlots | None
    table: ProcessTable
    stopping: threading.Event
    stop_reason: str
    train_durations: list[float]
    chaos_templates: set[str]
    claims: dict[str, Path]

    def set_phase(self, node: Node, phase: str, message: str = "") -> None:
        raise NotImplementedError

    def globals(self) -> dict[str, str]:
        raise NotImplementedError

    def _pod(self, node: Node, t: Mapping[str, Any]) -> None:
        rs = t.get("retryStrategy")
        limit = (
            int(rs.get("limit", 10**9))
            if rs and rs.get("limit") is not None
            else (10**9 if rs else 0)
        )
        policy = (rs or {}).get("retryPolicy") or DEFAULT_RETRY_POLICY
        backoff = (rs or {}).get("backoff") or {}
        where = f"template {t['name']}"
        base_wait = backoff_seconds(backoff, "duration", where)
        factor = float(backoff.get("factor") or 1)
        cap = backoff_seconds(backoff, "cap", where)
        max_total = backoff_seconds(backoff, "maxDuration", where)
        self.set_phase(node, "Running")
        first_start = time.time()
        while True:
            attempt_no = len(node.attempts)
            self._attempt(node, t, attempt_no, chaos=t["name"] in self.chaos_templates)
            last = node.attempts[-1]
            node.exit_code = last.exit_code
            setup_error = last.exit_code is None and not last.preempted
            if last.phase == "Succeeded" or self.stopping.is_set() or setup_error:
                self.set_phase(node, last.phase, last.message)
                return
            retry = {
                "Always": True,
                "OnFailure": last.phase == "Failed",
                "OnError": last.phase == "Error",
                "OnTransientError": last.phase == "Error",
            }[policy]
            why = f"{last.message or last.phase}; retryPolicy {policy} does not retry it"
            if retry and rs and rs.get("expression"):
                expr = substitute(
                    str(rs["expression"]),
                    self._pod_vars(node, attempt_no).get,
                    f"{where} expression",
                )
                names = {
                    "lastRetry.exitCode": str(last.exit_code if last.exit_code is not None else -1),
                    "lastRetry.status": last.phase,
                    "lastRetry.message": last.message,
                    "lastRetry.duration": str(int((last.finished or time.time()) - last.started)),
                }
                retry = eval_expr(expr, names, f"{where}.retryStrategy.expression")
                why = f"{last.message or last.phase}; retryStrategy.expression evaluated to false"
            if retry and attempt_no >= limit:
                retry = False
                why = f"{last.message or last.phase}" + ("; no more retries left" if rs else "")
            wait = 0.0
            if retry:
                wait = base_wait * factor**attempt_no
                wait = min(wait, cap) if cap else wait
                wait *= self.opts.backoff_scale  # local runs wait less; maxDuration is kept as is
                if max_total and time.time() + wait > first_start + max_total:
                    retry, why = False, f"{last.message or last.phase}; max duration limit exceeded"
            if not retry:
                self.set_phase(node, last.phase, why)
                return
            self.set_phase(node, "Running", f"retrying after {last.phase}")
            if self.stopping.wait(wait):
                self.set_phase(node, "Failed", f"not retried: {self.stop_reason}")
                return

    def take_pod_slot(self, node: Node) -> None:
        """Wait for one of the workflow's ``parallelism`` pods (none: no limit): a fan-out's items
        in their order (the ticket the fan-out gave the node), a retry at the back of the queue."""
        if self.pods is None:
            return
        ticket = node.ticket if node.ticket is not None else self.pods.ticket()
        node.ticket = None
        self.pods.acquire(ticket)

    def _pod_vars(self, node: Node, attempt_no: int) -> dict[str, str]:
        v = self.globals()
        for k, val in node.inputs.items():
            v[f"inputs.parameters.{k}"] = val
        v["retries"] = str(attempt_no)
        v["pod.name"] = f"{self.name}-{safe_name(node.name)}-{attempt_no}"
        v["node.name"] = node.name
        return v

    def _attempt(self, node: Node, t: Mapping[str, Any], attempt_no: int, chaos: bool) -> None:
        where = f"template {t['name']}"
        log = self.opts.run_dir / "logs" / f"{safe_name(node.name)}-{attempt_no}.log"
        attempt = Attempt(index=attempt_no, log=log)
        outputs_dir = self.opts.run_dir / "outputs" / f"{safe_name(node.name)}-{attempt_no}"
        outputs_dir.mkdir(parents=True, exist_ok=True)
        try:
            values = self._pod_vars(node, attempt_no)
            body = deep_substitute(
                t.get("container") or t["script"],
                values.get,
                where,
                lambda expression: eval_value(expression, values, where),
            )
            spec = self._pod_spec(node, t, body, attempt_no, outputs_dir, chaos)
        except ExprError as e:
            attempt.phase, attempt.message, attempt.finished = "Error", str(e), time.time()
            node.attempts.append(attempt)
            return
        self.take_pod_slot(node)
        try:
            if self.stopping.is_set():
                attempt.phase, attempt.message = "Failed", f"not run: {self.stop_reason}"
                attempt.finished = time.time()
                node.attempts.append(attempt)
                return
            attempt.started = time.time()
            node.attempts.append(attempt)
            self.set_phase(node, "Running")
            stdout = run_attempt(spec, attempt, self.table, self.stopping)
        finally:
            if self.pods is not None:
                self.pods.release()
        if chaos and attempt.phase == "Succeeded" and attempt.finished:
            self.train_durations.append(attempt.finished - attempt.started)
        if attempt.phase != "Succeeded":
            return
        node.result = stdout.rstrip("\n")
        for p in (t.get("outputs") or {}).get("parameters") or []:
            vf = p.get("valueFrom") or {}
            value = read_output(str(vf.get("path", "")), outputs_dir, OUTPUTS_DIR)
            if value is None and "default" in vf:
                value = text_of(vf["default"])
            if value is None:
                attempt.phase = "Error"
                attempt.message = f"output parameter {p['name']!r}: no file at {vf.get('path')}"
                return
            node.outputs[p["name"]] = value
        _, error = keep_artifacts(t, node.name, outputs_dir, OUTPUTS_DIR, self.opts.run_dir)
        if error:
            attempt.phase, attempt.message = "Error", error

    def _pod_spec(
        self,
        node: Node,
        t: Mapping[str, Any],
        body: Mapping[str, Any],
        attempt_no: int,
        outputs_dir: Path,
        chaos: bool,
    ) -> PodSpec:
        where = f"template {t['name']}"
        mounts: dict[str, Path] = {OUTPUTS_DIR: outputs_dir}
        volumes = {**self.claims, **self._volume_dirs(t.get("volumes") or [], safe_name(node.name))}
        for vm in body.get("volumeMounts") or []:
            if vm["name"] not in volumes:
                raise ExprError(f"{where}: volumeMount {vm['name']!r} names no volume")
            mounts[vm["mountPath"]] = volumes[vm["name"]] / (vm.get("subPath") or "")
        env = dict(self.opts.base_env)
        pod_env: dict[str, str] = {}  # the manifest's env as written, for the image runtime
        for e in body.get("env") or []:
            if "valueFrom" in e:
                if e["name"] in self.opts.secrets:
                    env[e["name"]] = pod_env[e["name"]] = self.opts.secrets[e["name"]]
                else:
                    env.pop(e["name"], None)  # optional and not set: unset, as Kubernetes does
            else:
                pod_env[e["name"]] = text_of(e.get("value", ""))
                env[e["name"]] = map_mounts(pod_env[e["name"]], mounts)
        env["SWEEPYARD_OUTPUTS"] = str(outputs_dir)
        overrides = {k: v for k, v in self.opts.overrides.items() if k in LOCAL_OVERRIDES}
        env.update(overrides)
        pod_env.update(overrides)
        command = list(body.get("command") or [])
        args = list(body.get("args") or [])
        if not command:
            raise ExprError(f"{where}: no command (a local run cannot use the image's entrypoint)")
        if "source" in body:
            script = self.opts.run_dir / "scripts" / f"{safe_name(node.name)}-{attempt_no}"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(str(body["source"]))
            script.chmod(0o755)
            if self.opts.image is not None:
                mounts[SCRIPT_IN_POD] = script
            command.append(SCRIPT_IN_POD if self.opts.image is not None else str(script))
        preempt_after = None
        draw = chaos_draw(self.opts.seed, node.name, attempt_no) if chaos else None
        if draw is not None and draw[0] < self.opts.chaos:
            window = self.opts.chaos_window
            if window is None:  # adapt to how long a trial attempt has taken so far
                seen = self.train_durations
                window = max(1.0, sum(seen) / len(seen)) if seen else DEFAULT_CHAOS_WINDOW
            preempt_after = (0.1 + 0.8 * draw[1]) * window
        grace, deadline = grace_seconds(t, self.spec), deadline_seconds(t, where)
        if self.opts.image is not None:
            return self.opts.image.pod_spec(
                [*command, *args], pod_env, mounts, grace, deadline, preempt_after
            )
        return PodSpec(
            argv=local_argv(command, args),
            env=env,
            cwd=self.opts.cwd,
            grace=grace,
            deadline=deadline,
            preempt_after=preempt_after,
        )

    def _volume_dirs(self, volumes: list[Mapping[str, Any]], owner: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for v in volumes:
            if "persistentVolumeClaim" in v:
                claim = str(v["persistentVolumeClaim"]["claimName"])
                out[v["name"]] = self.opts.shared_root / claim
            else:
                out[v["name"]] = self.opts.run_dir / "emptydir" / owner / v["name"]
            out[v["name"]].mkdir(parents=True, exist_ok=True)
        return out


def backoff_seconds(backoff: Mapping[str, Any], key: str, where: str) -> float:
    """``retryStrategy.backoff.<key>`` in seconds, read as Argo reads it (whole seconds or a Go
    duration: :func:`components.durations.parse_seconds_or_duration`); 0 when absent."""
    value = backoff.get(key)
    if value is None or value == "":
        return 0.0
    try:
        return parse_seconds_or_duration(str(value))
    except ValueError as e:
        raise ExprError(f"{where}.retryStrategy.backoff.{key}: {e}") from e
