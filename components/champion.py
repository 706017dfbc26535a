"""The registered model's ``champion``: the best trial's model is registered only when it beats it.

The champion is the version holding the registered model's ``champion`` alias; its ``objective``
and ``objective_value`` tags say what it was chosen on. ``compare`` calls :func:`register_best`
with the sweep's best trial; it registers the trial's model folder (:mod:`components.registry`)
and moves the alias when the trial is strictly better on the same objective, or says why not.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from components.contract import model_dir, trial_dir
from components.leaderboard import TrialRow
from components.model_folder import TORCHSCRIPT

log = logging.getLogger("sweepyard.compare")

CHAMPION = "champion"  # the registered model's alias for the best version so far
REGISTRATION_OFF = "model registration is off (tracking.model_name: null)"


def register_best(
    client: Any,
    best: TrialRow,
    model_name: str,
    shared: Path,
    sweep_id: str,
    objective: str,
    direction: str,
    run_id: str,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Register the best trial's model (any framework) if it beats the champion; move the alias.

    The champion is the version holding ``model_name``'s ``champion`` alias; its ``objective`` and
    ``objective_value`` tags say what it was chosen on. The best trial's model folder is logged to
    its run, registered and made the champion when there is no champion yet or it is strictly
    better on the same objective (lower for minimize, higher for maximize); otherwise nothing is
    registered. Idempotent: a version already registered for this sweep and trial is returned as
    is, and takes the alias only if it should hold it. Returns (the version's summary, or None;
    the registration record: ``registered``, ``message`` (the line compare prints) and the
    ``champion`` compared with, ``{"version", "value"}`` or None).
    """
    champion = _champion(client, model_name)
    for version in client.search_model_versions(f"name = '{model_name}'"):
        tags = version.tags or {}
        if tags.get("sweep") == sweep_id and tags.get("trial") == best.trial_id:
            return _registered_before(client, version, best, champion, objective, direction)
    folder = model_dir(trial_dir(shared, sweep_id, best.trial_id))
    if not folder.is_dir() or not any(folder.iterdir()):
        log.info("%s: the best trial %s saved no model", folder, best.trial_id)
        message = "no model registered: the best trial saved none"
        return None, registration_record(False, message, _champion_info(champion))
    why_not = _does_not_beat(champion, best.value, objective, direction)
    if why_not:
        return None, registration_record(
            False, f"not registered: {why_not}", _champion_info(champion)
        )
    import mlflow

    from components.registry import log_folder

    tags = {
        "sweep": sweep_id,
        "trial": best.trial_id,
        "data_hash": best.data_hash or "",
        "objective": objective,
        "objective_value": repr(best.value),
        **_beaten_tags(champion),
    }
    requirements = [f"mlflow=={mlflow.__version__}"]
    if (folder / TORCHSCRIPT).is_file():
        import torch

        requirements.append(f"torch=={torch.__version__.split('+')[0]}")
    with mlflow.start_run(run_id=run_id):
        uri = log_folder(folder, requirements)
    version = mlflow.register_model(uri, model_name, tags=tags)
    client.set_registered_model_alias(model_name, CHAMPION, str(version.version))
    info = _model_info(model_name, version, champion=True)
    beaten = _champion_info(champion)
    return info, registration_record(True, _champion_line(info, best.trial_id, beaten), beaten)


def _registered_before(
    client: Any,
    version: Any,
    best: TrialRow,
    champion: Any,
    objective: str,
    direction: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A resubmitted sweep: its version stands; it takes the alias only if it should hold it."""
    name = version.name
    if champion is not None and str(champion.version) == str(version.version):
        beaten = _tagged_beaten(version.tags or {})  # whom it beat when it took the alias
    else:
        why_not = _does_not_beat(champion, best.value, objective, direction)
        if why_not:
            info = _model_info(name, version, champion=False)
            message = f"model: {info['uri']} (trial {best.trial_id}), not the champion: {why_not}"
            return info, registration_record(True, message, _champion_info(champion))
        for key, value in _beaten_tags(champion).items():
            client.set_model_version_tag(name, str(version.version), key, value)
        client.set_registered_model_alias(name, CHAMPION, str(version.version))
        beaten = _champion_info(champion)
    info = _model_info(name, version, champion=True)
    return info, registration_record(True, _champion_line(info, best.trial_id, beaten), beaten)


def _champion(client: Any, model_name: str) -> Any:
    """The version holding ``model_name``'s champion alias; None with no such model or alias."""
    found = client.search_registered_models(f"name = '{model_name}'")
    registered = next((m for m in found if m.name == model_name), None)
    aliases = dict(getattr(registered, "aliases", None) or {})
    if CHAMPION not in aliases:
        return None
    return client.get_model_version(model_name, str(aliases[CHAMPION]))


def _tag_value(tags: dict[str, str], key: str) -> float | None:
    try:
        value = float(tags[key])
    except (KeyError, TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _champion_info(champion: Any) -> dict[str, Any] | None:
    if champion is None:
        return None
    value = _tag_value(champion.tags or {}, "objective_value")
    return {"version": int(champion.version), "value": value}


def _beaten_tags(champion: Any) -> dict[str, str]:
    """Tags a new champion keeps of the one it replaced (so a resubmit can say it again)."""
    info = _champion_info(champion)
    if info is None:
        return {}
    return {
        "beat_champion_version": str(info["version"]),
        "beat_champion_value": repr(info["value"]),
    }


def _tagged_beaten(tags: dict[str, str]) -> dict[str, Any] | None:
    try:
        return {
            "version": int(tags["beat_champion_version"]),
            "value": _tag_value(tags, "beat_champion_value"),
        }
    except (KeyError, ValueError):
        return None


def _does_not_beat(
    champion: Any, value: float | None, objective: str, direction: str
) -> str | None:
    """Why the best trial's ``value`` may not take the alias from ``champion``; None if it may."""
    if champion is None:
        return None
    tags = champion.tags or {}
    version = champion.version
    metric = tags.get("objective")
    if metric is not None and metric != objective:
        return f"champion v{version} was chosen on '{metric}', this sweep optimises '{objective}'"
    held = _tag_value(tags, "objective_value")
    if metric is None or held is None:
        return f"champion v{version} has no objective and objective_value tags to compare with"
    if value is None:
        return f"the best trial has no {objective} value"
    better = value < held if direction == "minimize" else value > held
    if better:
        return None
    return f"best {value:.4g} does not beat champion v{version} ({held:.4g})"


def _champion_line(info: dict[str, Any], trial: str, beaten: dict[str, Any] | None) -> str:
    line = f"model: {info['uri']} (trial {trial}), now the champion"
    if beaten is not None:
        line += f" (beats champion v{beaten['version']} ({_fmt(beaten['value'])}))"
    return line


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def registration_record(
    registered: bool, message: str, champion: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``summary["registration"]``: what compare did with the model, in the line it printed."""
    return {"registered": registered, "message": message, "champion": champion}


def _model_info(name: str, version: Any, *, champion: bool) -> dict[str, Any]:
    return {
        "name": name,
        "version": int(version.version),
        "uri": f"models:/{name}/{version.version}",
        "champion": champion,
    }
