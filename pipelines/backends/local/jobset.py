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

import random
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import yaml

from pipelines.argo.expr import ExprError, eval_value
from pipelines.argo.tags import substitute
from pipelines.backends.local.jobset_policy import GangPod, JobFailure, failure_action, job_failure
from pipelines.backends.local.model import Node, safe_name
from pipelines.backends.local.pod import Attempt, PodSpec, ProcessTable, run_attempt
from pipelines.backends.local.slots import OrderedSlots

__all__ = ["JOBSET_CONDITIONS", "JobSetRunner"]

JOBSET_API = "jobset.x-k8s.io/v1alpha2"
# the conditions a sweep's resource template watches (status.terminalState is a plain string)
JOBSET_CONDITIONS = {
    "successCondition": "status.terminalState == Completed",
    "failureCondition": "status.terminalState == Failed",
}
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


class JobSetRunner:
    """Runs ``resource`` templates whose manifest is a JobSet; a mixin of the local engine."""

    name: str
    namespace: str
    opts: Any
    spec: dict[str, Any]
    pods: OrderedSlots | None
    table: ProcessTable
    stopping: threading.Event
    stop_reason: str
    train_durations: list[float]
    chaos_templates: set[str]

    def set_phase(self, node: Node, phase: str, message: str = "") -> None:
        raise NotImplementedError

    def _pod_vars(self, node: Node, attempt_no: int) -> dict[str, str]:
        raise NotImplementedError

    def take_pod_slot(self, node: Node) -> None:
        raise NotImplementedError

    def _pod_spec(self, *args: Any) -> PodSpec:
        raise NotImplementedError

    def _resource(self, node: Node, t: Mapping[str, Any]) -> None:
        where = f"template {t['name']}.resource"
        self.set_phase(node, "Running")
        restarts = 0  # counted towards maxRestarts
        launch = 0
        while True:
            manifest = self._manifest(node, t, launch, where)
            policy = (manifest.get("spec") or {}).get("failurePolicy")
            failure = self._launch(node, t, manifest, launch, where)
            if failure is None:
                self.set_phase(node, "Succeeded")
                return
            if self.stopping.is_set():
                self.set_phase(node, "Failed", f"stopped: {self.stop_reason}")
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
                self.set_phase(
                    node, "Failed", f"JobSet failed ({why}): {failure.reason}: {failure.message}"
                )
                return
            launch += 1
            self.set_phase(node, "Running", f"JobSet restarted after {failure.reason}")

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
        values = self._pod_vars(node, launch)
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
        log = self.opts.run_dir / "logs" / f"{safe_name(node.name)}-{launch}.log"
        summary = Attempt(index=launch, log=log)
        node.attempts.append(summary)
        gang = self._gang(node, t, manifest, launch, where)
        summary.log = gang[0].attempt.log  # the first pod hosts rank 0: its log is the trial's
        self.take_pod_slot(node)  # one slot for the gang: it is one step of the workflow
        try:
            if self.stopping.is_set():
                summary.phase, summary.message = "Failed", f"not run: {self.stop_reason}"
                summary.finished = time.time()
                return JobFailure("Stopped", self.stop_reason, gang[0])
            summary.started = time.time()
            first = self._run_gang(gang, manifest)
        finally:
            if self.pods is not None:
                self.pods.release()
        summary.finished = time.time()
        lead = first.pod.attempt if first else gang[0].attempt
        summary.exit_code, summary.preempted = (
            lead.exit_code,
            any(p.attempt.preempted for p in gang),
        )
        node.exit_code = summary.exit_code
        if first is None:
            summary.phase = "Succeeded"
            if t["name"] in self.chaos_templates:
                self.train_durations.append(summary.finished - summary.started)
            return None
        summary.phase = "Error" if summary.preempted else "Failed"
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
        name = str((manifest.get("metadata") or {}).get("name") or node.name)
        spec = manifest.get("spec") or {}
        subdomain = str((spec.get("network") or {}).get("subdomain") or name)
        hosts: list[tuple[str, str, int, Mapping[str, Any], Mapping[str, Any]]] = []
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
                    hosts.append(
                        (f"{name}-{rjob['name']}-{j}-{i}", f"{rjob['name']}-{j}", i, job, {})
                    )
        if not hosts:
            raise ExprError(f"{where}.manifest.spec.replicatedJobs: no pods")
        local = {f"{h[0]}.{subdomain}": "127.0.0.1" for h in hosts}
        local.update({h[0]: "127.0.0.1" for h in hosts})
        port = str(_free_port())
        victim = self._victim(node, t, launch, len(hosts))
        gang = []
        for k, (host, job_name, index, job, _) in enumerate(hosts):
            pod_spec = (job.get("template") or {}).get("spec") or {}
            containers = pod_spec.get("containers") or []
            if len(containers) != 1:
                raise ExprError(f"{where}.manifest: a JobSet pod runs one container locally")
            body = dict(containers[0])
            env = []
            for e in body.get("env") or []:
                e = dict(e)
                if "fieldRef" in (e.get("valueFrom") or {}):
                    path = str(e["valueFrom"]["fieldRef"].get("fieldPath"))
                    e = {"name": e["name"], "value": _field(path, host, launch, where)}
                if "value" in e:
                    value = str(e["value"])
                    e["value"] = port if e["name"] in PORT_ENV else local.get(value, value)
                env.append(e)
            env.append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
            env.append({"name": "HOSTNAME", "value": host})
            body["env"] = env
            pod_template = {
                "name": t["name"],
                "volumes": pod_spec.get("volumes") or [],
                "podSpecPatch": {
                    "terminationGracePeriodSeconds": pod_spec.get(
                        "terminationGracePeriodSeconds", 30
                    )
                },
            }
            outputs = self.opts.run_dir / "outputs" / f"{safe_name(node.name)}-{launch}-{k}"
            outputs.mkdir(parents=True, exist_ok=True)
            spec_k = self._pod_spec(node, pod_template, body, launch, outputs, False)
            spec_k.preempt_after = victim[1] if victim and victim[0] == k else None
            log = self.opts.run_dir / "logs" / f"{safe_name(node.name)}-{launch}-{host}.log"
            failure_rules = ((job.get("podFailurePolicy") or {}).get("rules")) or []
            gang.append(
                GangPod(
                    host=f"{self.namespace}/{host}",
                    job=job_name,
                    index=index,
                    spec=spec_k,
                    attempt=Attempt(index=launch, log=log),
                    container=str(body.get("name") or ""),
                    policy=failure_rules,
                )
            )
        return gang

    def _victim(
        self, node: Node, t: Mapping[str, Any], launch: int, pods: int
    ) -> tuple[int, float] | None:
        """The pod a local preemption kills in this launch, and when (None: no preemption)."""
        if t["name"] not in self.chaos_templates or not self.opts.chaos:
            return None
        from pipelines.backends.local.retry import DEFAULT_CHAOS_WINDOW, chaos_draw

        draw = chaos_draw(self.opts.seed, node.name, launch)
        if draw[0] >= self.opts.chaos:
            return None
        window = self.opts.chaos_window
        if window is None:
            seen = self.train_durations
            window = max(1.0, sum(seen) / len(seen)) if seen else DEFAULT_CHAOS_WINDOW
        which = random.Random(f"{draw[0]}:{draw[1]}").randrange(pods)
        return which, (0.1 + 0.8 * draw[1]) * window

    def _run_gang(self, gang: list[GangPod], manifest: Mapping[str, Any]) -> JobFailure | None:
        """Start every pod; on the first failure delete the rest (the JobSet's Recreate)."""
        table = _GangTable(self.table)
        gang_stop = threading.Event()
        done: list[GangPod] = []
        changed = threading.Condition()

        def run(pod: GangPod) -> None:
            try:
                run_attempt(pod.spec, pod.attempt, table, gang_stop)
            finally:
                with changed:
                    done.append(pod)
                    changed.notify_all()

        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in gang]
        for th in threads:
            th.start()
        first: GangPod | None = None
        with changed:
            while first is None and not self.stopping.is_set():
                first = next((p for p in done if p.attempt.phase != "Succeeded"), None)
                if len(done) == len(gang):
                    break
                changed.wait(0.5)
        if first is not None or self.stopping.is_set():
            gang_stop.set()
            grace = max(p.spec.grace for p in gang)
            table.stop_all(grace)
        for th in threads:
            th.join()
        if first is None:
            return None
        return job_failure(first)


def resource_problems(t: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    """Why a ``resource`` template cannot run here (checked before anything runs): locally a
    resource template creates a JobSet and waits for its terminal state, nothing else."""
    from pipelines.validate.crds import parse_manifest

    res = t.get("resource") or {}
    why = []
    if res.get("action") != "create":
        why.append(f"action {res.get('action')!r}: only create runs locally")
    for key, expected in JOBSET_CONDITIONS.items():
        if res.get(key) != expected:
            why.append(f"{key} must be {expected!r} locally")
    try:
        doc = parse_manifest(str(res.get("manifest") or ""))
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict) or (doc.get("apiVersion"), doc.get("kind")) != (
        JOBSET_API,
        "JobSet",
    ):
        kind = f"{doc.get('apiVersion')} {doc.get('kind')}" if isinstance(doc, dict) else "not YAML"
        why.append(f"only a {JOBSET_API} JobSet runs locally (this manifest: {kind})")
    return [(path, "; ".join(why))] if why else []


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
