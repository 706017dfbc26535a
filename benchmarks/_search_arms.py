"""The trials and the five arms of bench_search (grid, TPE+ASHA, TPE+ASHA with worker reuse, batched
and sequential TPE) and one seed's run of them. Not a benchmark: `make bench` runs
benchmarks/bench_*.py only.

Each arm also has its **makespan** in trial-steps: what the sweep's wall time is on dedicated
GPUs, where a trial-step costs the same everywhere (the critical path of the schedule pods would
run): the grid, its trials taken in turn by ``parallelism`` pods; TPE without reuse, per round
the longest trial (a pod per trial, the round waits for its slowest); TPE with reuse
(``search.trials_per_pod = k``), per round the pod whose claimed trials add up to the most steps;
sequential TPE, the sum. Pods' start-up (imports, connections) is not in it: reuse pays it once
per pod, not per trial, so the figure is conservative for reuse.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._search_env import quiet

OBJECTIVE = "val_loss"
TRAINER = "components.trainers.digits:train"

# full-batch training (batch_size above the 1,437 training rows): each trainer seed is one
# deterministic landscape both searches explore, not a draw of minibatch noise that a best-of-18
# grid would win by luck
GRID: dict[str, list[Any]] = {
    "lr": [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016],
    "hidden": [32, 64, 128],
}
FIXED = {"batch_size": 2048}


@dataclass
class Arm:
    """One search on one seed: its best complete trial and the trial-steps it spent."""

    best: float
    steps: int
    trials: int
    pruned: int
    seconds: float
    makespan: int = 0  # trial-steps on the critical path of the pods' schedule (module docstring)


@dataclass
class Setup:
    """What every arm of one run shares."""

    shared: Path
    data: Path
    steps: int
    eval_every: int
    trials: int
    parallelism: int
    min_step: int
    reduction_factor: int
    asha_trials: int
    trials_per_pod: int = 3  # the reuse arm's search.trials_per_pod
    grid: Mapping[str, Sequence[Any]] = field(default_factory=lambda: GRID)

    def fixed(self, seed: int) -> dict[str, Any]:
        return {**FIXED, "steps": self.steps, "eval_every": self.eval_every, "seed": seed}


# --------------------------------------------------------------------------- trials


class Turns:
    """The trials of a round report in turn (round robin), as pods at the same speed would.

    Deterministic: which values the pruner has seen at each report does not depend on thread
    timing. A trial that ends leaves the ring.
    """

    def __init__(self, n: int) -> None:
        self._cond = threading.Condition()
        self._ring = list(range(n))
        self._pos = 0
        self.arrived = [threading.Event() for _ in range(n)]

    def wait(self, i: int) -> None:
        self.arrived[i].set()
        with self._cond:
            self._cond.wait_for(lambda: self._ring[self._pos % len(self._ring)] == i)

    def done(self, i: int) -> None:
        with self._cond:
            self._pos = (self._ring.index(i) + 1) % len(self._ring)
            self._cond.notify_all()

    def leave(self, i: int) -> None:
        self.arrived[i].set()
        with self._cond:
            if i not in self._ring:
                return
            current = self._ring[self._pos % len(self._ring)]
            at = self._ring.index(i)
            self._ring.remove(i)
            if self._ring:
                self._pos = at % len(self._ring) if current == i else self._ring.index(current)
            self._cond.notify_all()


class InTurn:
    """A pruner whose reports wait for the trial's turn (wraps the study pruner run_trial built)."""

    def __init__(self, inner: Any, turns: Turns, i: int) -> None:
        self.inner, self.turns, self.i, self.metric = inner, turns, i, inner.metric

    def report(self, step: int, value: float) -> bool:
        self.turns.wait(self.i)
        try:
            return bool(self.inner.report(step, value))
        finally:
            self.turns.done(self.i)

    def pruned_at(self) -> int | None:
        return self.inner.pruned_at()  # type: ignore[no-any-return]


