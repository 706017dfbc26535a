"""What a local run shows while it runs: a live rich table on a terminal, plain lines otherwise.

Trial details come from the files the components write on the shared disk
(``sweeps/<sweep>/trials/<trial>/result.json``, ``metrics.jsonl`` when the trainer keeps one), never
from importing the components.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from components import contract
from components.search.pod_queue import slot_trials
from pipelines.argo.vocab import FAILED, NodePhase
from pipelines.backends.local.records import Node, read_json, trial_templates
from pipelines.backends.local.report import failure_reason, planned_elsewhere, trial_record
from pipelines.backends.local.state import RunState

__all__ = ["Progress", "read_json", "trial_dir", "trial_metric"]

PHASE_STYLE = {
    NodePhase.SUCCEEDED: "green",
    NodePhase.FAILED: "red",
    NodePhase.ERROR: "magenta",
    NodePhase.RUNNING: "cyan",
    NodePhase.PENDING: "dim",
    NodePhase.OMITTED: "dim",
    NodePhase.SKIPPED: "dim",
}


def trial_dir(shared_dirs: Iterable[Path], sweep_id: str, trial_id: str) -> Path | None:
    """The trial's folder on whichever local claim folder holds it."""
    for root in shared_dirs:
        d = contract.trial_dir(root, sweep_id, trial_id)
        if d.is_dir():
            return d
    return None


