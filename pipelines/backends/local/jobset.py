"""A ``resource`` template that creates a JobSet, run here as a gang of local process groups.

On a cluster the trial step of a multi-node trial creates a JobSet (kubernetes-sigs/jobset) and
Argo watches its ``status.terminalState``. Here each pod of the JobSet becomes a local "node": a
process group of its one container's command (:mod:`pipelines.backends.local.pod`), all started
together. The JobSet's semantics that a sweep relies on are kept:

* a pod that fails fails its Job, and the JobSet deletes every pod (SIGTERM, SIGKILL after the
  grace period) before it restarts the gang or fails;
* the Job's ``podFailurePolicy`` turns the pod's failure into the Job's failure reason and message,
  worded as Kubernetes words them, and the JobSet's ``failurePolicy.rules`` then pick the action
  (``FailJobSet``, ``RestartJobSet`` counted against ``maxRestarts``,
  ``RestartJobSetAndIgnoreMaxRestarts``); no policy: the first failure fails the JobSet;
* a local preemption (``CHAOS``) kills one node's processes as a lost spot node does: the pod
  gets the ``DisruptionTarget`` condition.

One machine has one network namespace, so the pods' DNS names (``<jobset>-<job>-<i>-<j>.<subdomain>``)
resolve to 127.0.0.1 and the rendezvous port a manifest names is replaced by a free one per launch.
What this runner does not model is an error naming the field (indexed Jobs with ``backoffLimit: 0``
and one container per pod are what it runs).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from pipelines.argo.expr import ExprError, eval_value
from pipelines.argo.tags import substitute
from pipelines.argo.vocab import NodePhase
from pipelines.backends.local.chaos import Chaos
from pipelines.backends.local.jobset_policy import (
    JOBSET_API,
    JOBSET_CONDITIONS,
    GangPod,
    JobFailure,
    failure_action,
    job_failure,
)
from pipelines.backends.local.pod import Attempt, ProcessTable
from pipelines.backends.local.pods import PodBuilder
from pipelines.backends.local.records import Node, safe_name
from pipelines.backends.local.state import RunState

__all__ = ["JOBSET_CONDITIONS", "JobSetRunner"]

PORT_ENV = ("SWEEPYARD_MASTER_PORT", "MASTER_PORT")


class _GangTable(ProcessTable):
    """The gang's process groups, also registered with the run's table (Ctrl-C stops them)."""

    def __init__(self, parent: ProcessTable) -> None:
        super().__init__()
        self.parent = parent

    def add(self, proc: Any) -> None:
        super().add(proc)
        self.parent.add(proc)

    def remove(self, proc: Any) -> None:
        super().remove(proc)
        self.parent.remove(proc)


@dataclass(frozen=True)
class _Host:
    """One pod of the set before it runs: its name, Job, completion index and Job spec."""

    name: str
    job: str
    index: int
    spec: Mapping[str, Any]  # the Job's spec


class JobSetRunner:
    """Runs ``resource`` templates whose manifest is a JobSet, as a gang of local pods.

    Args:
        state: the run's shared state (phases, stop flag, pod slots, variables).
        builder: makes each pod of the gang with the run's launcher.
        chaos: the run's preemption injection (kills one pod of a launch).
    """

    def __init__(self, state: RunState, builder: PodBuilder, chaos: Chaos):
        self.state = state
        self.builder = builder
        self.chaos = chaos

    def run(self, node: Node, t: Mapping[str, Any]) -> None:
        """Launch the set until it completes, or its failure policy (or the run) ends it."""
        where = f"template {t['name']}.resource"
        self.state.set_phase(node, NodePhase.RUNNING)
        restarts = 0  # counted towards maxRestarts
        launch = 0
        while True:
            manifest = self._manifest(node, t, launch, where)
            policy = (manifest.get("spec") or {}).get("failurePolicy")
            failure = self._launch(node, t, manifest, launch, where)
            if failure is None:
                self.state.set_phase(node, NodePhase.SUCCEEDED)
                return
            if self.state.stopping.is_set():
                self.state.set_phase(node, NodePhase.FAILED, f"stopped: {self.state.stop_reason}")
                return
            action, rule = failure_action(policy, failure)
            counted = action == "RestartJobSet"
            if counted:
                restarts += 1
            limit = int((policy or {}).get("maxRestarts") or 0)
            ended = action == "FailJobSet" or (counted and restarts > limit)
            node.attempts[-1].message = f"{failure.reason}: {failure.message}; {action}" + (
                f" (rule {rule})" if rule else ""
            )
            if ended:
                why = "maxRestarts reached" if action != "FailJobSet" else f"rule {rule or '-'}"
                self.state.set_phase(
                    node,
                    NodePhase.FAILED,
                    f"JobSet failed ({why}): {failure.reason}: {failure.message}",
                )
                return
            launch += 1
            self.state.set_phase(
                node, NodePhase.RUNNING, f"JobSet restarted after {failure.reason}"
            )

    # ------------------------------------------------------------------------------- one launch

    def _manifest(
        self, node: Node, t: Mapping[str, Any], launch: int, where: str
    ) -> dict[str, Any]:
        res = t["resource"]
        if res.get("action") != "create":
            raise ExprError(f"{where}.action: {res.get('action')!r}: only create runs locally")
        for key, expected in JOBSET_CONDITIONS.items():
            if res.get(key) != expected:
                raise ExprError(f"{where}.{key}: locally a JobSet is watched with {expected!r}")
        values = self.state.pod_vars(node, launch)
        text = substitute(
            str(res.get("manifest") or ""),
            values.get,
            f"{where}.manifest",
            lambda expression: eval_value(expression, values, f"{where}.manifest"),
        )
        try:
            manifest = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ExprError(f"{where}.manifest: not YAML after substitution: {e}") from e
        if not isinstance(manifest, dict) or (manifest.get("apiVersion"), manifest.get("kind")) != (
            JOBSET_API,
            "JobSet",
        ):
            raise ExprError(f"{where}.manifest: only a {JOBSET_API} JobSet runs locally")
        return manifest

    def _launch(
        self,
        node: Node,
        t: Mapping[str, Any],
        manifest: Mapping[str, Any],
        launch: int,
        where: str,
    ) -> JobFailure | None:
        """Run every pod of the set once; None when all succeeded, else the first Job failure."""
        state = self.state
        log = state.opts.run_dir / "logs" / f"{safe_name(node.name)}-{launch}.log"
        summary = Attempt(index=launch, log=log)
        node.attempts.append(summary)
        gang = self._gang(node, t, manifest, launch, where)
        summary.log = gang[0].attempt.log  # the first pod hosts rank 0: its log is the trial's
        state.take_pod_slot(node)  # one slot for the gang: it is one step of the workflow
        try:
            if state.stopping.is_set():
                summary.phase, summary.message = NodePhase.FAILED, f"not run: {state.stop_reason}"
                summary.finished = time.time()
                return JobFailure("Stopped", state.stop_reason, gang[0])
            summary.started = time.time()
            first = self._run_gang(gang)
        finally:
            state.release_pod_slot()
        summary.finished = time.time()
        lead = first.pod.attempt if first else gang[0].attempt
        summary.exit_code, summary.preempted = (
            lead.exit_code,
            any(p.attempt.preempted for p in gang),
        )
        node.exit_code = summary.exit_code
        if first is None:
            summary.phase = NodePhase.SUCCEEDED
            self.chaos.record(t["name"], summary.finished - summary.started)
            return None
        summary.phase = NodePhase.ERROR if summary.preempted else NodePhase.FAILED
        summary.message = f"{first.reason}: {first.message}"
        return first

    def _gang(
        self,
        node: Node,
        t: Mapping[str, Any],
        manifest: Mapping[str, Any],
        launch: int,
        where: str,
    ) -> list[GangPod]:
        """Every pod of the set for this launch, with its env rewritten for one machine."""
        name = str((manifest.get("metadata") or {}).get("name") or node.name)
        spec = manifest.get("spec") or {}
        subdomain = str((spec.get("network") or {}).get("subdomain") or name)
        hosts = _hosts(name, spec, where)
        local = {f"{h.name}.{subdomain}": "127.0.0.1" for h in hosts}
        local.update({h.name: "127.0.0.1" for h in hosts})
        rewrite = _EnvRewrite(local, str(_free_port()), launch, where)
        victim = self.chaos.victim(t["name"], node.name, launch, len(hosts))
        gang = []
        for k, host in enumerate(hosts):
            preempt_after = victim[1] if victim and victim[0] == k else None
            gang.append(self._gang_pod(node, t, host, k, launch, rewrite, preempt_after))
        return gang

    def _gang_pod(
        self,
        node: Node,
        t: Mapping[str, Any],
        host: _Host,
        k: int,
        launch: int,
        rewrite: _EnvRewrite,
        preempt_after: float | None,
    ) -> GangPod:
        """Pod ``k`` of the gang: its one container as a local pod of the run."""
        where = rewrite.where
        pod_spec = (host.spec.get("template") or {}).get("spec") or {}
        containers = pod_spec.get("containers") or []
        if len(containers) != 1:
            raise ExprError(f"{where}.manifest: a JobSet pod runs one container locally")
        body = dict(containers[0])
        body["env"] = rewrite.env(body.get("env") or [], host)
        pod_template = {
            "name": t["name"],
            "volumes": pod_spec.get("volumes") or [],
            "podSpecPatch": {
                "terminationGracePeriodSeconds": pod_spec.get("terminationGracePeriodSeconds", 30)
            },
        }
        run_dir = self.state.opts.run_dir
        outputs = run_dir / "outputs" / f"{safe_name(node.name)}-{launch}-{k}"
        outputs.mkdir(parents=True, exist_ok=True)
        spec_k = self.builder.pod_spec(node, pod_template, body, launch, outputs, None)
        spec_k.preempt_after = preempt_after
        log = run_dir / "logs" / f"{safe_name(node.name)}-{launch}-{host.name}.log"
        return GangPod(
            host=f"{self.state.namespace}/{host.name}",
            job=host.job,
            index=host.index,
            spec=spec_k,
            attempt=Attempt(index=launch, log=log),
            container=str(body.get("name") or ""),
            policy=((host.spec.get("podFailurePolicy") or {}).get("rules")) or [],
        )

    def _run_gang(self, gang: list[GangPod]) -> JobFailure | None:
        """Start every pod; on the first failure delete the rest (the JobSet's Recreate)."""
        table = _GangTable(self.state.table)
        gang_stop = threading.Event()
        done: list[GangPod] = []
        changed = threading.Condition()
        launcher = self.builder.launcher

        def run(pod: GangPod) -> None:
            try:
                launcher.launch(pod.spec, pod.attempt, table, gang_stop)
            finally:
                with changed:
                    done.append(pod)
                    changed.notify_all()

        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in gang]
        for th in threads:
            th.start()
        first: GangPod | None = None
        with changed:
            while first is None and not self.state.stopping.is_set():
                first = next((p for p in done if p.attempt.phase != NodePhase.SUCCEEDED), None)
                if len(done) == len(gang):
                    break
                changed.wait(0.5)
        if first is not None or self.state.stopping.is_set():
            gang_stop.set()
            grace = max(p.spec.grace for p in gang)
            table.stop_all(grace)
        for th in threads:
            th.join()
        if first is None:
            return None
        return job_failure(first)


