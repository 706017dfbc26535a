"""The trial container's ``command``, ``args`` and ``env`` as ``trainer.command``: one argv, with
Katib's ``${trialParameters.X}`` made sweepyard placeholders, Kubernetes' ``$(VAR)`` expanded and
the env set by running the command under ``env(1)``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from components.command import PLACEHOLDER
from pipelines.importers.katib.common import Context

CONTAINER_KEYS = frozenset(
    {"name", "image", "command", "args", "env", "resources", "imagePullPolicy"}
)
# fields a trial's container may carry that only decorate it: dropped, noted
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
TRIAL_PARAM = re.compile(r"\$\{trialParameters\.([^{}]*)\}")
ENV_REF = re.compile(r"\$\$|\$\(([-._A-Za-z][-._A-Za-z0-9]*)\)")  # Kubernetes' $(VAR); $$ escapes


def command(
    ctx: Context, container: Mapping[str, Any], cpath: str, refs: Mapping[str, str | None]
) -> list[str] | None:
    """The trial's argv (None: refused, the image's entrypoint cannot be seen); the container's
    other fields are checked.

    Args:
        ctx: the conversion's problems and notes.
        container: the trial's container.
        cpath: its Katib field path.
        refs: each trialParameter's name -> what it becomes (None: refused already).
    """
    for key in sorted(set(container) - CONTAINER_KEYS):
        if key in DROPPED_CONTAINER:
            ctx.note(f"{cpath}.{key}", "dropped: sweepyard builds the trial's container")
        elif key == "workingDir":
            ctx.refuse(
                f"{cpath}.workingDir",
                "cannot map: a trial runs in its own working folder (relative paths land there)",
            )
        else:
            ctx.refuse(
                f"{cpath}.{key}",
                "cannot map: a trial's container takes a command, an image and resources",
            )
    words = _words(ctx, container, cpath)
    if words is None:
        return None
    env = _env(ctx, container.get("env"), f"{cpath}.env", refs)
    argv: list[str] = []
    if env:
        argv += ["env", *(f"{k}={v}" for k, v in env.items())]
        ctx.note(
            f"{cpath}.env",
            f"{', '.join(env)} set by running the command under env(1) (the image must have it)",
        )
    for where, word in words:
        if not isinstance(word, str | int | float) or isinstance(word, bool):
            ctx.refuse(where, f"must be a string, got {word!r}")
            continue
        mapped = _word(ctx, str(word), where, refs, env)
        if mapped is not None:
            argv.append(mapped)
    return argv


def _words(ctx: Context, container: Mapping[str, Any], cpath: str) -> list[tuple[str, Any]] | None:
    """The words of ``command`` then ``args``, each with its field path; None after refusing."""
    cmd, args = container.get("command"), container.get("args")
    if cmd is None:
        ctx.refuse(
            f"{cpath}.command",
            "required: without it the image's entrypoint runs, which this import cannot see",
        )
        return None
    words: list[tuple[str, Any]] = []
    for key, value in (("command", cmd), ("args", args)):
        if value is None:
            continue
        if not isinstance(value, list):
            ctx.refuse(f"{cpath}.{key}", "must be a list of strings")
            continue
        words += [(f"{cpath}.{key}[{i}]", w) for i, w in enumerate(value)]
    return words


def _env(ctx: Context, raw: Any, path: str, refs: Mapping[str, str | None]) -> dict[str, str]:
    """The container's env vars that map, by name (each value mapped as a word is)."""
    env: dict[str, str] = {}
    if raw is None:
        return env
    if not isinstance(raw, list):
        ctx.refuse(path, "must be a list of {name, value}")
        return env
    for j, e in enumerate(raw):
        where = f"{path}[{j}]"
        if not isinstance(e, Mapping) or not isinstance(e.get("name"), str):
            ctx.refuse(where, "an env var is {name, value}")
            continue
        if "valueFrom" in e:
            ctx.refuse(
                f"{where}.valueFrom",
                f"{e['name']} from a Secret, ConfigMap or field cannot map: give the trial "
                "its value on the command line",
            )
            continue
        mapped = _word(ctx, str(e.get("value", "")), f"{where}.value", refs, env)
        if mapped is not None:
            env[e["name"]] = mapped
    return env


def _word(
    ctx: Context, word: str, where: str, refs: Mapping[str, str | None], env: Mapping[str, str]
) -> str | None:
    """One argv word: Kubernetes' ``$(VAR)`` expanded from the container's env, Katib's
    ``${trialParameters.X}`` made the param's ``{placeholder}``; None after refusing."""
    literal = PLACEHOLDER.search(TRIAL_PARAM.sub("", word))
    if literal is not None:
        ctx.refuse(
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
        ctx.refuse(
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
            ctx.refuse(where, f"{m.group(0)} is not in spec.trialTemplate.trialParameters")
        return m.group(0)

    out = ENV_REF.sub(env_ref, TRIAL_PARAM.sub(trial_ref, word))  # Katib first, then Kubernetes
    return out if ok else None
