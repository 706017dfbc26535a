"""A Python trainer (``module:function``) run in-process under the supervisor.

:func:`load_function` imports it; :func:`function_trainer` wraps it as the supervisor's training
callable: binds the trial's params to the declared ones, builds the :class:`~components.api.Trial`,
calls the trainer, then saves the last step and returns the final metrics.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from components.api import Trial
from components.contract import model_dir
from components.runtime.harness import Harness
from components.runtime.params import Signature, bind_params, signature
from components.runtime.trial import AttemptLog, GiveUp
from components.runtime.trial_spec import TrainFn, TrialSpec


def load_function(ref: str) -> Callable[..., Any]:
    """Import ``module:function`` (``module:Class.method`` works too).

    Raises:
        ValueError: ``ref`` has no ``:``, the module does not import, the name is missing or not
            callable (the message says which).
    """
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"{ref!r}: expected module:function (e.g. examples.charlm.train:train)")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code
        raise ValueError(
            f"{ref!r}: module {module_name!r} does not import: {type(exc).__name__}: {exc}"
        ) from exc
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{ref!r}: {module_name!r} has no {qualname!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{ref!r}: {qualname!r} is not callable")
    return obj  # type: ignore[no-any-return]


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def function_trainer(ref: str) -> tuple[TrainFn, Callable[[dict[str, Any]], Any]]:
    """The supervisor's ``(train, validate)`` pair for the trainer ``ref``.

    ``validate`` imports the trainer (once) and binds the params; it raises :class:`GiveUp` when
    the trainer does not import, is not callable, has no trainer's signature, or a param is bad.
    """
    loaded: dict[str, tuple[Callable[..., Any], Signature]] = {}

    def load() -> tuple[Callable[..., Any], Signature]:
        if not loaded:
            try:
                fn = load_function(ref)
                loaded["fn"] = (fn, signature(fn))
            except (ValueError, TypeError) as exc:
                raise GiveUp(f"--trainer-function: {exc}") from exc
        return loaded["fn"]

    def validate(params: dict[str, Any]) -> Any:
        return bind_params(load()[1], params)

    def train(
        spec: TrialSpec, harness: Harness, attempt: AttemptLog
    ) -> tuple[int, dict[str, float]]:
        fn, sig = load()
        kwargs = bind_params(sig, spec.params)
        harness.on_step = attempt.progress
        device = resolve_device(spec.device)
        if device.type == "cpu":
            torch.set_num_threads(spec.threads)
        trial = Trial(
            harness,
            trial_id=spec.trial_id,
            sweep_id=spec.sweep_id,
            params=spec.params,
            data=spec.data,
            device=device,
            attempt=attempt.number,
            model_dir=model_dir(harness.trial_dir),
            objective=spec.objective,
        )
        fn(trial, **kwargs)
        return trial.finish()

    return train, validate