def _hosts(name: str, spec: Mapping[str, Any], where: str) -> list[_Host]:
    """The set's pods in order: each replicated Job's replicas, each with ``parallelism`` pods.

    Raises:
        ExprError: a Job whose ``backoffLimit`` is not 0, or no pods at all.
    """
    hosts = []
    for r, rjob in enumerate(spec.get("replicatedJobs") or []):
        at = f"{where}.manifest.spec.replicatedJobs[{r}]"
        job = (rjob.get("template") or {}).get("spec") or {}
        if int(job.get("backoffLimit", 6)) != 0:
            raise ExprError(
                f"{at}.template.spec.backoffLimit: locally a lost pod restarts the "
                "whole gang, so it must be 0"
            )
        pods = int(job.get("parallelism", 1))
        for j in range(int(rjob.get("replicas", 1))):
            for i in range(pods):
                hosts.append(_Host(f"{name}-{rjob['name']}-{j}-{i}", f"{rjob['name']}-{j}", i, job))
    if not hosts:
        raise ExprError(f"{where}.manifest.spec.replicatedJobs: no pods")
    return hosts


@dataclass(frozen=True)
class _EnvRewrite:
    """A gang pod's env on one machine: the pods' DNS names are 127.0.0.1, the rendezvous port
    a free one, the downward-API fields this launch's, plus the Job's index and hostname."""

    local: Mapping[str, str]  # a pod's DNS name -> 127.0.0.1
    port: str
    launch: int
    where: str

    def env(self, entries: list[Mapping[str, Any]], host: _Host) -> list[dict[str, Any]]:
        env = []
        for e in entries:
            e = dict(e)
            if "fieldRef" in (e.get("valueFrom") or {}):
                path = str(e["valueFrom"]["fieldRef"].get("fieldPath"))
                e = {"name": e["name"], "value": _field(path, host.name, self.launch, self.where)}
            if "value" in e:
                value = str(e["value"])
                e["value"] = self.port if e["name"] in PORT_ENV else self.local.get(value, value)
            env.append(e)
        env.append({"name": "JOB_COMPLETION_INDEX", "value": str(host.index)})
        env.append({"name": "HOSTNAME", "value": host.name})
        return env


def _field(path: str, host: str, launch: int, where: str) -> str:
    """The downward-API fields a JobSet pod reads here: its name, and JobSet's restart count."""
    if path == "metadata.name":
        return host
    if path == "metadata.annotations['jobset.sigs.k8s.io/restart-attempt']":
        return str(launch)
    raise ExprError(f"{where}.manifest: env fieldRef {path!r} is not available locally")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
