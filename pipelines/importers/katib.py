"""A Katib Experiment (``kubeflow.org/v1beta1``) as a sweepyard pipeline config.

:func:`convert` is pure: an Experiment mapping in, the config mapping and notes for the user out
(a renamed param, a dropped setting that does not change what is searched or how a trial is
judged). Every field that cannot map is a ``(Katib field path, why)`` problem; all of them are
collected, then raised together as :class:`KatibImportError`. :func:`import_file` reads the YAML
(exactly one Experiment), converts, validates the result as any config is validated, and writes
``pipelines/<name>.yaml`` atomically, never over an existing file unless asked to.

The mapping, and what is refused and why, is the table in README.md ("Importing a Katib
experiment").
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from components.command import PLACEHOLDER, RESERVED
from components.contract import relative_path_problem
from components.fsio import fsync_dir
from pipelines.config import PIPELINES_DIR, parse_config

API_VERSION = "kubeflow.org/v1beta1"
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
MULTI_NODE_KINDS = frozenset(
    {"PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob", "TrainJob"}
)
DEFAULT_PARALLEL = 3  # Katib's default parallelTrialCount
DEFAULT_FILE = "/var/log/katib/metrics.log"
DEFAULT_TFEVENT_DIR = "/var/log/katib/tfevent/"
DEFAULT_CONDITIONS = {
    "successCondition": 'status.conditions.#(type=="Complete")#|#(status=="True")#',
    "failureCondition": 'status.conditions.#(type=="Failed")#|#(status=="True")#',
}
DEFAULT_START_STEP = 4  # Katib's medianstop default
GPU_RESOURCE = "nvidia.com/gpu"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
SPOT_LABEL = "cloud.google.com/gke-spot"
MAX_APP_ERRORS = 20  # retries.app_errors' bound

SPEC_KEYS = frozenset(
    {
        "parameters",
        "objective",
        "algorithm",
        "earlyStopping",
        "trialTemplate",
        "parallelTrialCount",
        "maxTrialCount",
        "maxFailedTrialCount",
        "metricsCollectorSpec",
        "nasConfig",
        "resumePolicy",
    }
)
# fields a trial's Job, pod or container may carry that only place or decorate it: dropped, noted
DROPPED_JOB = frozenset({"ttlSecondsAfterFinished"})
DROPPED_POD = frozenset(
    {
        "nodeSelector",
        "tolerations",
        "affinity",
        "serviceAccountName",
        "serviceAccount",
        "securityContext",
        "imagePullSecrets",
        "priorityClassName",
        "schedulerName",
        "terminationGracePeriodSeconds",
        "topologySpreadConstraints",
        "dnsPolicy",
        "enableServiceLinks",
    }
)
DROPPED_CONTAINER = frozenset(
    {
        "ports",
        "securityContext",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "terminationMessagePath",
        "terminationMessagePolicy",
    }
)

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
METRIC = re.compile(r"^[A-Za-z0-9_./-]+$")
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$")
TRIAL_PARAM = re.compile(r"\$\{trialParameters\.([^{}]*)\}")
META_REF = re.compile(r"^\$\{trialSpec\.([A-Za-z]+)(?:\[([^\]]+)\])?\}$")
ENV_REF = re.compile(r"\$\$|\$\(([-._A-Za-z][-._A-Za-z0-9]*)\)")  # Kubernetes' $(VAR); $$ escapes
ABS_PATH = re.compile(r"(?<![\w./-])/[\w./-]*")


class KatibImportError(ValueError):
    """An Experiment that cannot become a sweep; ``problems`` are ``(Katib field path, why)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"  {path or '(file)'}: {why}" for path, why in self.problems))


@cache
def default_image() -> str:
    """The repository's default image (``pipelines/sweep.yaml``'s): plan, suggest, compare run in it."""
    doc = yaml.safe_load((PIPELINES_DIR / "sweep.yaml").read_text())
    return str(doc["image"])


