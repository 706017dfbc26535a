"""How the sweep searches: ``spec.algorithm`` (hyperband included), ``spec.earlyStopping`` and the
budgets, and the config's ``search`` section they make with the objective and the space."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipelines.importers.katib.common import INTEGER, Context
from pipelines.importers.katib.params import Param

# Katib algorithm -> sweepyard search.algorithm (hyperband also brings ASHA early stopping)
ALGORITHMS = {
    "random": "random",
    "grid": "grid",
    "tpe": "tpe",
    "multivariate-tpe": "tpe",
    "cmaes": "cmaes",
    "bayesianoptimization": "gp",
    "sobol": "qmc",
    "hyperband": "tpe",
}
REFUSED_ALGORITHMS = {
    "pbt": "population based training (trials that copy and mutate each other's checkpoints) has "
    "no sweepyard equivalent",
    "enas": "neural architecture search is not supported",
    "darts": "neural architecture search is not supported",
}
SEED_SETTINGS = ("random_state", "seed")
DEFAULT_PARALLEL = 3  # Katib's default parallelTrialCount
DEFAULT_START_STEP = 4  # Katib's medianstop default


def algorithm(ctx: Context, algo: Any) -> tuple[str, int | None, dict[str, str]]:
    """Katib's algorithm name, the seed, and its settings (by name)."""
    path = "spec.algorithm"
    if not isinstance(algo, Mapping):
        ctx.refuse(path, "required: the search algorithm")
        return "random", None, {}
    for key in sorted(set(algo) - {"algorithmName", "algorithmSettings"}):
        ctx.refuse(f"{path}.{key}", "not a field of a Katib algorithm")
    name = algo.get("algorithmName")
    if name in REFUSED_ALGORITHMS:
        ctx.refuse(f"{path}.algorithmName", f"{name}: {REFUSED_ALGORITHMS[name]}")
    elif name not in ALGORITHMS:
        ctx.refuse(
            f"{path}.algorithmName",
            f"unknown algorithm {name!r} (these map: {', '.join(sorted(ALGORITHMS))})",
        )
    settings, seed = _settings(ctx, algo.get("algorithmSettings") or [], name)
    if seed is not None and name == "grid":
        ctx.note(f"{path}.algorithmSettings", "the seed is dropped: the grid runs every point")
    if name == "multivariate-tpe":
        ctx.note(
            f"{path}.algorithmName",
            "multivariate-tpe is sweepyard's tpe, which samples each param on its own",
        )
    return str(name), seed, settings


def _settings(ctx: Context, raw: Any, name: Any) -> tuple[dict[str, str], int | None]:
    """The algorithm's settings by name and the seed among them; those of algorithm ``name`` that
    nothing maps are noted as dropped."""
    path = "spec.algorithm.algorithmSettings"
    if not isinstance(raw, list):
        ctx.refuse(path, "must be a list of {name, value}")
        raw = []
    settings: dict[str, str] = {}
    seed: int | None = None
    for i, s in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(s, Mapping) or not isinstance(s.get("name"), str):
            ctx.refuse(where, "a setting is {name, value}")
            continue
        key, value = s["name"], str(s.get("value", ""))
        settings[key] = value
        if key in SEED_SETTINGS:
            if INTEGER.match(value):
                seed = int(value)
            else:
                ctx.refuse(f"{where}.value", f"{key} must be an integer, got {value!r}")
        elif name == "hyperband" and key in ("resource_name", "eta", "r_l"):
            continue  # _hyperband maps these
        elif name in ALGORITHMS:
            ctx.note(
                where,
                f"{key}={value} dropped: sweepyard runs {ALGORITHMS[name]} with Optuna's defaults",
            )
    return settings, seed


def stopping(
    ctx: Context,
    spec: Mapping[str, Any],
    method: str,
    settings: Mapping[str, str],
    params: list[Param],
) -> tuple[dict[str, Any] | None, tuple[str, Any] | None]:
    """``search.early_stopping`` (None: none), and hyperband's resource parameter with the value
    it is fixed at (None: not hyperband, or refused)."""
    if method != "hyperband":
        return early_stopping(ctx, spec.get("earlyStopping"), method), None
    early, resource = _hyperband(ctx, settings, params)
    if spec.get("earlyStopping") is not None:
        ctx.refuse("spec.earlyStopping", "hyperband stops trials early already (as ASHA): drop one")
    return early, resource


