"""The search space that the search round tests and the scripts they run in a subprocess share. No
tests here.
"""

from __future__ import annotations

from components.space import SearchSpace

SPACE = SearchSpace.model_validate(
    {
        "random": {"params": {"lr": {"loguniform": [1e-4, 1e-1]}, "hidden": {"choice": [16, 32]}}},
        "grid": {"depth": [1, 2]},
        "fixed": {"steps": 30},
    }
)