def convert(
    doc: Mapping[str, Any], *, image: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The sweepyard config of a Katib Experiment, and notes for the user.

    Args:
        doc: the Experiment, as YAML loads it.
        image: the sweep's image (default: the repository's, ``pipelines/sweep.yaml``'s).

    Raises:
        KatibImportError: every field that cannot map, with its path and why.
    """
    return _Converter(doc, image or default_image()).run()


def import_file(
    path: str | Path,
    out_dir: str | Path = PIPELINES_DIR,
    *,
    force: bool = False,
    image: str | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Convert the Experiment in ``path`` and write ``<out_dir>/<name>.yaml``; its path.

    Nothing is written unless everything succeeded, and then atomically (a temporary file renamed
    into place). ``notes`` (when given) receives the conversion's notes.

    Raises:
        KatibImportError: the file holds no single Experiment, a field cannot map, or the config
            file exists already (and ``force`` is not set).
        ConfigError: the converted config does not validate (a bug of this importer).
    """
    source = Path(path)
    doc = read_experiment(source)
    cfg, found = convert(doc, image=image)
    parse_config(cfg, source=f"{source} (imported)")  # a ConfigError here is the importer's bug
    out = Path(out_dir) / f"{cfg['name']}.yaml"
    if out.exists() and not force:
        raise _exists(out)
    _write(out, render(cfg, found, source=source, doc=doc), replace=force)
    if notes is not None:
        notes.extend(found)
    return out


def read_experiment(path: Path) -> dict[str, Any]:
    """The one Katib Experiment in a YAML file (other documents beside it are ignored).

    Raises:
        KatibImportError: the file cannot be read or parsed, or holds no or several Experiments.
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise KatibImportError([("", f"cannot read {path}: {e.strerror}")]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise KatibImportError(
            [("", f"not valid YAML: {where}{getattr(e, 'problem', e)}")]
        ) from None
    experiments = [d for d in docs if isinstance(d, Mapping) and d.get("kind") == "Experiment"]
    if len(experiments) == 1:
        return dict(experiments[0])
    if not experiments:
        kinds = ", ".join(
            str(d.get("kind")) if isinstance(d, Mapping) else type(d).__name__ for d in docs
        )
        why = f"no Katib Experiment in the file (found: {kinds or 'nothing'})"
        raise KatibImportError([("kind", why)])
    names = ", ".join(str((d.get("metadata") or {}).get("name")) for d in experiments)
    raise KatibImportError(
        [("", f"{len(experiments)} Experiments in one file ({names}): import one file each")]
    )


def render(
    cfg: Mapping[str, Any], notes: list[str], *, source: Path, doc: Mapping[str, Any]
) -> str:
    """The config file's text: a header (where it came from, the notes), then the YAML."""
    meta = doc.get("metadata") or {}
    head = [
        f"# Imported from Katib Experiment {_qualified(meta)} ({source.name}) by `make import`.",
        "# Review it, then `make submit PIPELINE=" + str(cfg["name"]) + "`.",
    ]
    if notes:
        head.append("# Notes from the import:")
        head += [f"#   - {n}" for n in notes]

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    body = yaml.dump(
        dict(cfg),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=None,
        width=100,
        allow_unicode=True,
    )
    return "\n".join(head) + "\n" + body


def _write(path: Path, text: str, *, replace: bool) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it into place
    (``replace``) or link it there only if ``path`` does not exist (never overwriting)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.import-{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _exists(path) from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _exists(path: Path) -> KatibImportError:
    return KatibImportError(
        [("metadata.name", f"{path} exists already: --force (make import FORCE=1) replaces it")]
    )


def _qualified(meta: Mapping[str, Any]) -> str:
    name, namespace = meta.get("name"), meta.get("namespace")
    return f"{namespace}/{name}" if namespace else str(name)


@dataclass
class _Param:
    """One of ``spec.parameters``, checked."""

    path: str  # spec.parameters[i]
    katib: str  # its Katib name
    name: str  # its sweepyard name (an identifier)
    type: str  # double | int | categorical | discrete
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    raw: dict[str, str] = field(default_factory=dict)  # min/max/step as written (exact decimals)
    log: bool = False
    values: list[Any] = field(default_factory=list)


class _Converter:
    def __init__(self, doc: Mapping[str, Any], image: str) -> None:
        self.doc = doc
        self.image = image
        self.problems: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def refuse(self, path: str, why: str) -> None:
        self.problems.append((path, why))

    def note(self, path: str, text: str) -> None:
        self.notes.append(f"{path}: {text}")

    # ---- the whole Experiment -------------------------------------------------------------------

    def run(self) -> tuple[dict[str, Any], list[str]]:
        doc = self.doc
        if not isinstance(doc, Mapping):
            raise KatibImportError([("", f"expected a Katib Experiment, got {type(doc).__name__}")])
        if doc.get("kind") != "Experiment":
            raise KatibImportError([("kind", f"expected Experiment, got {doc.get('kind')!r}")])
        if doc.get("apiVersion") != API_VERSION:
            raise KatibImportError(
                [("apiVersion", f"expected {API_VERSION}, got {doc.get('apiVersion')!r}")]
            )
        meta = _mapping(doc.get("metadata"))
        spec = doc.get("spec")
        if not isinstance(spec, Mapping):
            raise KatibImportError([("spec", "required: the Experiment has no spec")])
        name = self._name(meta)
        for key in sorted(set(spec) - SPEC_KEYS):
            self.refuse(f"spec.{key}", "not a field of a Katib v1beta1 Experiment")
        objective, metrics = self._objective(spec.get("objective"))
        method, seed, settings = self._algorithm(spec.get("algorithm"))
        if spec.get("nasConfig") is not None:  # its parameters and trial are the search's own
            self.refuse("spec.nasConfig", "neural architecture search is not supported")
            raise KatibImportError(self.problems)
        params = self._parameters(spec.get("parameters"))
        early, resource = None, None
        if method == "hyperband":
            early, resource = self._hyperband(settings, params)
            if spec.get("earlyStopping") is not None:
                self.refuse(
                    "spec.earlyStopping", "hyperband stops trials early already (as ASHA): drop one"
                )
        else:
            early = self._early_stopping(spec.get("earlyStopping"), method)
        max_trials, max_failed, parallel = self._budgets(spec, method)
        sweep_method = ALGORITHMS.get(method, "random")  # a refused algorithm: checks as random
        space, max_trials = self._space(params, sweep_method, max_trials, seed, resource)
        if max_failed is None and max_trials is not None:
            max_failed = max_trials  # Katib without maxFailedTrialCount: failures never end it
        trainer, resources, retries = self._trial(spec.get("trialTemplate"), params)
        trainer["command"], collect = self._collector(
            spec.get("metricsCollectorSpec"), trainer["command"]
        )
        self._resume_policy(spec.get("resumePolicy"))
        if self.problems:
            raise KatibImportError(self.problems)

        search: dict[str, Any] = {
            "objective": objective,
            "algorithm": sweep_method,
            "max_trials": max_trials,
            "max_failed_trials": max_failed,
        }
        if sweep_method not in ("grid", "random") and seed is not None:
            search["seed"] = seed
        if early is not None:
            search["early_stopping"] = early
        search["space"] = space
        cfg: dict[str, Any] = {
            "name": name,
            "description": f"Imported from Katib Experiment {_qualified(meta)}",
            "image": self.image,
            "trainer": {
                "command": trainer["command"],
                "image": trainer["image"],
                "params": [p.name for p in params],
                "metrics": metrics,
                "collect": collect,
            },
            "search": search,
            "parallelism": parallel,
            "resources": resources,
        }
        if retries is not None:
            cfg["retries"] = retries
        cfg["tracking"] = {"model_name": name}
        return cfg, list(self.notes)

    def _name(self, meta: Mapping[str, Any]) -> str:
        raw = meta.get("name")
        if not isinstance(raw, str) or not raw:
            self.refuse("metadata.name", "required: the Experiment's name names the pipeline")
            return "unnamed"
        name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:40].rstrip("-")
        if not DNS_LABEL.match(name):
            self.refuse("metadata.name", f"{raw!r} does not make a pipeline name (a DNS label)")
        elif name != raw:
            self.note("metadata.name", f"{raw!r} is the pipeline {name!r} (a DNS label, <= 40)")
        return name

    def _resume_policy(self, policy: Any) -> None:
        if policy in (None, "", "Never"):
            return
        if policy in ("LongRunning", "FromVolume"):
            self.note(
                "spec.resumePolicy",
                f"{policy} dropped: any sweep resumes with `make submit SWEEP_ID=<id>` (its study "
                "and trials are on the shared disk)",
            )
            return
        self.refuse("spec.resumePolicy", f"unknown resume policy {policy!r}")

    # ---- objective, algorithm, early stopping, budgets ------------------------------------------

    def _objective(self, obj: Any) -> tuple[dict[str, str], list[str]]:
        path = "spec.objective"
        if not isinstance(obj, Mapping):
            self.refuse(path, "required: what to optimise")
            return {"metric": "objective", "direction": "minimize"}, ["objective"]
        known = {"type", "goal", "objectiveMetricName", "additionalMetricNames", "metricStrategies"}
        for key in sorted(set(obj) - known):
            self.refuse(f"{path}.{key}", "not a field of a Katib objective")
        direction = obj.get("type")
        if direction not in ("minimize", "maximize"):
            self.refuse(f"{path}.type", f"must be minimize or maximize, got {direction!r}")
            direction = "minimize"
        metric = obj.get("objectiveMetricName")
        if not isinstance(metric, str) or not METRIC.match(metric):
            self.refuse(
                f"{path}.objectiveMetricName",
                f"a metric name must match {METRIC.pattern}, got {metric!r}",
            )
            metric = "objective"
        metrics = [metric]
        extra = obj.get("additionalMetricNames") or []
        if not isinstance(extra, list):
            self.refuse(f"{path}.additionalMetricNames", "must be a list of metric names")
            extra = []
        for i, name in enumerate(extra):
            if not isinstance(name, str) or not METRIC.match(name):
                self.refuse(
                    f"{path}.additionalMetricNames[{i}]",
                    f"a metric name must match {METRIC.pattern}, got {name!r}",
                )
            elif name not in metrics:
                metrics.append(name)
        if obj.get("goal") is not None:
            self.note(
                f"{path}.goal",
                f"{obj['goal']} dropped: sweepyard has no early finish on a goal, so the sweep runs "
                "all max_trials trials (Katib stops once a trial reaches it)",
            )
        self._strategies(obj.get("metricStrategies"), metric, direction, metrics)
        return {"metric": metric, "direction": direction}, metrics

    def _strategies(self, raw: Any, metric: str, direction: str, metrics: list[str]) -> None:
        """Katib ranks a trial by its min, max or latest value (default: the best, min or max);
        sweepyard by the latest it reported."""
        path = "spec.objective.metricStrategies"
        best = "min" if direction == "minimize" else "max"
        chosen, where = best, f"{path} (Katib's default for {direction})"
        if raw is not None and not isinstance(raw, list):
            self.refuse(path, "must be a list of {name, value}")
            raw = []
        for i, s in enumerate(raw or []):
            value = s.get("value") if isinstance(s, Mapping) else None
            name = s.get("name") if isinstance(s, Mapping) else None
            if value not in ("min", "max", "latest"):
                self.refuse(f"{path}[{i}].value", f"must be min, max or latest, got {value!r}")
            elif name == metric:
                chosen, where = value, f"{path}[{i}]"
            elif name in metrics:
                self.note(f"{path}[{i}]", f"{value} dropped: every value of {name} is recorded")
            else:
                self.refuse(f"{path}[{i}].name", f"{name!r} is not a metric of the objective")
        if chosen == "latest":
            return
        if chosen == best:
            self.note(
                where,
                f"Katib ranks a trial by the {chosen} of its {metric} values; sweepyard by the last "
                "one it reports (the same when the program reports once, or improves to its end)",
            )
        else:
            self.refuse(  # only an explicit strategy can be the opposite of the direction
                f"{where}.value",
                f"ranking a {direction} objective by its {chosen} cannot map: sweepyard ranks by "
                "the last value (set it to latest)",
            )

    def _algorithm(self, algo: Any) -> tuple[str, int | None, dict[str, str]]:
        """Katib's algorithm name, the seed, and its settings (by name)."""
        path = "spec.algorithm"
        if not isinstance(algo, Mapping):
            self.refuse(path, "required: the search algorithm")
            return "random", None, {}
        for key in sorted(set(algo) - {"algorithmName", "algorithmSettings"}):
            self.refuse(f"{path}.{key}", "not a field of a Katib algorithm")
        name = algo.get("algorithmName")
        if name in REFUSED_ALGORITHMS:
            self.refuse(f"{path}.algorithmName", f"{name}: {REFUSED_ALGORITHMS[name]}")
        elif name not in ALGORITHMS:
            self.refuse(
                f"{path}.algorithmName",
                f"unknown algorithm {name!r} (these map: {', '.join(sorted(ALGORITHMS))})",
            )
        raw = algo.get("algorithmSettings") or []
        if not isinstance(raw, list):
            self.refuse(f"{path}.algorithmSettings", "must be a list of {name, value}")
            raw = []
        settings: dict[str, str] = {}
        seed: int | None = None
        for i, s in enumerate(raw):
            where = f"{path}.algorithmSettings[{i}]"
            if not isinstance(s, Mapping) or not isinstance(s.get("name"), str):
                self.refuse(where, "a setting is {name, value}")
                continue
            key, value = s["name"], str(s.get("value", ""))
            settings[key] = value
            if key in SEED_SETTINGS:
                if INTEGER.match(value):
                    seed = int(value)
                else:
                    self.refuse(f"{where}.value", f"{key} must be an integer, got {value!r}")
            elif name == "hyperband" and key in ("resource_name", "eta", "r_l"):
                continue  # _hyperband maps these
            elif name in ALGORITHMS:
                self.note(
                    where,
                    f"{key}={value} dropped: sweepyard runs {ALGORITHMS[name]} with Optuna's "
                    "defaults",
                )
        if seed is not None and name == "grid":
            self.note(f"{path}.algorithmSettings", "the seed is dropped: the grid runs every point")
        if name == "multivariate-tpe":
            self.note(
                f"{path}.algorithmName",
                "multivariate-tpe is sweepyard's tpe, which samples each param on its own",
            )
        return str(name), seed, settings

    def _hyperband(
        self, settings: Mapping[str, str], params: list[_Param]
    ) -> tuple[dict[str, Any] | None, tuple[str, Any] | None]:
        """Hyperband -> TPE with ASHA: eta is the reduction factor, the smallest bracket's budget
        ASHA's min_step, and the resource param is fixed at r_l (each trial's full budget).
        Returns the early stopping and ``(resource's Katib name, its fixed value)``."""
        path = "spec.algorithm.algorithmSettings"
        name = settings.get("resource_name")
        resource = next((p for p in params if p.katib == name), None)
        if resource is None:
            self.refuse(path, f"hyperband's resource_name {name!r} must name a parameter")
        try:
            r_l = float(settings.get("r_l", ""))
        except ValueError:
            r_l = math.nan
        if not (math.isfinite(r_l) and r_l > 0):
            self.refuse(
                path, f"hyperband's r_l must be a positive number, got {settings.get('r_l')!r}"
            )
            return None, None
        eta_text = settings.get("eta", "3")
        try:
            eta = float(eta_text)
        except ValueError:
            eta = math.nan
        if not (math.isfinite(eta) and eta >= 2 and eta == int(eta)):
            self.refuse(
                path,
                f"hyperband's eta {eta_text!r} cannot be ASHA's reduction factor (a whole number "
                ">= 2)",
            )
            return None, None
        if resource is None:
            return None, None
        if resource.type == "int" and r_l != int(r_l):
            self.refuse(path, f"hyperband's r_l {r_l} must be whole: {name} is an int parameter")
            return None, None
        s_max = int(math.log(r_l) / math.log(eta))
        min_step = max(1, int(r_l * eta**-s_max))
        budget: Any = int(r_l) if resource.type == "int" or r_l == int(r_l) else r_l
        self.note(
            "spec.algorithm.algorithmName",
            f"hyperband is tpe with ASHA early stopping (reduction_factor {int(eta)} from eta, "
            f"min_step {min_step}: Katib's smallest bracket, in reported steps); {resource.name} "
            f"is fixed at r_l = {budget}, each trial's full budget",
        )
        early = {"rule": "asha", "min_step": min_step, "reduction_factor": int(eta)}
        return early, (resource.katib, budget)

    def _early_stopping(self, es: Any, method: str) -> dict[str, Any] | None:
        path = "spec.earlyStopping"
        if es is None:
            return None
        if not isinstance(es, Mapping):
            self.refuse(path, "must be {algorithmName, algorithmSettings}")
            return None
        for key in sorted(set(es) - {"algorithmName", "algorithmSettings"}):
            self.refuse(f"{path}.{key}", "not a field of Katib's early stopping")
        name = es.get("algorithmName")
        if name != "medianstop":
            self.refuse(f"{path}.algorithmName", f"only medianstop maps (to median), not {name!r}")
            return None
        if ALGORITHMS.get(method) in ("random", "grid"):
            self.refuse(
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
                self.note(
                    where,
                    f"min_trials_required={value} dropped: the median rule starts once Optuna's "
                    "MedianPruner has 5 finished trials",
                )
            else:
                self.refuse(where, f"unknown or invalid medianstop setting {key}={value!r}")
        return {"rule": "median", "warmup_steps": start}

    def _budgets(self, spec: Mapping[str, Any], method: str) -> tuple[int | None, int | None, int]:
        max_trials = self._count(spec, "maxTrialCount", 1, 10_000)
        if max_trials is None and "maxTrialCount" not in spec and method != "grid":
            self.refuse(
                "spec.maxTrialCount",
                "required: sweepyard needs a trial budget (Katib would run until the goal)",
            )
        max_failed = self._count(spec, "maxFailedTrialCount", 0, 10_000)
        parallel = self._count(spec, "parallelTrialCount", 1, 1000)
        return max_trials, max_failed, DEFAULT_PARALLEL if parallel is None else parallel

    def _count(self, spec: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
        value = spec.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.refuse(f"spec.{key}", f"must be a whole number in [{low}, {high}], got {value!r}")
            return None
        return value

    # ---- parameters and the space ---------------------------------------------------------------

    def _parameters(self, raw: Any) -> list[_Param]:
        path = "spec.parameters"
        if not isinstance(raw, list) or not raw:
            self.refuse(path, "required: the parameters to search")
            return []
        out: list[_Param] = []
        names: dict[str, str] = {}
        for i, p in enumerate(raw):
            where = f"{path}[{i}]"
            if not isinstance(p, Mapping):
                self.refuse(where, "a parameter is {name, parameterType, feasibleSpace}")
                continue
            for key in sorted(set(p) - {"name", "parameterType", "feasibleSpace"}):
                self.refuse(f"{where}.{key}", "not a field of a Katib parameter")
            katib = p.get("name")
            if not isinstance(katib, str) or not katib:
                self.refuse(f"{where}.name", "required")
                continue
            name = self._param_name(katib, f"{where}.name")
            if name in names:
                self.refuse(
                    f"{where}.name",
                    f"{katib!r} is {name!r} here, as {names[name]!r} is: rename one"
                    if katib != names[name]
                    else f"{katib!r} is defined twice",
                )
                continue
            names[name] = katib
            param = self._feasible(
                where, katib, name, p.get("parameterType"), p.get("feasibleSpace")
            )
            if param is not None:
                out.append(param)
        return out

    def _param_name(self, katib: str, where: str) -> str:
        name = re.sub(r"[^A-Za-z0-9_]", "_", katib)
        if not IDENTIFIER.match(name):
            name = f"p_{name}"
        if name in RESERVED:
            name = f"{name}_param"
        if name != katib:
            self.note(
                where,
                f"{katib!r} is the param {name!r} (a param is an identifier; the command gets it "
                f"as {{{name}}})",
            )
        return name

    def _feasible(self, where: str, katib: str, name: str, ptype: Any, fs: Any) -> _Param | None:
        if ptype not in ("double", "int", "categorical", "discrete"):
            self.refuse(
                f"{where}.parameterType",
                f"must be double, int, categorical or discrete, got {ptype!r}",
            )
            return None
        fpath = f"{where}.feasibleSpace"
        if not isinstance(fs, Mapping):
            self.refuse(fpath, "required: the parameter's range or list")
            return None
        for key in sorted(set(fs) - {"min", "max", "step", "list", "distribution"}):
            self.refuse(f"{fpath}.{key}", "not a field of a Katib feasibleSpace")
        param = _Param(path=where, katib=katib, name=name, type=ptype)
        if ptype in ("categorical", "discrete"):
            for key in ("min", "max", "step"):
                if fs.get(key) not in (None, ""):
                    self.refuse(f"{fpath}.{key}", f"a {ptype} parameter takes a list, not {key}")
            values = fs.get("list")
            if not isinstance(values, list) or not values:
                self.refuse(f"{fpath}.list", f"required: the {ptype} parameter's values")
                return None
            for j, v in enumerate(values):
                if ptype == "categorical":
                    param.values.append(v if isinstance(v, str) else _scalar_text(v))
                else:
                    number = self._number(v, f"{fpath}.list[{j}]", integer=None)
                    if number is not None:
                        param.values.append(number)
            return param
        if fs.get("list"):
            self.refuse(f"{fpath}.list", f"a {ptype} parameter takes min/max (and step), not list")
        integer = ptype == "int"
        for key in ("min", "max"):
            if fs.get(key) in (None, ""):
                self.refuse(f"{fpath}.{key}", f"required for a {ptype} parameter")
        param.low = self._number(fs.get("min"), f"{fpath}.min", integer=integer)
        param.high = self._number(fs.get("max"), f"{fpath}.max", integer=integer)
        if fs.get("step") not in (None, ""):
            param.step = self._number(fs.get("step"), f"{fpath}.step", integer=integer)
            if param.step is not None and param.step <= 0:
                self.refuse(f"{fpath}.step", f"must be positive, got {fs.get('step')!r}")
                param.step = None
        param.raw = {
            k: _scalar_text(fs[k]) for k in ("min", "max", "step") if fs.get(k) is not None
        }
        dist = fs.get("distribution")
        if dist in (None, "", "uniform"):
            param.log = False
        elif dist == "logUniform":
            param.log = True
        elif dist in ("normal", "logNormal"):
            self.refuse(
                f"{fpath}.distribution",
                f"{dist} cannot map: sweepyard samples uniform and log-uniform ranges only",
            )
        else:
            self.refuse(f"{fpath}.distribution", f"unknown distribution {dist!r}")
        if param.low is not None and param.high is not None and param.low > param.high:
            self.refuse(fpath, f"min {param.low} is above max {param.high}")
            return None
        if param.low is None or param.high is None:
            return None
        return param

    def _number(self, value: Any, where: str, *, integer: bool | None) -> Any:
        """``value`` (a string, as Katib writes it, or a YAML number) as an int (``integer``), a
        float, or either (None: discrete values); None after refusing."""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.refuse(where, f"must be a number, got {value!r}")
            return None
        text = str(value).strip()
        if INTEGER.match(text) and integer is not False:
            return int(text)
        if integer:
            self.refuse(where, f"must be a whole number, got {value!r}")
            return None
        try:
            number = float(text)
        except ValueError:
            self.refuse(where, f"must be a number, got {value!r}")
            return None
        if not math.isfinite(number):
            self.refuse(where, f"must be a finite number, got {value!r}")
            return None
        return number

    def _space(
        self,
        params: list[_Param],
        method: str,
        max_trials: int | None,
        seed: int | None,
        resource: tuple[str, Any] | None,
    ) -> tuple[dict[str, Any], int | None]:
        grid: dict[str, list[Any]] = {}
        ranges: dict[str, dict[str, Any]] = {}
        fixed: dict[str, Any] = {}
        for p in params:
            if resource is not None and p.katib == resource[0]:
                fixed[p.name] = resource[1]  # hyperband's resource: each trial's full budget
                continue
            if method == "grid":
                values = self._grid_values(p)
                if values is not None:
                    grid[p.name] = values
                continue
            dist = self._distribution(p)
            if dist is None:
                continue
            if "fixed" in dist:
                fixed[p.name] = dist["fixed"]
            else:
                ranges[p.name] = dist
        space: dict[str, Any] = {}
        if method == "grid":
            size = math.prod(len(v) for v in grid.values()) if grid else 0
            if max_trials is None:
                max_trials = size
            elif size > max_trials:
                self.refuse(
                    "spec.maxTrialCount",
                    f"Katib's grid runs {max_trials} of its {size} points (in a random order); "
                    f"sweepyard's grid runs every point: set maxTrialCount to {size}, or use "
                    "algorithm random",
                )
            space["grid"] = grid
        else:
            random: dict[str, Any] = {}
            if method == "random":
                random["n_trials"] = max_trials
                if seed is not None:
                    random["seed"] = seed
            random["params"] = ranges
            if not ranges and params:
                self.refuse(
                    "spec.parameters",
                    "every parameter has a single value: there is nothing to search",
                )
            space["random"] = random
            modellable = [n for n, d in ranges.items() if "choice" not in d]
            if method not in ("random",) and ranges and not modellable:
                self.refuse(
                    "spec.algorithm.algorithmName",
                    f"sweepyard's {method} models double or int ranges, and every parameter here "
                    "is a list (categorical or discrete): use algorithm random or grid",
                )
        if fixed:
            space["fixed"] = fixed
        return space, max_trials

    def _grid_values(self, p: _Param) -> list[Any] | None:
        fpath = f"{p.path}.feasibleSpace"
        if p.type in ("categorical", "discrete"):
            return list(p.values)
        if p.log:
            self.note(
                f"{fpath}.distribution",
                "logUniform has no effect on a grid (as in Katib): the grid takes every step",
            )
        assert p.low is not None and p.high is not None
        if p.type == "int":
            step = int(p.step or 1)
            return list(range(int(p.low), int(p.high) + 1, step))
        if p.step is None:
            self.refuse(
                f"{fpath}.step",
                "required: a grid needs a step for a double parameter (Katib's does too)",
            )
            return None
        dlow, dstep, dhigh = (_decimal(p.raw.get(k)) for k in ("min", "step", "max"))
        if dlow is None or dstep is None or dhigh is None:
            self.refuse(fpath, "min, max and step must be decimal numbers")
            return None
        count = int((dhigh - dlow) / dstep) + 1
        return [float(dlow + i * dstep) for i in range(count)]

    def _distribution(self, p: _Param) -> dict[str, Any] | None:
        """``{uniform|loguniform|int|choice: ...}``, or ``{"fixed": value}`` for a single value."""
        fpath = f"{p.path}.feasibleSpace"
        if p.type in ("categorical", "discrete"):
            return {"choice": list(p.values)}
        assert p.low is not None and p.high is not None
        low, high, step = p.low, p.high, p.step
        if low == high:
            self.note(fpath, f"min = max = {low}: {p.name} is fixed at that value")
            return {"fixed": low}
        if p.log:
            if step is not None:
                self.note(
                    f"{fpath}.step",
                    "dropped: a log-uniform range has no step (Katib's Optuna algorithms drop it "
                    "too)",
                )
            if p.type == "int":
                if low < 1:
                    self.note(f"{fpath}.min", f"{low} is 1 here: a log range of ints starts at 1")
                    low = 1
                if low == high:
                    return {"fixed": high}
                return {"int": [int(low), int(high)], "log": True}
            if low <= 0:
                self.refuse(f"{fpath}.min", f"a logUniform range needs min > 0, got {low}")
                return None
            return {"loguniform": [float(low), float(high)]}
        if p.type == "int":
            istep = int(step or 1)
            last = int(low) + (int(high) - int(low)) // istep * istep
            if last == low:
                self.refuse(f"{fpath}.step", f"step {istep} is larger than max - min")
                return None
            if last != high:
                self.note(f"{fpath}.max", f"{high} is {last} here: the last value on the step grid")
            out: dict[str, Any] = {"int": [int(low), last]}
            if istep != 1:
                out["step"] = istep
            return out
        if step is None:
            return {"uniform": [float(low), float(high)]}
        dlow, dstep, dhigh = (_decimal(p.raw.get(k)) for k in ("min", "step", "max"))
        if dlow is None or dstep is None or dhigh is None:
            self.refuse(fpath, "min, max and step must be decimal numbers")
            return None
        n = int((dhigh - dlow) / dstep)
        if n < 1:
            self.refuse(f"{fpath}.step", f"step {step} is larger than max - min")
            return None
        top = float(dlow + n * dstep)
        if dlow + n * dstep != dhigh:
            self.note(f"{fpath}.max", f"{high} is {top} here: the last value on the step grid")
        return {"uniform": [float(low), top], "step": float(step)}

    # ---- the trial: command, image, resources ---------------------------------------------------

    def _trial(
        self, tt: Any, params: list[_Param]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        path = "spec.trialTemplate"
        trainer: dict[str, Any] = {"command": None, "image": None}
        resources: dict[str, Any] = {"gpu": {"count": 0}}
        if not isinstance(tt, Mapping):
            self.refuse(path, "required: the trial's Job")
            return trainer, resources, None
        known = {
            "retain",
            "trialSpec",
            "configMap",
            "trialParameters",
            "primaryPodLabels",
            "primaryContainerName",
            "successCondition",
            "failureCondition",
        }
        for key in sorted(set(tt) - known):
            self.refuse(f"{path}.{key}", "not a field of a Katib trial template")
        if tt.get("configMap") is not None:
            self.refuse(
                f"{path}.configMap",
                "the trial template is in a ConfigMap this import cannot read: put it inline "
                "as trialSpec",
            )
            return trainer, resources, None
        trial = tt.get("trialSpec")
        if not isinstance(trial, Mapping):
            self.refuse(f"{path}.trialSpec", "required: the trial's Job")
            return trainer, resources, None
        kind, api = trial.get("kind"), trial.get("apiVersion")
        if kind in MULTI_NODE_KINDS:
            self.refuse(
                f"{path}.trialSpec.kind",
                f"{kind}: multi-node trials are not supported yet (a trial is one batch/v1 Job)",
            )
            return trainer, resources, None
        if (api, kind) != ("batch/v1", "Job"):
            self.refuse(
                f"{path}.trialSpec.kind",
                f"{api}/{kind} cannot map: a trial must be a batch/v1 Job",
            )
            return trainer, resources, None
        for key, default in DEFAULT_CONDITIONS.items():
            if tt.get(key) not in (None, "", default):
                self.refuse(
                    f"{path}.{key}",
                    "a custom condition cannot map: a trial ends by its program's exit code",
                )
        refs = self._trial_parameters(tt.get("trialParameters"), params, trial)
        container, cpath, pod, job = self._container(trial, tt.get("primaryContainerName"))
        if container is None:
            return trainer, resources, None
        retries = self._job(job, f"{path}.trialSpec.spec")
        node_selector = _mapping(pod.get("nodeSelector"))
        trainer["command"] = self._command(container, cpath, refs)
        image = container.get("image")
        if not isinstance(image, str) or not IMAGE.match(image):
            self.refuse(
                f"{cpath}.image", f"an image reference must match {IMAGE.pattern}, got {image!r}"
            )
        trainer["image"] = image
        resources = self._resources(container.get("resources"), f"{cpath}.resources", node_selector)
        return trainer, resources, retries

    def _trial_parameters(
        self, raw: Any, params: list[_Param], trial: Mapping[str, Any]
    ) -> dict[str, str | None]:
        """Each trialParameter's name -> what ``${trialParameters.<name>}`` becomes here (None:
        refused already)."""
        path = "spec.trialTemplate.trialParameters"
        by_katib = {p.katib: p for p in params}
        if raw is None:
            return {}
        if not isinstance(raw, list):
            self.refuse(path, "must be a list of {name, reference}")
            return {}
        meta = _mapping(trial.get("metadata"))
        refs: dict[str, str | None] = {}
        for i, tp in enumerate(raw):
            where = f"{path}[{i}]"
            if not isinstance(tp, Mapping) or not tp.get("name") or not tp.get("reference"):
                self.refuse(where, "a trial parameter is {name, reference}")
                continue
            name, ref = str(tp["name"]), str(tp["reference"])
            refs[name] = None  # until it maps
            if ref in by_katib:
                refs[name] = "{" + by_katib[ref].name + "}"
                continue
            meta_ref = META_REF.match(ref)
            if meta_ref is None:
                self.refuse(f"{where}.reference", f"{ref!r} is not a parameter of spec.parameters")
                continue
            key, sub = meta_ref.groups()
            if key == "Name" and sub is None:
                refs[name] = "{trial_id}"
                self.note(f"{where}.reference", "${trialSpec.Name} is the trial's id, {trial_id}")
            elif key == "Kind" and sub is None:
                refs[name] = "Job"
            elif key == "APIVersion" and sub is None:
                refs[name] = "batch/v1"
            elif key in ("Labels", "Annotations") and sub is not None:
                values = _mapping(meta.get(key.lower()))
                if sub in values:
                    refs[name] = str(values[sub])
                else:
                    self.refuse(
                        f"{where}.reference",
                        f"{ref}: the trial's Job sets no such {key[:-1].lower()} to read",
                    )
            else:
                self.refuse(
                    f"{where}.reference",
                    f"{ref} cannot map (trials run in sweepyard's namespace, named by their id)",
                )
        return refs

    def _container(
        self, trial: Mapping[str, Any], primary: Any
    ) -> tuple[Mapping[str, Any] | None, str, Mapping[str, Any], Mapping[str, Any]]:
        base = "spec.trialTemplate.trialSpec"
        meta = trial.get("metadata")
        if isinstance(meta, Mapping) and meta:
            for key in sorted(set(meta) - {"labels", "annotations"}):
                self.refuse(f"{base}.metadata.{key}", "cannot map (Katib forbids it too)")
        for key in sorted(set(trial) - {"apiVersion", "kind", "metadata", "spec"}):
            self.refuse(f"{base}.{key}", "not a field of a Job")
        job = trial.get("spec")
        template = job.get("template") if isinstance(job, Mapping) else None
        pod = template.get("spec") if isinstance(template, Mapping) else None
        if not isinstance(job, Mapping) or not isinstance(pod, Mapping):
            self.refuse(f"{base}.spec.template.spec", "required: the trial's pod")
            return None, "", {}, {}
        assert isinstance(template, Mapping)
        pmeta = template.get("metadata")
        if isinstance(pmeta, Mapping) and pmeta:
            self.note(
                f"{base}.spec.template.metadata", "the pod's labels and annotations are dropped"
            )
        ppath = f"{base}.spec.template.spec"
        for key in sorted(set(template) - {"metadata", "spec"}):
            self.refuse(f"{base}.spec.template.{key}", "not a field of a pod template")
        for key in sorted(set(pod) - {"containers", "restartPolicy"}):
            if key in DROPPED_POD:
                self.note(f"{ppath}.{key}", self._dropped_pod_field(key, pod[key]))
            else:
                self.refuse(
                    f"{ppath}.{key}",
                    "cannot map: a trial is one container in a pod that sweepyard builds "
                    "(volumes: the trial gets the shared disk and its working folder)",
                )
        containers = pod.get("containers")
        if not isinstance(containers, list) or not containers:
            self.refuse(f"{ppath}.containers", "required: the trial's container")
            return None, "", pod, job
        names = [c.get("name") if isinstance(c, Mapping) else None for c in containers]
        if primary is None and len(containers) == 1:
            index = 0
        elif primary in names:
            index = names.index(primary)
        else:
            self.refuse(
                "spec.trialTemplate.primaryContainerName",
                f"{primary!r} names none of the trial's containers ({names})",
            )
            return None, "", pod, job
        for j in range(len(containers)):
            if j != index:
                self.refuse(
                    f"{ppath}.containers[{j}]",
                    "a trial is one container: sidecars cannot map",
                )
        return containers[index], f"{ppath}.containers[{index}]", pod, job

    def _dropped_pod_field(self, key: str, value: Any) -> str:
        if key == "nodeSelector":
            kept = {ACCELERATOR_LABEL, SPOT_LABEL}
            dropped = sorted(k for k in (value or {}) if k not in kept)
            if not dropped:
                return "mapped to resources (gpu.type, spot)"
            return f"{', '.join(dropped)} dropped: sweepyard places trials (resources.gpu, spot)"
        return "dropped: sweepyard builds the trial's pod (placement, identity, non-root, grace)"

    def _job(self, job: Mapping[str, Any], path: str) -> dict[str, Any] | None:
        retries = None
        for key in sorted(set(job) - {"template"}):
            value = job[key]
            if key == "backoffLimit":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    self.refuse(
                        f"{path}.backoffLimit", f"must be a whole number >= 0, got {value!r}"
                    )
                    continue
                if value > MAX_APP_ERRORS:
                    self.note(
                        f"{path}.backoffLimit",
                        f"{value} is {MAX_APP_ERRORS} here (retries.app_errors' most)",
                    )
                retries = {"app_errors": min(value, MAX_APP_ERRORS)}
            elif key in ("parallelism", "completions") and value == 1:
                continue
            elif key in DROPPED_JOB:
                self.note(f"{path}.{key}", "dropped: a sweep keeps its trials' records")
            else:
                self.refuse(f"{path}.{key}", "cannot map: a trial is one pod that runs once")
        return retries

    def _command(
        self, container: Mapping[str, Any], cpath: str, refs: Mapping[str, str | None]
    ) -> list[str] | None:
        for key in sorted(set(container) - {"name", "image", "command", "args", "env", "resources",
                                             "imagePullPolicy"}):  # fmt: skip
            if key in DROPPED_CONTAINER:
                self.note(f"{cpath}.{key}", "dropped: sweepyard builds the trial's container")
            elif key == "workingDir":
                self.refuse(
                    f"{cpath}.workingDir",
                    "cannot map: a trial runs in its own working folder (relative paths land there)",
                )
            else:
                self.refuse(f"{cpath}.{key}", "cannot map: a trial's container takes a command, "
                            "an image and resources")  # fmt: skip
        command, args = container.get("command"), container.get("args")
        if command is None:
            self.refuse(
                f"{cpath}.command",
                "required: without it the image's entrypoint runs, which this import cannot see",
            )
            return None
        words: list[tuple[str, Any]] = []
        for key, value in (("command", command), ("args", args)):
            if value is None:
                continue
            if not isinstance(value, list):
                self.refuse(f"{cpath}.{key}", "must be a list of strings")
                continue
            words += [(f"{cpath}.{key}[{i}]", w) for i, w in enumerate(value)]
        env = self._env(container.get("env"), f"{cpath}.env", refs)
        argv: list[str] = []
        if env:
            argv += ["env", *(f"{k}={v}" for k, v in env.items())]
            self.note(
                f"{cpath}.env",
                f"{', '.join(env)} set by running the command under env(1) (the image must have it)",
            )
        for where, word in words:
            if not isinstance(word, str | int | float) or isinstance(word, bool):
                self.refuse(where, f"must be a string, got {word!r}")
                continue
            mapped = self._word(str(word), where, refs, env)
            if mapped is not None:
                argv.append(mapped)
        return argv

    def _env(self, raw: Any, path: str, refs: Mapping[str, str | None]) -> dict[str, str]:
        env: dict[str, str] = {}
        if raw is None:
            return env
        if not isinstance(raw, list):
            self.refuse(path, "must be a list of {name, value}")
            return env
        for j, e in enumerate(raw):
            where = f"{path}[{j}]"
            if not isinstance(e, Mapping) or not isinstance(e.get("name"), str):
                self.refuse(where, "an env var is {name, value}")
                continue
            if "valueFrom" in e:
                self.refuse(
                    f"{where}.valueFrom",
                    f"{e['name']} from a Secret, ConfigMap or field cannot map: give the trial "
                    "its value on the command line",
                )
                continue
            mapped = self._word(str(e.get("value", "")), f"{where}.value", refs, env)
            if mapped is not None:
                env[e["name"]] = mapped
        return env

    def _word(
        self, word: str, where: str, refs: Mapping[str, str | None], env: Mapping[str, str]
    ) -> str | None:
        """One argv word: Kubernetes' ``$(VAR)`` expanded from the container's env, Katib's
        ``${trialParameters.X}`` made the param's ``{placeholder}``; None after refusing."""
        literal = PLACEHOLDER.search(TRIAL_PARAM.sub("", word))
        if literal is not None:
            self.refuse(
                where,
                f"{literal.group(0)} would be read as a sweepyard placeholder, and there is no "
                "escape for it",
            )
            return None
        ok = True

        def env_ref(m: re.Match[str]) -> str:
            nonlocal ok
            if m.group(0) == "$$":
                return "$"
            name = m.group(1)
            if name in env:
                return env[name]
            ok = False
            self.refuse(
                where,
                f"$({name}) refers to an env var the container does not set to a value here",
            )
            return m.group(0)

        def trial_ref(m: re.Match[str]) -> str:
            nonlocal ok
            value = refs.get(m.group(1))
            if value is not None:
                return value
            ok = False
            if m.group(1) not in refs:  # a declared one that cannot map is refused already
                self.refuse(where, f"{m.group(0)} is not in spec.trialTemplate.trialParameters")
            return m.group(0)

        out = ENV_REF.sub(env_ref, TRIAL_PARAM.sub(trial_ref, word))  # Katib first, then Kubernetes
        return out if ok else None

    def _resources(self, res: Any, path: str, node_selector: Mapping[str, Any]) -> dict[str, Any]:
        gpu: dict[str, Any] = {"count": 0}
        out: dict[str, Any] = {"gpu": gpu}
        accelerator = node_selector.get(ACCELERATOR_LABEL)
        if accelerator is not None:
            if isinstance(accelerator, str) and re.match(r"^[a-z0-9-]+$", accelerator):
                gpu["type"] = accelerator
            else:
                self.refuse(
                    f"spec.trialTemplate.trialSpec.spec.template.spec.nodeSelector.{ACCELERATOR_LABEL}",
                    f"not a GPU type sweepyard can name: {accelerator!r}",
                )
        if res is None or res == {}:
            self.note(
                path,
                "none given: a trial requests sweepyard's defaults (cpu 4, memory 16Gi), no GPU",
            )
            return out
        if not isinstance(res, Mapping):
            self.refuse(path, "must be {limits, requests}")
            return out
        for key in sorted(set(res) - {"limits", "requests"}):
            self.refuse(f"{path}.{key}", "cannot map: a trial takes cpu, memory and GPUs")
        limits = _mapping(res.get("limits"))
        requests = _mapping(res.get("requests"))
        for part, values in (("limits", limits), ("requests", requests)):
            for key in sorted(values):
                if key == "ephemeral-storage":
                    self.note(f"{path}.{part}.{key}", "dropped: a trial writes to the shared disk")
                elif key not in ("cpu", "memory", GPU_RESOURCE):
                    self.refuse(
                        f"{path}.{part}.{key}",
                        f"cannot map: a trial takes cpu, memory and {GPU_RESOURCE}",
                    )
        cpu_part = "requests" if "cpu" in requests else "limits"
        cpu = (requests or {}).get("cpu", limits.get("cpu"))
        if cpu is not None:
            text = _scalar_text(cpu)
            if CPU.match(text):
                out["cpu"] = text
            else:
                self.refuse(f"{path}.{cpu_part}.cpu", f"a CPU quantity like 2 or 500m, got {cpu!r}")
        mem_part = "limits" if "memory" in limits else "requests"
        memory = limits.get("memory", requests.get("memory"))
        if memory is not None:
            text = _scalar_text(memory)
            if MEMORY.match(text):
                out["memory"] = text
            else:
                self.refuse(
                    f"{path}.{mem_part}.memory", f"a memory quantity like 4Gi, got {memory!r}"
                )
        gpu_part = "limits" if GPU_RESOURCE in limits else "requests"
        count = limits.get(GPU_RESOURCE, requests.get(GPU_RESOURCE))
        if count is not None:
            text = _scalar_text(count)
            if INTEGER.match(text) and 0 <= int(text) <= 16:
                gpu["count"] = int(text)
            else:
                self.refuse(
                    f"{path}.{gpu_part}.{GPU_RESOURCE}",
                    f"a whole number of GPUs (0-16), got {count!r}",
                )
        return out

    # ---- the metrics collector ------------------------------------------------------------------

    def _collector(
        self, mc: Any, command: list[str] | None
    ) -> tuple[list[str] | None, dict[str, Any] | None]:
        """``trainer.collect`` of ``spec.metricsCollectorSpec``, and the command with the
        collector's absolute path made relative to the trial's working folder (None: the trial
        was refused, so only the collector's own fields are checked)."""
        path = "spec.metricsCollectorSpec"
        if mc is None:
            mc = {}
        if not isinstance(mc, Mapping):
            self.refuse(path, "must be {collector, source}")
            return command, None
        for key in sorted(set(mc) - {"collector", "source"}):
            self.refuse(f"{path}.{key}", "not a field of a Katib metrics collector")
        collector = mc.get("collector") or {}
        source = mc.get("source") or {}
        if not isinstance(collector, Mapping) or not isinstance(source, Mapping):
            self.refuse(path, "collector and source must be mappings")
            return command, None
        kind = collector.get("kind") or "StdOut"
        for key in sorted(set(collector) - {"kind", "customCollector"}):
            self.refuse(f"{path}.collector.{key}", "not a field of a Katib collector")
        if kind == "Custom":
            self.refuse(
                f"{path}.collector.kind",
                "a Custom collector (a sidecar image of your own) cannot map: print name=value, "
                "write a metrics file or TensorBoard events instead",
            )
            return command, None
        if kind == "PrometheusMetric":
            self.refuse(
                f"{path}.collector.kind",
                "PrometheusMetric cannot map: sweepyard does not scrape a trial's HTTP endpoint",
            )
            return command, None
        if kind == "Push":
            self.refuse(
                f"{path}.collector.kind",
                "Push cannot map: the program reports to Katib's DB manager through the Katib "
                "SDK; print name=value or write SWEEPYARD_METRICS instead",
            )
            return command, None
        if kind not in ("StdOut", "File", "TensorFlowEvent"):
            self.refuse(f"{path}.collector.kind", f"unknown collector kind {kind!r}")
            return command, None
        for key in sorted(set(source) - {"filter", "fileSystemPath", "httpGet"}):
            self.refuse(f"{path}.source.{key}", "not a field of a Katib metrics source")
        if source.get("httpGet") is not None:
            self.note(f"{path}.source.httpGet", f"dropped: a {kind} collector does not use it")
        formats = self._formats(source.get("filter"), f"{path}.source.filter")
        fsp = source.get("fileSystemPath")
        fpath = f"{path}.source.fileSystemPath"
        if kind == "StdOut":
            if fsp is not None:
                self.note(fpath, "dropped: a StdOut collector reads the program's output")
            return command, {"stdout": formats or "name=value"}
        fsp = _mapping(fsp)
        for key in sorted(set(fsp) - {"path", "kind", "format"}):
            self.refuse(f"{fpath}.{key}", "not a field of a Katib fileSystemPath")
        want = "File" if kind == "File" else "Directory"
        if fsp.get("kind") not in (None, "", want):
            self.refuse(
                f"{fpath}.kind", f"a {kind} collector reads a {want}, got {fsp.get('kind')!r}"
            )
        default = DEFAULT_FILE if kind == "File" else DEFAULT_TFEVENT_DIR
        where = f"{fpath}.path"
        raw = fsp.get("path") or default
        if command is None:
            return command, None
        moved = self._relocate(
            str(raw), command, where, default=raw == default and not fsp.get("path")
        )
        if moved is None:
            return command, None
        command, relative = moved
        if kind == "TensorFlowEvent":
            if fsp.get("format"):
                self.refuse(f"{fpath}.format", "a TensorFlowEvent collector takes no format")
            if formats:
                self.note(f"{path}.source.filter", "dropped: TensorBoard events name their metrics")
            return command, {"tensorboard": relative}
        fmt = fsp.get("format") or "TEXT"
        if fmt not in ("TEXT", "JSON"):
            self.refuse(f"{fpath}.format", f"must be TEXT or JSON, got {fmt!r}")
            return command, None
        spec: dict[str, Any] = {"path": relative, "format": "text" if fmt == "TEXT" else "jsonl"}
        if fmt == "JSON" and formats:
            self.refuse(
                f"{path}.source.filter", "a JSON metrics file takes no filter (nor in Katib)"
            )
        elif formats:
            spec["regex"] = formats
        return command, {"file": spec}

    def _formats(self, flt: Any, path: str) -> list[str]:
        if flt is None:
            return []
        formats = flt.get("metricsFormat") if isinstance(flt, Mapping) else None
        if not isinstance(formats, list):
            self.refuse(f"{path}.metricsFormat", "must be a list of regexes")
            return []
        out = []
        for i, regex in enumerate(formats):
            where = f"{path}.metricsFormat[{i}]"
            try:
                pattern = re.compile(str(regex))
            except re.error as e:
                self.refuse(where, f"{regex!r} is not a regex here (Python's re): {e}")
                continue
            if pattern.groups < 2:
                self.refuse(where, f"{regex!r} needs 2 groups: the metric's name, then its value")
                continue
            out.append(str(regex))
        return out

    def _relocate(
        self, path: str, command: list[str], where: str, *, default: bool
    ) -> tuple[list[str], str] | None:
        """The command with ``path`` (or the folder above it that the command names) moved into
        the trial's working folder, and ``path``'s new relative name; None after refusing."""
        target = posixpath.normpath(path)
        if not target.startswith("/"):
            why = relative_path_problem(target)
            if why:
                self.refuse(where, why.replace("shared disk's root", "trial's working folder"))
                return None
            return command, target
        tokens = {t.rstrip("/") for word in command for t in ABS_PATH.findall(word)} - {""}
        if any(t == target or t.startswith(target + "/") for t in tokens):
            root = target
        else:
            above = [t for t in tokens if target.startswith(t + "/")]
            if not above:
                said = f"{path} (Katib's default)" if default else path
                self.refuse(
                    where,
                    f"the program writes {said}, which is not on its command line: sweepyard "
                    "cannot move it into the trial's working folder (a trial's root filesystem is "
                    "read-only). Pass the path as an argument, or print name=value (StdOut)",
                )
                return None
            root = max(above, key=len)
        base = posixpath.basename(root)
        relative = base + target[len(root) :]

        def move(m: re.Match[str]) -> str:
            token = m.group(0)
            bare = token.rstrip("/")
            if bare == root or bare.startswith(root + "/"):
                return base + token[len(root) :]
            return token

        moved = [ABS_PATH.sub(move, word) for word in command]
        moved_too = "" if root == target else f" (the command's folder {root} is {base})"
        self.note(
            where,
            f"{path} is {relative}, in the trial's working folder, here and in the "
            f"command{moved_too}",
        )
        return moved, relative


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (a missing or malformed block)."""
    return value if isinstance(value, Mapping) else {}


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _scalar_text(value: Any) -> str:
    """A YAML scalar as Katib would hold it (a string): ``0.5`` -> ``"0.5"``, ``True`` -> ``"true"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
