"""A small sweep compiled for the local backend and what its trials' preemptions ended as; the local
sweep, image, resubmit and search tests share it. No tests here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.build.argo import build
from pipelines.config import load_config
from pipelines.validate import validate_or_raise

CONFIG = Path(__file__).parents[1] / "configs" / "local_small.yaml"

CHAOS_SEED = 38  # preempts train(0)'s first attempt, whatever the start order ...
# ... at 0.11 x the window: 0.56 s in, while the trial still starts (a 60-step trial ends about
# 2 s in on a quiet machine: the default 20 s window landed its preemption after the trial's end)
CHAOS_WINDOW = 5.0


def manifest() -> dict[str, Any]:
    doc = build(load_config(CONFIG)).to_dict()
    validate_or_raise(doc, str(CONFIG))  # what the CLI does before any backend
    return doc


def preemptions_ended_as_kills(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The preempted attempts of ``nodes``, each checked to have ended as a killed trainer does.

    A pod deleted mid-training exits 143 (SIGTERM, saved) or 137 (SIGKILL after the grace). One
    deleted after its trial had finished, while it flushed, exits 0: every later attempt of that
    node then exits 0 too, finding the trial done, and none trains again.
    """
    preempted = []
    for n in nodes:
        attempts = n.get("attempts", [])
        for i, a in enumerate(attempts):
            if not a["preempted"]:
                continue
            preempted.append(a)
            assert a["phase"] == "Error" and a["exit_code"] in (143, 137, 0), (n["name"], a)
            if a["exit_code"] == 0:
                assert all(later["exit_code"] == 0 for later in attempts[i + 1 :]), n
    return preempted