def _hyperband(
    ctx: Context, settings: Mapping[str, str], params: list[Param]
) -> tuple[dict[str, Any] | None, tuple[str, Any] | None]:
    """Hyperband -> TPE with ASHA: eta is the reduction factor, the smallest bracket's budget
    ASHA's min_step, and the resource param is fixed at r_l (each trial's full budget).
    Returns the early stopping and ``(resource's Katib name, its fixed value)``."""
    path = "spec.algorithm.algorithmSettings"
    name = settings.get("resource_name")
    resource = next((p for p in params if p.katib == name), None)
    if resource is None:
        ctx.refuse(path, f"hyperband's resource_name {name!r} must name a parameter")
    try:
        r_l = float(settings.get("r_l", ""))
    except ValueError:
        r_l = math.nan
    if not (math.isfinite(r_l) and r_l > 0):
        ctx.refuse(path, f"hyperband's r_l must be a positive number, got {settings.get('r_l')!r}")
        return None, None
    eta_text = settings.get("eta", "3")
    try:
        eta = float(eta_text)
    except ValueError:
        eta = math.nan
    if not (math.isfinite(eta) and eta >= 2 and eta == int(eta)):
        ctx.refuse(
            path,
            f"hyperband's eta {eta_text!r} cannot be ASHA's reduction factor (a whole number >= 2)",
        )
        return None, None
    if resource is None:
        return None, None
    if resource.type == "int" and r_l != int(r_l):
        ctx.refuse(path, f"hyperband's r_l {r_l} must be whole: {name} is an int parameter")
        return None, None
    s_max = int(math.log(r_l) / math.log(eta))
    min_step = max(1, int(r_l * eta**-s_max))
    budget: Any = int(r_l) if resource.type == "int" or r_l == int(r_l) else r_l
    ctx.note(
        "spec.algorithm.algorithmName",
        f"hyperband is tpe with ASHA early stopping (reduction_factor {int(eta)} from eta, "
        f"min_step {min_step}: Katib's smallest bracket, in reported steps); {resource.name} "
        f"is fixed at r_l = {budget}, each trial's full budget",
    )
    early = {"rule": "asha", "min_step": min_step, "reduction_factor": int(eta)}
    return early, (resource.katib, budget)


def early_stopping(ctx: Context, es: Any, method: str) -> dict[str, Any] | None:
    """``search.early_stopping`` of ``spec.earlyStopping`` (medianstop only) under Katib's
    algorithm ``method``; None: none, or refused."""
    path = "spec.earlyStopping"
    if es is None:
        return None
    if not isinstance(es, Mapping):
        ctx.refuse(path, "must be {algorithmName, algorithmSettings}")
        return None
    for key in sorted(set(es) - {"algorithmName", "algorithmSettings"}):
        ctx.refuse(f"{path}.{key}", "not a field of Katib's early stopping")
    name = es.get("algorithmName")
    if name != "medianstop":
        ctx.refuse(f"{path}.algorithmName", f"only medianstop maps (to median), not {name!r}")
        return None
    if ALGORITHMS.get(method) in ("random", "grid"):
        ctx.refuse(
            f"{path}.algorithmName",
            f"sweepyard stops trials early only in an adaptive search (tpe, cmaes, gp, qmc); "
            f"spec.algorithm is {method}",
        )
    start = DEFAULT_START_STEP
    for i, s in enumerate(es.get("algorithmSettings") or []):
        where = f"{path}.algorithmSettings[{i}]"
        key = s.get("name") if isinstance(s, Mapping) else None
        value = str(s.get("value", "")) if isinstance(s, Mapping) else ""
        if key == "start_step" and INTEGER.match(value) and int(value) >= 1:
            start = int(value)
        elif key == "min_trials_required":
            ctx.note(
                where,
                f"min_trials_required={value} dropped: the median rule starts once Optuna's "
                "MedianPruner has 5 finished trials",
            )
        else:
            ctx.refuse(where, f"unknown or invalid medianstop setting {key}={value!r}")
    return {"rule": "median", "warmup_steps": start}


def budgets(
    ctx: Context, spec: Mapping[str, Any], method: str
) -> tuple[int | None, int | None, int]:
    """``maxTrialCount``, ``maxFailedTrialCount`` (None: not given) and ``parallelTrialCount``
    (Katib's default when not given)."""
    max_trials = _count(ctx, spec, "maxTrialCount", 1, 10_000)
    if max_trials is None and "maxTrialCount" not in spec and method != "grid":
        ctx.refuse(
            "spec.maxTrialCount",
            "required: sweepyard needs a trial budget (Katib would run until the goal)",
        )
    max_failed = _count(ctx, spec, "maxFailedTrialCount", 0, 10_000)
    parallel = _count(ctx, spec, "parallelTrialCount", 1, 1000)
    return max_trials, max_failed, DEFAULT_PARALLEL if parallel is None else parallel


def _count(ctx: Context, spec: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        ctx.refuse(f"spec.{key}", f"must be a whole number in [{low}, {high}], got {value!r}")
        return None
    return value


def section(
    objective: dict[str, str],
    method: str,
    max_trials: int | None,
    max_failed: int | None,
    seed: int | None,
    early: dict[str, Any] | None,
    space: dict[str, Any],
) -> dict[str, Any]:
    """The config's ``search``; ``method`` is sweepyard's algorithm (the seed is kept only where
    the algorithm itself samples: grid has none, random's is in its space)."""
    search: dict[str, Any] = {
        "objective": objective,
        "algorithm": method,
        "max_trials": max_trials,
        "max_failed_trials": max_failed,
    }
    if method not in ("grid", "random") and seed is not None:
        search["seed"] = seed
    if early is not None:
        search["early_stopping"] = early
    search["space"] = space
    return search
