"""compare's results as the artifacts each UI renders: Argo's output artifacts, KFP's typed ones.

* **Argo** (and the local backend): ``leaderboard.md`` and ``plots.html`` (the plots embedded as
  data URIs: one file the Argo UI previews) in ``$SWEEPYARD_OUTPUTS``, declared by the compare
  template's ``outputs.artifacts``.
* **Kubeflow**: KFP passes the executor input (``{{$}}``) on the command line; this writes each
  declared output artifact at its local path (``gs://b/x`` is ``/gcs/b/x`` in the pod, a plain path
  under ``kfp.local``) and the artifacts' metadata to the executor output file, as KFP's own Python
  executor does: ``leaderboard`` (Markdown), ``plots`` (HTML), ``metrics`` (Metrics: the best
  objective, the trial counts), ``model`` (Model: its metadata names the registry version).

Pure: JSON and files only (``components/`` never imports kfp).
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.contract import LEADERBOARD_MD, PLOTS_PAGE
from components.fsio import atomic_write_text

ARGO_ARTIFACTS = {"leaderboard": LEADERBOARD_MD, "plots": PLOTS_PAGE}  # in the outputs folder
REMOTE_MOUNTS = {"gs://": "/gcs/", "s3://": "/s3/", "minio://": "/minio/"}


def plots_html(sweep_id: str, plots: Mapping[str, Path | str]) -> str:
    """One self-contained HTML page with each PNG embedded (no file the browser must fetch)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>sweep {html.escape(sweep_id)}: plots</title></head><body>",
        f"<h2>sweep {html.escape(sweep_id)}</h2>",
    ]
    for name, path in plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(name)}' style='max-width:100%' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(name)}</figcaption>"
            "</figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_argo_artifacts(outputs: Path, leaderboard_md: Path, plots_page: str) -> dict[str, Path]:
    """``leaderboard.md`` and ``plots.html`` where the compare template's artifacts are read."""
    outputs.mkdir(parents=True, exist_ok=True)
    board = outputs / ARGO_ARTIFACTS["leaderboard"]
    shutil.copyfile(leaderboard_md, board)
    page = outputs / ARGO_ARTIFACTS["plots"]
    page.write_text(plots_page, encoding="utf-8")
    return {"leaderboard": board, "plots": page}


def local_path(uri: str) -> Path:
    """Where a KFP artifact's URI is in the container (KFP's ``Artifact.path`` rule)."""
    for prefix, mount in REMOTE_MOUNTS.items():
        if uri.startswith(prefix):
            return Path(mount + uri[len(prefix) :])
    return Path(uri)


def kfp_metadata(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each KFP output artifact's metadata, from compare's summary."""
    objective = (summary.get("objective") or {}).get("metric", "objective")
    best = summary.get("best") or {}
    trials = summary.get("trials") or {}
    metrics: dict[str, Any] = {
        "trials_done": trials.get("done", 0),
        "trials_pruned": trials.get("pruned", 0),
        "trials_failed": trials.get("failed", 0),
        "preemptions": summary.get("preemptions", 0),
    }
    if best.get("value") is not None:
        metrics[f"best_{objective}"] = best["value"]
    if (summary.get("compute_saved") or {}).get("fraction") is not None:
        metrics["compute_saved"] = summary["compute_saved"]["fraction"]
    model = summary.get("model") or {}
    return {
        "leaderboard": {"sweep_id": summary.get("sweep_id")},
        "plots": {"sweep_id": summary.get("sweep_id")},
        "metrics": metrics,
        "model": {
            "registered_model": model.get("name"),
            "version": model.get("version"),
            "model_uri": model.get("uri"),
            "trial_id": best.get("trial_id"),
            "mlflow_run_id": best.get("run_id"),
        },
    }


def write_kfp_outputs(
    executor_input: str, summary: Mapping[str, Any], leaderboard_md: Path, plots_page: str
) -> dict[str, Path]:
    """Write every output artifact KFP declared, then the executor output with their metadata.

    Raises:
        ValueError: ``executor_input`` is not KFP's executor input JSON.
    """
    try:
        outputs = json.loads(executor_input)["outputs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--kfp-executor-input: not KFP's executor input: {exc}") from None
    declared = outputs.get("artifacts") or {}
    metadata = kfp_metadata(summary)
    written: dict[str, Path] = {}
    executor_output: dict[str, Any] = {"artifacts": {}}
    for name, listed in declared.items():
        artifact = (listed.get("artifacts") or [{}])[0]
        path = local_path(str(artifact.get("uri", "")))
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "leaderboard":
            shutil.copyfile(leaderboard_md, path)
        elif name == "plots":
            path.write_text(plots_page, encoding="utf-8")
        elif name in ("metrics", "model"):
            path.write_text(json.dumps(metadata[name], indent=1) + "\n", encoding="utf-8")
        else:
            continue
        written[name] = path
        executor_output["artifacts"][name] = {
            "artifacts": [
                {
                    "name": artifact.get("name", name),
                    "uri": artifact.get("uri", ""),
                    "metadata": {**(artifact.get("metadata") or {}), **metadata[name]},
                }
            ]
        }
    out_file = outputs.get("outputFile")
    if out_file:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        Path(out_file).write_text(json.dumps(executor_output), encoding="utf-8")
    return written


def write_step_outputs(
    sweep_id: str,
    summary: dict[str, Any],
    files: dict[str, Path],
    outputs: Path,
    kfp_executor_input: str | None,
) -> None:
    """compare's outputs: the leaderboard and the plots page as Argo's (and KFP's) artifacts."""
    page = plots_html(sweep_id, {k: files[k] for k in ("curves", "params")})
    write_argo_artifacts(outputs, files["leaderboard_md"], page)
    if kfp_executor_input:
        write_kfp_outputs(kfp_executor_input, summary, files["leaderboard_md"], page)


def write_summary(path: Path, output: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` on the shared disk and the step's ``summary`` output parameter."""
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    output.parent.mkdir(parents=True, exist_ok=True)  # the step's output parameter, not shared
    output.write_text(json.dumps(summary, sort_keys=True, separators=(",", ":"), default=str))
