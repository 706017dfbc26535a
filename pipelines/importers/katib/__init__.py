"""A Katib Experiment (``kubeflow.org/v1beta1``) as a sweepyard pipeline config.

:func:`convert` is pure: an Experiment mapping in, the config mapping and notes for the user out
(a renamed param, a dropped setting that does not change what is searched or how a trial is
judged). Every field that cannot map is a ``(Katib field path, why)`` problem; all of them are
collected, then raised together as :class:`KatibImportError`. :func:`import_file` reads the YAML
(exactly one Experiment), converts, validates the result as any config is validated, and writes
``pipelines/<name>.yaml`` atomically, never over an existing file unless asked to.

The mapping, and what is refused and why, is the table in README.md ("Importing a Katib
experiment"). This module holds the Experiment as a whole (:func:`run`); each part of its spec
maps in its own module, recording into a shared :class:`~.common.Context`:

- ``objective``: ``spec.objective`` and its metric strategies;
- ``search``: the algorithm (hyperband too), early stopping, the budgets, the ``search`` section;
- ``params``: ``spec.parameters``; ``space``: the ``search.space`` they make;
- ``trial``: ``spec.trialTemplate`` down to its container; ``command``: the container's command,
  args and env; ``resources``: its resources;
- ``collector``: ``spec.metricsCollectorSpec``;
- ``files``: the Experiment's YAML read in, the config file rendered and written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import PIPELINES_DIR, parse_config
from pipelines.importers.katib import search
from pipelines.importers.katib.collector import collector
from pipelines.importers.katib.common import Context, KatibImportError, mapping
from pipelines.importers.katib.files import exists, qualified, read_experiment, render, write
from pipelines.importers.katib.objective import objective
from pipelines.importers.katib.params import parameters
from pipelines.importers.katib.space import space
from pipelines.importers.katib.trial import trial

__all__ = [
    "KatibImportError",
    "convert",
    "default_image",
    "import_file",
    "read_experiment",
    "render",
    "run",
]

API_VERSION = "kubeflow.org/v1beta1"
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
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


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
    return run(doc, image or default_image())


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
        raise exists(out)
    write(out, render(cfg, found, source=source, doc=doc), replace=force)
    if notes is not None:
        notes.extend(found)
    return out


def run(doc: Mapping[str, Any], image: str) -> tuple[dict[str, Any], list[str]]:
    """What :func:`convert` returns, with the sweep's image given.

    Each part of the spec is checked in turn, every problem collected; they are raised together
    at the end (an Experiment that is not one, or searches architectures, ends it at once).

    Raises:
        KatibImportError: every field that cannot map, with its path and why.
    """
    meta, spec = _experiment(doc)
    ctx = Context()
    name = _name(ctx, meta)
    for key in sorted(set(spec) - SPEC_KEYS):
        ctx.refuse(f"spec.{key}", "not a field of a Katib v1beta1 Experiment")
    goal, metrics = objective(ctx, spec.get("objective"))
    method, seed, settings = search.algorithm(ctx, spec.get("algorithm"))
    if spec.get("nasConfig") is not None:  # its parameters and trial are the search's own
        ctx.refuse("spec.nasConfig", "neural architecture search is not supported")
        raise KatibImportError(ctx.problems)
    params = parameters(ctx, spec.get("parameters"))
    early, resource = search.stopping(ctx, spec, method, settings, params)
    max_trials, max_failed, parallel = search.budgets(ctx, spec, method)
    sweep_method = search.ALGORITHMS.get(method, "random")  # a refused algorithm: checks as random
    searched, max_trials = space(ctx, params, sweep_method, max_trials, seed, resource)
    if max_failed is None and max_trials is not None:
        max_failed = max_trials  # Katib without maxFailedTrialCount: failures never end it
    trainer, resources, retries = trial(ctx, spec.get("trialTemplate"), params)
    trainer["command"], collect = collector(
        ctx, spec.get("metricsCollectorSpec"), trainer["command"]
    )
    _resume_policy(ctx, spec.get("resumePolicy"))
    if ctx.problems:
        raise KatibImportError(ctx.problems)
    cfg: dict[str, Any] = {
        "name": name,
        "description": f"Imported from Katib Experiment {qualified(meta)}",
        "image": image,
        "trainer": {
            "command": trainer["command"],
            "image": trainer["image"],
            "params": [p.name for p in params],
            "metrics": metrics,
            "collect": collect,
        },
        "search": search.section(goal, sweep_method, max_trials, max_failed, seed, early, searched),
        "parallelism": parallel,
        "resources": resources,
    }
    if retries is not None:
        cfg["retries"] = retries
    cfg["tracking"] = {"model_name": name}
    return cfg, list(ctx.notes)


def _experiment(doc: Any) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The Experiment's metadata and spec.

    Raises:
        KatibImportError: ``doc`` is not a v1beta1 Experiment with a spec.
    """
    if not isinstance(doc, Mapping):
        raise KatibImportError([("", f"expected a Katib Experiment, got {type(doc).__name__}")])
    if doc.get("kind") != "Experiment":
        raise KatibImportError([("kind", f"expected Experiment, got {doc.get('kind')!r}")])
    if doc.get("apiVersion") != API_VERSION:
        raise KatibImportError(
            [("apiVersion", f"expected {API_VERSION}, got {doc.get('apiVersion')!r}")]
        )
    meta = mapping(doc.get("metadata"))
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise KatibImportError([("spec", "required: the Experiment has no spec")])
    return meta, spec


def _name(ctx: Context, meta: Mapping[str, Any]) -> str:
    """The pipeline's name: the Experiment's, made a DNS label of at most 40 characters."""
    raw = meta.get("name")
    if not isinstance(raw, str) or not raw:
        ctx.refuse("metadata.name", "required: the Experiment's name names the pipeline")
        return "unnamed"
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:40].rstrip("-")
    if not DNS_LABEL.match(name):
        ctx.refuse("metadata.name", f"{raw!r} does not make a pipeline name (a DNS label)")
    elif name != raw:
        ctx.note("metadata.name", f"{raw!r} is the pipeline {name!r} (a DNS label, <= 40)")
    return name


def _resume_policy(ctx: Context, policy: Any) -> None:
    """``spec.resumePolicy``: any sweep can be resumed, so a policy is dropped (or refused)."""
    if policy in (None, "", "Never"):
        return
    if policy in ("LongRunning", "FromVolume"):
        ctx.note(
            "spec.resumePolicy",
            f"{policy} dropped: any sweep resumes with `make submit SWEEP_ID=<id>` (its study "
            "and trials are on the shared disk)",
        )
        return
    ctx.refuse("spec.resumePolicy", f"unknown resume policy {policy!r}")