def run_one(
    setup: Setup,
    sweep_id: str,
    params: dict[str, Any],
    *,
    pruner: dict[str, Any] | None = None,
    turns: tuple[Turns, int] | None = None,
    leave: bool = True,
) -> dict[str, Any]:
    """One trial through the supervisor's function-trainer path; its ``result.json`` (``leave``:
    its turn leaves the ring when it ends; a pod's slot stays for its next trial)."""
    from components.contract import trial_id
    from components.runtime.function_trainer import function_trainer
    from components.runtime.trial import StopSignal
    from components.runtime.trial_run import TrialSpec, run_trial

    train, validate = function_trainer(TRAINER)
    if turns is not None:
        inner = train

        def train(spec: Any, harness: Any, attempt: Any) -> tuple[int, dict[str, float]]:
            if harness.pruner is not None:
                harness.pruner = InTurn(harness.pruner, *turns)
            return inner(spec, harness, attempt)

    tid = trial_id(params)
    spec = TrialSpec(
        sweep_id=sweep_id, trial_id=tid, params=params, data=setup.data, data_hash="digits",
        objective=OBJECTIVE, checkpoint_interval=1e9, flush_timeout=1.0, device="cpu",
        pruner=pruner,
    )  # fmt: skip
    try:
        code = run_trial(spec, StopSignal(), train, validate)
    finally:
        if turns is not None and leave:
            turns[0].leave(turns[1])
    path = setup.shared / "sweeps" / sweep_id / "trials" / tid / "result.json"
    result: dict[str, Any] = json.loads(path.read_text())
    if code != 0 or result.get("status") not in ("done", "pruned"):
        raise SystemExit(f"{sweep_id}: trial {tid} {params} ended {code}: {result.get('error')}")
    return result


