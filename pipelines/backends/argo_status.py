"""What ``make status`` prints for an Argo workflow: its phase and one line per trial."""

from __future__ import annotations

from dataclasses import dataclass

from hera.workflows.models import NodeStatus, Workflow

from pipelines.argo.vocab import NodePhase

TRIAL_TEMPLATE = "train"


@dataclass(frozen=True)
class TrialState:
    """One trial of a workflow: its id, phase, pod attempts so far and the last message."""

    trial_id: str
    phase: str
    attempts: int
    message: str


def trial_states(wf: Workflow) -> list[TrialState]:
    """The trials (nodes of the ``train`` template) of a workflow, in start order.

    A retried template shows up as one ``Retry`` node whose children are the pod attempts;
    without a retry strategy the pod nodes themselves are the trials.
    """
    nodes: dict[str, NodeStatus] = dict((wf.status.nodes if wf.status else None) or {})
    train = [n for n in nodes.values() if n.template_name == TRIAL_TEMPLATE]
    retry_nodes = [n for n in train if n.type == "Retry"]
    trials = retry_nodes or [n for n in train if n.type == "Pod"]
    trials.sort(key=lambda n: (n.started_at.root.isoformat() if n.started_at else "", n.id))
    out = []
    for n in trials:
        params = (n.inputs.parameters if n.inputs else None) or []
        trial_id = next((str(p.value) for p in params if p.name == "trial-id"), n.display_name)
        attempts = len(n.children or []) if n.type == "Retry" else 1
        out.append(
            TrialState(str(trial_id), str(n.phase or NodePhase.PENDING), attempts, n.message or "")
        )
    return out


def format_status(wf: Workflow, *, link: str) -> str:
    """The workflow's phase, progress and one line per trial."""
    st = wf.status
    phase = (st.phase if st else None) or NodePhase.PENDING
    lines = [
        f"workflow {wf.metadata.name} ({phase}), progress {(st.progress if st else '') or '-'}"
    ]
    if st and st.message:
        lines.append(f"  {st.message}")
    lines.append(f"  {link}")
    trials = trial_states(wf)
    if not trials:
        lines.append("no trials yet (plan and fetch run first)")
        return "\n".join(lines)
    lines.append(f"{'TRIAL':<14} {'PHASE':<10} {'ATTEMPTS':>8}  MESSAGE")
    for t in trials:
        lines.append(f"{t.trial_id:<14} {t.phase:<10} {t.attempts:>8}  {t.message}".rstrip())
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.phase] = counts.get(t.phase, 0) + 1
    summary = ", ".join(f"{n} {p}" for p, n in sorted(counts.items()))
    lines.append(f"{len(trials)} trials: {summary}")
    return "\n".join(lines)
