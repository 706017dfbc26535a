"""Identities of sweeps and trials (DESIGN.md, "Trial identity"). Pure: safe to import anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

TRIAL_ID_LENGTH = 12
# Sweep ids name folders on the shared disk and MLflow tags: keep them to a DNS-1123-like alphabet.
SWEEP_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def canonical_json(params: Mapping[str, Any]) -> str:
    """The canonical JSON of a trial's params: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def trial_id(params: Mapping[str, Any]) -> str:
    """Short hash of the canonical params: stable across retries and resubmits."""
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()[:TRIAL_ID_LENGTH]


def resolve_sweep_id(sweep_id: str | None, env: Mapping[str, str] | None = None) -> str:
    """The sweep id: the given one, else the workflow's name (``SWEEPYARD_WORKFLOW_NAME``).

    Raises:
        ValueError: when neither is set, or the id is not a valid folder/tag name.
    """
    env = os.environ if env is None else env
    value = (sweep_id or "").strip() or env.get("SWEEPYARD_WORKFLOW_NAME", "").strip()
    if not value:
        raise ValueError("no sweep id: pass --sweep-id or set SWEEPYARD_WORKFLOW_NAME")
    if not SWEEP_ID_RE.match(value):
        raise ValueError(
            f"invalid sweep id {value!r}: use lowercase letters, digits, '.', '_' and '-' "
            "(at most 63, starting and ending with a letter or digit)"
        )
    return value