def trial_metric(folder: Path | None) -> str:
    """``val_loss=0.1234`` from result.json (done, pruned) or the last line of metrics.jsonl (running)."""
    if folder is None:
        return ""
    result = read_json(folder / contract.RESULT_FILE)
    if result:
        obj = result.get("objective") or {}
        if obj.get("value") is not None:
            text = f"{obj.get('metric')}={_num(obj['value'])}"
            if result.get("status") == "pruned":  # an intermediate value: say where it was cut
                text += f" (pruned @ step {result.get('pruned_at_step', result.get('step'))})"
            return text
        if result.get("status") == "failed":
            return f"failed: {str(result.get('error') or '')[:40]}"
    try:
        lines = (folder / contract.METRICS_FILE).read_text().strip().splitlines()
        last = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return ""
    shown = [f"{k}={_num(v)}" for k, v in last.items() if isinstance(v, int | float)]
    return " ".join(shown[:3])


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Progress:
    """Renders the run's pods: a rich ``Live`` table on a TTY, one line per change otherwise."""

    def __init__(self, state: RunState, sweep_id: str, *, stream: IO[str] | None = None):
        self.state = state
        self.sweep_id = sweep_id
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.console = Console(
            file=self.stream, force_terminal=self.tty or None, width=None if self.tty else 160
        )
        self.seen: dict[int, tuple[str, int]] = {}
        self.announced: set[tuple[int, int]] = set()
        self.live: Live | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.fanout_templates = trial_templates(state.templates.values())
        self.earlier_announced = False

    def start(self) -> None:
        if self.tty:
            self.live = Live(
                self.table(), console=self.console, refresh_per_second=2, transient=True
            )
            self.live.start()
            self._thread = threading.Thread(target=self._refresh, daemon=True)
            self._thread.start()
            self.state.listeners.append(self.on_preempted)
        else:
            self.state.listeners.append(self.on_change)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.live is not None:
            self.live.update(self.table())
            self.live.stop()

    def _refresh(self) -> None:
        while not self._stop.wait(0.5):
            if self.live is not None:
                self.live.update(self.table())

    def on_preempted(self, node: Node) -> None:
        """One line when the backend has preempted an attempt of ``node``."""
        last = node.attempts[-1] if node.attempts else None
        if last is None or not last.preempted or (id(node), last.index) in self.announced:
            return
        self.announced.add((id(node), last.index))
        trial = node.inputs.get("trial-id")
        elapsed = time.time() - self.state.started
        self.console.print(
            f"[{elapsed:7.1f}s] {node.name} preempted: attempt {last.index + 1}"
            + (f" of trial {trial}" if trial else "")
            + f" got SIGTERM at {last.finished and last.finished - last.started or 0:.1f}s"
            + f" (exit {last.exit_code}); Argo retries it",
            markup=False,
            highlight=False,
        )

    def on_change(self, node: Node) -> None:
        if not self.earlier_announced:
            self.announce_earlier()
        if node.kind != "Pod" or not node.attempts:
            return
        self.on_preempted(node)
        key = (node.phase, len(node.attempts))
        with self._lock:
            if self.seen.get(id(node)) == key:
                return
            self.seen[id(node)] = key
            elapsed = time.time() - self.state.started
            trials = self.trials_of(node)
            trial = ", ".join(trials)
            phase = node.phase
            done = trials and phase == NodePhase.SUCCEEDED
            detail = self.metric(trials[-1]) if done else ""
            if done and all(self.record(t)["skipped"] for t in trials):
                phase, detail = (
                    NodePhase.SKIPPED,
                    f"done in an earlier run; {detail}",
                )  # as the table
            bits = [f"[{elapsed:7.1f}s]", f"{node.name:<24}", f"{phase:<9}"]
            if node.attempts:
                bits.append(f"attempt {len(node.attempts)}")
            if trial:
                bits.append(f"trial {trial}")
            last = node.attempts[-1] if node.attempts else None
            if node.done and last is not None and last.exit_code is not None:
                bits.append(f"exit {last.exit_code}")
            if node.done and node.message:
                bits.append(node.message)
            bits.append(detail)
            print(" ".join(b for b in bits if b), file=self.stream, flush=True)

    def is_fanout(self, node: Node) -> bool:
        """Whether ``node`` is a fan-out of trials (a group, or Skipped: no items) that has begun."""
        return (
            node.template in self.fanout_templates
            and node.kind in ("TaskGroup", "Skipped")
            and node.phase != NodePhase.PENDING
        )

    def earlier(self) -> list[str]:
        """The planned trials no step of this run got, once the first fan-out has handed out its
        items: those the plan left out, finished in an earlier run (they start no process)."""
        fanout = next((n for n in list(self.state.nodes) if self.is_fanout(n)), None)
        if fanout is None or not all(k.inputs or k.done for k in list(fanout.children)):
            return []
        given = [n.inputs.get("trial-id", "") for n in list(self.state.nodes) if n.kind == "Pod"]
        return [
            t
            for t in planned_elsewhere(self.state.claims.values(), self.sweep_id, given)
            if self.record(t)["skipped"]
        ]

    def announce_earlier(self) -> None:
        """Plain output: one ``Skipped`` line per trial the plan left out (said once)."""
        with self._lock:
            earlier = [] if self.earlier_announced else self.earlier()
            fanout = next((n for n in list(self.state.nodes) if self.is_fanout(n)), None)
            if fanout is None or not all(k.inputs or k.done for k in list(fanout.children)):
                return  # not yet: the fan-out's items are not all handed out
            self.earlier_announced = True
            elapsed = time.time() - self.state.started
            for trial in earlier:
                bits = [f"[{elapsed:7.1f}s]", f"{'(not run)':<24}", f"{'Skipped':<9}"]
                bits += [f"trial {trial}", f"done in an earlier run; {self.metric(trial)}"]
                print(" ".join(bits), file=self.stream, flush=True)

    def metric(self, trial: str) -> str:
        return trial_metric(trial_dir(self.state.claims.values(), self.sweep_id, trial))

    def trials_of(self, node: Node) -> list[str]:
        """The trials a pod runs: its ``trial-id``, or those its slot claimed when it runs several
        in turn (``search.trials_per_pod``: its ``trial-id`` is the slot's)."""
        claimed = slot_trials(list(self.state.claims.values()), self.sweep_id,
                              node.inputs.get("params"))  # fmt: skip
        trial = node.inputs.get("trial-id", "")
        return claimed or ([trial] if trial else [])

    def record(self, trial: str) -> dict[str, Any]:
        folder = trial_dir(self.state.claims.values(), self.sweep_id, trial)
        return trial_record(folder, self.state.started)

    def table(self, title: str | None = None) -> Table:
        """Every step of the run so far: trial, state, attempt, preemptions, last metric.

        A trial's preemptions are its own record's (the leaderboard's, MLflow's, the digest's); a
        failed step shows the last error line of its log.
        """
        e = self.state
        elapsed = (e.finished or time.time()) - e.started
        table = Table(title=title or f"{e.name}  {e.status}  {elapsed:.0f}s", title_justify="left")
        for col in ("step", "trial", "state", "attempt", "preempted", "exit", "metric / message"):
            table.add_column(col)
        earlier = self.earlier()
        for node in list(e.nodes):
            if earlier and self.is_fanout(node):  # where the fan-out is: the trials it left out
                for trial in earlier:
                    rec = self.record(trial)
                    table.add_row(
                        "(not run)",
                        trial,
                        f"[{PHASE_STYLE[NodePhase.SKIPPED]}]{NodePhase.SKIPPED}[/]",
                        "",
                        str(rec["preemptions"]) if rec["preemptions"] else "",
                        "",
                        escape(f"done in an earlier run; {self.metric(trial)}"),
                    )
                earlier = []
            if node.kind != "Pod":
                continue
            trials = self.trials_of(node)
            trial = ", ".join(trials) or node.inputs.get("trial-id", "")
            last = node.attempts[-1] if node.attempts else None
            detail = self.metric(trials[-1]) if trials else ""
            phase = node.phase
            preempted = node.preemptions
            if trials:
                records = [self.record(t) for t in trials]
                preempted = sum(r["preemptions"] for r in records)
                if all(r["skipped"] for r in records) and phase == NodePhase.SUCCEEDED:
                    phase = NodePhase.SKIPPED
                    detail = f"done in an earlier run; {detail}"
            if node.phase in FAILED:
                detail = failure_reason(node.message, [a.to_dict() for a in node.attempts])[:120]
            table.add_row(
                escape(node.name),
                trial,
                f"[{PHASE_STYLE.get(phase, '')}]{phase}[/]",
                str(len(node.attempts)) if node.attempts else "",
                str(preempted) if preempted else "",
                "" if last is None or last.exit_code is None else str(last.exit_code),
                escape(detail),
            )
        return table

    def summary(self, logs: Path) -> None:
        """The final table and one line: status, wall time, preemptions, why it failed, logs."""
        e = self.state
        self.console.print(self.table(title=f"{e.name}: {e.status}"))
        pods = [n for n in e.nodes if n.kind == "Pod"]
        preempted = sum(
            sum(self.record(t)["preemptions"] for t in trials)
            if (trials := self.trials_of(n))
            else n.preemptions
            for n in pods
        )
        failed = [n for n in pods if n.phase in FAILED]
        wall = (e.finished or time.time()) - e.started
        line = f"workflow {e.name} {e.status} in {wall:.1f}s: {len(pods)} steps, {preempted} preemptions"
        if failed:
            line += f", failed: {', '.join(n.name for n in failed[:10])}"
        if e.stop_reason:
            line += f" ({e.stop_reason})"
        self.console.print(line, markup=False, highlight=False)
        for n in failed[:5]:
            reason = failure_reason(n.message, [a.to_dict() for a in n.attempts])
            self.console.print(f"  {n.name}: {reason}", markup=False, highlight=False)
        self.console.print(f"logs: {logs}")