def run_round(
    setup: Setup, sweep_id: str, round_params: Sequence[dict[str, Any]], pruner: dict[str, Any]
) -> None:
    """A round's trials at once, one thread each, reporting in turn; started one by one so each
    builds its model (seeded from the global RNG) alone."""
    turns = Turns(len(round_params))
    errors: list[BaseException] = []

    def target(i: int, params: dict[str, Any]) -> None:
        try:
            run_one(setup, sweep_id, params, pruner=pruner, turns=(turns, i))
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    threads = []
    for i, params in enumerate(round_params):
        t = threading.Thread(target=target, args=(i, params), name=f"{sweep_id}-{i}")
        t.start()
        turns.arrived[i].wait()  # at its first report (or ended): the next may initialise
        threads.append(t)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def run_pods(
    setup: Setup,
    sweep_id: str,
    round_params: Sequence[dict[str, Any]],
    pruner: dict[str, Any],
    pods: int,
) -> list[list[str]]:
    """A round as ``pods`` pods run it with worker reuse: each pod claims the round's next trial
    when its last one ended (pruned or complete) and runs it in the same thread; the pods report
    in turn as in :func:`run_round` (a slot keeps its place in the ring between its trials, and
    claims and builds its next model in its turn, alone). Returns each pod's trial ids in order."""
    from components.contract import trial_id

    turns = Turns(pods)
    claimed: list[list[str]] = [[] for _ in range(pods)]
    queue = list(round_params)
    errors: list[BaseException] = []

    def pod(slot: int) -> None:
        try:
            while True:
                turns.wait(slot)  # the claim and the model's initialisation happen in turn
                if not queue or errors:
                    turns.leave(slot)
                    return
                params = queue.pop(0)
                claimed[slot].append(trial_id(params))
                run_one(setup, sweep_id, params, pruner=pruner, turns=(turns, slot), leave=False)
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)
            turns.leave(slot)

    threads = [
        threading.Thread(target=pod, args=(slot,), name=f"{sweep_id}-pod{slot}")
        for slot in range(pods)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return claimed


def steps_run(setup: Setup, sweep_id: str, tid: str) -> int:
    """The steps a trial ran (``result.json``'s ``steps_run``)."""
    path = setup.shared / "sweeps" / sweep_id / "trials" / tid / "result.json"
    return int(json.loads(path.read_text())["steps_run"])


def list_schedule(lengths: Sequence[int], pods: int) -> int:
    """The makespan of ``lengths`` taken in order by ``pods`` pods, each the next when free."""
    free = [0] * max(1, pods)
    for n in lengths:
        at = free.index(min(free))
        free[at] += n
    return max(free)


def summarise(setup: Setup, sweep_id: str, seconds: float, makespan: int = 0) -> Arm:
    from components.compute_saved import compute_saved

    results = [
        json.loads(p.read_text())
        for p in sorted((setup.shared / "sweeps" / sweep_id / "trials").glob("*/result.json"))
    ]
    done = [r["objective"]["value"] for r in results if r["status"] == "done"]
    saved = compute_saved(results)
    if not done or saved is None:
        raise SystemExit(f"{sweep_id}: no complete trial")
    return Arm(min(done), saved.run, len(results), saved.pruned, seconds, makespan)


# --------------------------------------------------------------------------- the four arms


def grid_arm(setup: Setup, seed: int) -> Arm:
    from components.space import SearchSpace

    sweep_id = f"grid-{seed}"
    started = time.perf_counter()
    space = SearchSpace.model_validate(
        {"grid": {k: list(v) for k, v in setup.grid.items()}, "fixed": setup.fixed(seed)}
    )
    lengths = []
    for params in space.expand():
        lengths.append(int(run_one(setup, sweep_id, params)["steps_run"]))
    makespan = list_schedule(lengths, setup.parallelism)
    return summarise(setup, sweep_id, time.perf_counter() - started, makespan)


def tpe_space(setup: Setup, seed: int) -> Any:
    """The grid's box as distributions: lr log-uniform over its range, the others its lists."""
    from components.space import SearchSpace

    lrs = setup.grid["lr"]
    return SearchSpace.model_validate(
        {
            "grid": {k: list(v) for k, v in setup.grid.items() if k != "lr"},
            "random": {"n_trials": 1, "params": {"lr": {"loguniform": [min(lrs), max(lrs)]}}},
            "fixed": setup.fixed(seed),
        }
    )


def adaptive_arm(setup: Setup, seed: int, *, asha: bool, per_pod: int = 1) -> Arm:
    """TPE in rounds of ``parallelism * per_pod`` through the project's suggest step (and ASHA
    pruning); ``per_pod`` > 1: each round run by ``parallelism`` pods claiming its trials in turn
    (worker reuse, :func:`run_pods`)."""
    from components.contract import trial_id
    from components.search.rounds import suggest_round
    from components.search.study import default_storage, open_study

    kind = ("asha" if asha else "batched") + (f"-reuse{per_pod}" if per_pod > 1 else "")
    sweep_id = f"{kind}-{seed}"
    trials = setup.asha_trials if asha else setup.trials
    storage = default_storage(sweep_id)  # sweeps/<id>/study.journal on the shared folder
    Path(storage).parent.mkdir(parents=True, exist_ok=True)  # as the suggest step finds it
    early = (
        {"rule": "asha", "metric": OBJECTIVE, "min_step": setup.min_step,
         "reduction_factor": setup.reduction_factor}
        if asha else None
    )  # fmt: skip
    started = time.perf_counter()
    pruner = {"storage": storage, "study": sweep_id, **early} if early else None
    space = tpe_space(setup, seed)
    makespan = 0
    while True:  # each round opens the study afresh, as each suggest step (a new pod) does
        study = open_study(
            storage, study_name=sweep_id, algorithm="tpe", direction="minimize", seed=seed,
            early_stopping=early,
        )  # fmt: skip
        batch = suggest_round(study, space, batch=setup.parallelism * per_pod,
                              max_trials=trials, sweep_id=sweep_id)  # fmt: skip
        if not batch:
            break
        if per_pod > 1 and pruner is not None:
            pods = run_pods(setup, sweep_id, batch, pruner, min(setup.parallelism, len(batch)))
            makespan += max(sum(steps_run(setup, sweep_id, t) for t in p) for p in pods)
            continue
        if pruner is None:
            for params in batch:
                run_one(setup, sweep_id, params)
        else:
            run_round(setup, sweep_id, batch, pruner)
        makespan += max(steps_run(setup, sweep_id, trial_id(p)) for p in batch)
    return summarise(setup, sweep_id, time.perf_counter() - started, makespan)


def sequential_arm(setup: Setup, seed: int) -> Arm:
    """Optuna's own sequential ``study.optimize`` (default TPESampler), same space and trainer."""
    import optuna

    sweep_id = f"sequential-{seed}"
    lrs, fixed = setup.grid["lr"], setup.fixed(seed)

    def objective(trial: optuna.Trial) -> float:
        params = {
            **fixed,
            "lr": trial.suggest_float("lr", min(lrs), max(lrs), log=True),
            **{k: trial.suggest_categorical(k, list(v)) for k, v in setup.grid.items() if k != "lr"},
        }  # fmt: skip
        result = run_one(setup, sweep_id, params)
        lengths.append(int(result["steps_run"]))
        return float(result["objective"]["value"])

    lengths: list[int] = []
    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=setup.trials)
    return summarise(setup, sweep_id, time.perf_counter() - started, sum(lengths))


# --------------------------------------------------------------------------- the run

ARMS: dict[str, Callable[[Setup, int], Arm]] = {
    "grid": grid_arm,
    "tpe+asha": lambda s, seed: adaptive_arm(s, seed, asha=True),
    "tpe+asha+reuse": lambda s, seed: adaptive_arm(s, seed, asha=True, per_pod=s.trials_per_pod),
    "tpe batched": lambda s, seed: adaptive_arm(s, seed, asha=False),
    "tpe sequential": sequential_arm,
}


def run_seed(setup: Setup, seed: int) -> dict[str, Arm]:
    """Every arm on one seed, in an order that alternates with the seed (in a worker process,
    which inherits the environment: the shared folder, no tracking server)."""
    quiet()
    names = list(ARMS) if seed % 2 == 0 else list(reversed(ARMS))
    return {name: ARMS[name](setup, seed) for name in names}
