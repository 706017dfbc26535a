"""A container or script step with its retries: attempts, the retry strategy, backoff, outputs.

:class:`PodRunner` is the part of a local run between "what runs when" (the engine) and "how one
attempt's pod runs" (a :class:`~pipelines.backends.local.launcher.PodLauncher`); whether an attempt
is retried is decided by the pure functions of :mod:`.retry_policy`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.argo.expr import ExprError, eval_expr, eval_value
from pipelines.argo.tags import deep_substitute, substitute
from pipelines.argo.vocab import NodePhase
from pipelines.backends.local.artifacts import keep_artifacts
from pipelines.backends.local.chaos import Chaos
from pipelines.backends.local.pod import Attempt, PodSpec, read_output
from pipelines.backends.local.pods import PodBuilder
from pipelines.backends.local.records import Node, safe_name, text_of
from pipelines.backends.local.retry_policy import (
    Outcome,
    RetryStrategy,
    Verdict,
    backoff_seconds,
    decide_retry,
    policy_retries,
)
from pipelines.backends.local.state import RunState
from pipelines.build.steps import OUTPUTS_DIR

__all__ = ["PodRunner", "attempt_outcome", "backoff_seconds"]


def attempt_outcome(attempt: Attempt) -> Outcome:
    """How an attempt ended, for the retry policy.

    Locally every ``Error`` that reaches a retry decision counts as transient (a preempted pod, or
    an output the step did not write), as the local runner has always treated it; Argo would
    match the message against its transient-error patterns.
    """
    if attempt.phase == NodePhase.SUCCEEDED:
        return Outcome.SUCCEEDED
    return Outcome.FAILED if attempt.phase == NodePhase.FAILED else Outcome.TRANSIENT_ERROR


class PodRunner:
    """Runs container and script templates to their end, retrying as their strategy says.

    Args:
        state: the run's shared state (phases, stop flag, pod slots, variables).
        builder: makes each attempt's pod with the run's launcher.
        chaos: the run's preemption injection.
    """

    def __init__(self, state: RunState, builder: PodBuilder, chaos: Chaos):
        self.state = state
        self.builder = builder
        self.chaos = chaos

    def run(self, node: Node, t: Mapping[str, Any]) -> None:
        """Attempts until one succeeds, the strategy stops retrying, or the run stops."""
        strategy = RetryStrategy.of(t)
        self.state.set_phase(node, NodePhase.RUNNING)
        first_start = time.time()
        while True:
            retries = len(node.attempts)
            self._attempt(node, t, retries)
            last = node.attempts[-1]
            node.exit_code = last.exit_code
            setup_error = last.exit_code is None and not last.preempted
            if last.phase == NodePhase.SUCCEEDED or self.state.stopping.is_set() or setup_error:
                self.state.set_phase(node, last.phase, last.message)
                return
            verdict, wait = self._decide(node, t, strategy, retries, first_start)
            if verdict is not Verdict.RETRY:
                self.state.set_phase(node, last.phase, _why(verdict, last, strategy))
                return
            self.state.set_phase(node, NodePhase.RUNNING, f"retrying after {last.phase}")
            if self.state.stopping.wait(wait):
                self.state.set_phase(
                    node, NodePhase.FAILED, f"not retried: {self.state.stop_reason}"
                )
                return

    def _decide(
        self,
        node: Node,
        t: Mapping[str, Any],
        strategy: RetryStrategy,
        retries: int,
        first_start: float,
    ) -> tuple[Verdict, float]:
        """The verdict on the last attempt, and the backoff wait before the next one."""
        last = node.attempts[-1]
        outcome = attempt_outcome(last)
        expression = None
        if strategy.expression is not None and policy_retries(strategy.policy, outcome):
            expression = self._expression(node, t, strategy.expression, retries)
        verdict = decide_retry(
            strategy.policy, outcome, retries=retries, limit=strategy.limit, expression=expression
        )
        if verdict is not Verdict.RETRY:
            return verdict, 0.0
        wait = strategy.backoff.wait(retries, self.state.opts.backoff_scale)
        if strategy.backoff.exceeded(time.time() + wait - first_start):
            return Verdict.MAX_DURATION, wait
        return verdict, wait

    def _expression(self, node: Node, t: Mapping[str, Any], text: str, retries: int) -> bool:
        """``retryStrategy.expression`` over ``lastRetry.*`` and the pod's variables."""
        where = f"template {t['name']}"
        last = node.attempts[-1]
        expr = substitute(text, self.state.pod_vars(node, retries).get, f"{where} expression")
        names = {
            "lastRetry.exitCode": str(last.exit_code if last.exit_code is not None else -1),
            "lastRetry.status": str(last.phase),
            "lastRetry.message": last.message,
            "lastRetry.duration": str(int((last.finished or time.time()) - last.started)),
        }
        return eval_expr(expr, names, f"{where}.retryStrategy.expression")

    # --- one attempt -------------------------------------------------------------------------------

    def _attempt(self, node: Node, t: Mapping[str, Any], attempt_no: int) -> None:
        """Run one attempt of ``node``; appends it to ``node.attempts`` with how it ended."""
        run_dir = self.state.opts.run_dir
        log = run_dir / "logs" / f"{safe_name(node.name)}-{attempt_no}.log"
        attempt = Attempt(index=attempt_no, log=log)
        outputs_dir = run_dir / "outputs" / f"{safe_name(node.name)}-{attempt_no}"
        outputs_dir.mkdir(parents=True, exist_ok=True)
        try:
            spec = self._pod_spec(node, t, attempt_no, outputs_dir)
        except ExprError as e:
            attempt.phase, attempt.message = NodePhase.ERROR, str(e)
            attempt.finished = time.time()
            node.attempts.append(attempt)
            return
        stdout = self._launch(node, spec, attempt)
        if stdout is None or attempt.phase != NodePhase.SUCCEEDED:
            return
        if attempt.finished:
            self.chaos.record(t["name"], attempt.finished - attempt.started)
        node.result = stdout.rstrip("\n")
        self._collect_outputs(node, t, attempt, outputs_dir)

    def _pod_spec(
        self, node: Node, t: Mapping[str, Any], attempt_no: int, outputs_dir: Path
    ) -> PodSpec:
        """The attempt's pod: the template's body substituted, with any injected preemption."""
        where = f"template {t['name']}"
        values = self.state.pod_vars(node, attempt_no)
        body = deep_substitute(
            t.get("container") or t["script"],
            values.get,
            where,
            lambda expression: eval_value(expression, values, where),
        )
        preempt_after = self.chaos.preempt_after(t["name"], node.name, attempt_no)
        return self.builder.pod_spec(node, t, body, attempt_no, outputs_dir, preempt_after)

    def _launch(self, node: Node, spec: PodSpec, attempt: Attempt) -> str | None:
        """Run the attempt in one of the workflow's pod slots; its stdout (None: not run)."""
        state = self.state
        state.take_pod_slot(node)
        try:
            if state.stopping.is_set():
                attempt.phase, attempt.message = NodePhase.FAILED, f"not run: {state.stop_reason}"
                attempt.finished = time.time()
                node.attempts.append(attempt)
                return None
            attempt.started = time.time()
            node.attempts.append(attempt)
            state.set_phase(node, NodePhase.RUNNING)
            return self.builder.launcher.launch(spec, attempt, state.table, state.stopping)
        finally:
            state.release_pod_slot()

    def _collect_outputs(
        self, node: Node, t: Mapping[str, Any], attempt: Attempt, outputs_dir: Path
    ) -> None:
        """The output parameters and artifacts of a succeeded attempt (a missing one: Error)."""
        for p in (t.get("outputs") or {}).get("parameters") or []:
            vf = p.get("valueFrom") or {}
            value = read_output(str(vf.get("path", "")), outputs_dir, OUTPUTS_DIR)
            if value is None and "default" in vf:
                value = text_of(vf["default"])
            if value is None:
                attempt.phase = NodePhase.ERROR
                attempt.message = f"output parameter {p['name']!r}: no file at {vf.get('path')}"
                return
            node.outputs[p["name"]] = value
        run_dir = self.state.opts.run_dir
        _, error = keep_artifacts(t, node.name, outputs_dir, OUTPUTS_DIR, run_dir)
        if error:
            attempt.phase, attempt.message = NodePhase.ERROR, error


def _why(verdict: Verdict, last: Attempt, strategy: RetryStrategy) -> str:
    """The node's message when its last attempt is not retried (Argo's wording)."""
    said = last.message or str(last.phase)
    if verdict is Verdict.POLICY:
        return f"{said}; retryPolicy {strategy.policy} does not retry it"
    if verdict is Verdict.EXPRESSION:
        return f"{said}; retryStrategy.expression evaluated to false"
    if verdict is Verdict.MAX_DURATION:
        return f"{said}; max duration limit exceeded"
    return said + ("; no more retries left" if strategy.present else "")
