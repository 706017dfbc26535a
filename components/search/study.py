"""The sweep's Optuna study: journal storage on the shared disk, or a database from the Secret.

``sweeps/<sweep-id>/study.journal`` is Optuna's ``JournalFileBackend`` with its open-lock (the
lock Optuna documents for NFS), so the suggest step and every trial's pruner share the study with
no server. ``search.storage: secret`` reads a database URL from ``SWEEPYARD_STUDY_STORAGE`` (the
Secret's ``study-storage-url``), never from a manifest. The study is named after the sweep id, so
resubmitting a sweep id continues its study.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.contract import shared_root, study_file

STORAGE_ENV = "SWEEPYARD_STUDY_STORAGE"
STARTED_ATTR = "sweepyard.started_at"

# The storage each study of open_study was opened on: Optuna's Study keeps its own private.
_STORAGES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class StorageError(RuntimeError):
    """The study storage cannot be reached or is not configured (a ``search.storage`` problem)."""


def default_storage(sweep_id: str) -> str:
    """``<SWEEPYARD_SHARED>/sweeps/<sweep-id>/study.journal``."""
    return str(study_file(shared_root(), sweep_id))


def resolve_storage(storage: str | None, sweep_id: str) -> str:
    """The storage a config's ``search.storage`` means: None → the journal file; ``secret`` → the
    URL in ``SWEEPYARD_STUDY_STORAGE``; anything else is taken as a path or URL already resolved.

    Raises:
        StorageError: ``secret`` with the variable unset.
    """
    if not storage:
        return default_storage(sweep_id)
    if storage == "secret":
        url = os.environ.get(STORAGE_ENV, "").strip()
        if not url:
            raise StorageError(
                f"search.storage is 'secret' but {STORAGE_ENV} is empty: set the Secret's key "
                "study-storage-url to the study database's URL"
            )
        return url
    return storage


def make_storage(storage: str) -> Any:
    """An Optuna storage for a journal file path or a database URL.

    Raises:
        StorageError: the storage cannot be opened (the message never shows a password).
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    try:
        if "://" in storage:
            return optuna.storages.RDBStorage(storage, engine_kwargs={"pool_pre_ping": True})
        path = Path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(
            JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        )
    except Exception as exc:
        shown = _redact(storage)
        raise StorageError(
            f"search.storage: cannot open the study storage {shown}: {_redact(str(exc))[:300]}"
        ) from None


def sampler(algorithm: str, seed: int) -> Any:
    """Optuna's sampler for ``algorithm`` (never one of our own)."""
    from optuna import samplers

    if algorithm == "tpe":
        return samplers.TPESampler(seed=seed, constant_liar=True)
    if algorithm == "cmaes":
        return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if algorithm == "gp":
        return samplers.GPSampler(seed=seed)
    if algorithm == "qmc":
        return samplers.QMCSampler(seed=seed, scramble=True)
    raise ValueError(f"search.algorithm: {algorithm!r} is not an adaptive algorithm")


def pruner(early_stopping: Mapping[str, Any] | None) -> Any:
    """Optuna's pruner for ``search.early_stopping`` (None → no pruning)."""
    from optuna import pruners

    if not early_stopping:
        return pruners.NopPruner()
    rule = early_stopping.get("rule")
    if rule == "asha":
        return pruners.SuccessiveHalvingPruner(
            min_resource=int(early_stopping.get("min_step", 1)),
            reduction_factor=int(early_stopping.get("reduction_factor", 3)),
        )
    if rule == "median":
        return pruners.MedianPruner(
            n_warmup_steps=int(early_stopping.get("warmup_steps", 0)),
            interval_steps=int(early_stopping.get("interval_steps", 1)),
        )
    raise ValueError(f"search.early_stopping.rule: {rule!r} is not asha or median")


def open_study(
    storage: str,
    *,
    study_name: str,
    algorithm: str,
    direction: str,
    seed: int,
    early_stopping: dict[str, Any] | None,
) -> Any:
    """Create the study, or load it when the sweep id was submitted before.

    The sampler's seed is ``seed`` plus the number of trials already asked, so each round (a new
    process) draws fresh startup points, and a rerun of the same round draws the same ones.

    Raises:
        StorageError: the storage cannot be reached.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = make_storage(storage)
    try:
        study = optuna.create_study(
            storage=backend,
            study_name=study_name,
            sampler=sampler(algorithm, seed),
            pruner=pruner(early_stopping),
            direction=direction,  # type: ignore[arg-type]
            load_if_exists=True,
        )
        asked = len(study.get_trials(deepcopy=False))
        if STARTED_ATTR not in study.user_attrs:
            study.set_user_attr(STARTED_ATTR, time.time())
    except ValueError:
        raise
    except Exception as exc:
        raise StorageError(
            f"search.storage: the study storage {_redact(storage)} is unreachable: "
            f"{_redact(str(exc))[:300]}"
        ) from None
    if asked:
        study.sampler = sampler(algorithm, seed + asked)
    _STORAGES[study] = backend
    return study


def storage_of(study: Any) -> Any:
    """The storage :func:`open_study` opened ``study`` on (``make_storage``'s object).

    Raises:
        ValueError: ``study`` was not opened by :func:`open_study`.
    """
    try:
        return _STORAGES[study]
    except (KeyError, TypeError):
        raise ValueError(
            f"study {getattr(study, 'study_name', study)!r}: not opened by open_study"
        ) from None


class TrialIds:
    """The storage ids of a study's trials, by trial number, through the storage's public lookups
    (an Optuna ``FrozenTrial`` keeps its storage id private): each id, and the study's, is looked
    up once."""

    def __init__(self, storage: Any, study_name: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self._study_id: int | None = None
        self._ids: dict[int, int] = {}  # a trial's number and storage id never change

    def __call__(self, number: int) -> int:
        if number not in self._ids:
            if self._study_id is None:
                self._study_id = int(self.storage.get_study_id_from_name(self.study_name))
            found = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
            self._ids[number] = int(found)
        return self._ids[number]


def _redact(text: str) -> str:
    import re

    return re.sub(r"(://[^/@\s:]*):[^/@\s]*@", r"\1:***@", text)
