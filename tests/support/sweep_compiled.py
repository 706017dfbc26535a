"""The compiled sweep's Argo templates by name; the compiled-sweep, search and trainer config tests
share it. No tests here.
"""

from __future__ import annotations

from typing import Any


def templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return {t["name"]: t for t in spec["templates"]}
