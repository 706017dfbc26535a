"""Output artifacts of a local run: kept in the run's folder, as Argo keeps them in its repository.

A template's ``outputs.artifacts`` entry whose ``path`` is under the outputs folder (``/tmp/outputs``,
the attempt's own folder here) is copied to ``<run dir>/artifacts/<step>/<file name>`` when the
step succeeds; ``make status`` lists them. A missing artifact fails the step unless it is
``optional``, as on Argo.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.backends.local.records import safe_name


def keep_artifacts(
    template: Mapping[str, Any],
    node_name: str,
    outputs_dir: Path,
    outputs_prefix: str,
    run_dir: Path,
) -> tuple[dict[str, Path], str]:
    """Copy the step's output artifacts into the run folder: ({name: kept file}, error or '')."""
    kept: dict[str, Path] = {}
    prefix = outputs_prefix.rstrip("/") + "/"
    for a in (template.get("outputs") or {}).get("artifacts") or []:
        path = str(a.get("path", ""))
        if not path.startswith(prefix):
            return kept, f"output artifact {a['name']!r}: path {path!r} is not under {prefix}"
        source = outputs_dir / path[len(prefix) :]
        if not source.is_file():
            if a.get("optional"):
                continue
            return kept, f"output artifact {a['name']!r}: no file at {path}"
        target = run_dir / "artifacts" / safe_name(node_name) / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        kept[str(a["name"])] = target
    return kept, ""


def unsupported_artifacts(template: Mapping[str, Any], path: str, outputs_prefix: str) -> list[tuple[str, str]]:  # fmt: skip
    """``(field, why)`` when an output artifact is one the local run cannot keep (not a file the
    step writes under the outputs folder; artifacts other steps read are not passed at all)."""
    prefix = outputs_prefix.rstrip("/") + "/"
    artifacts = (template.get("outputs") or {}).get("artifacts") or []
    bad = [a.get("path") for a in artifacts if not str(a.get("path", "")).startswith(prefix)]
    if not bad:
        return []
    why = f"output artifacts are kept only from files under {prefix} (got {bad})"
    return [(f"{path}.outputs.artifacts", why)]
