"""The trial container's ``resources`` (and its pod's GPU-type node selector) as the config's
``resources``: cpu, memory, a GPU count and type."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipelines.importers.katib.common import INTEGER, Context, mapping, scalar_text

GPU_RESOURCE = "nvidia.com/gpu"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
SPOT_LABEL = "cloud.google.com/gke-spot"
CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")


def resources(
    ctx: Context, res: Any, path: str, node_selector: Mapping[str, Any]
) -> dict[str, Any]:
    """``resources`` of the container's ``resources`` at ``path`` and the pod's node selector."""
    gpu: dict[str, Any] = {"count": 0}
    out: dict[str, Any] = {"gpu": gpu}
    accelerator = node_selector.get(ACCELERATOR_LABEL)
    if accelerator is not None:
        if isinstance(accelerator, str) and re.match(r"^[a-z0-9-]+$", accelerator):
            gpu["type"] = accelerator
        else:
            ctx.refuse(
                f"spec.trialTemplate.trialSpec.spec.template.spec.nodeSelector.{ACCELERATOR_LABEL}",
                f"not a GPU type sweepyard can name: {accelerator!r}",
            )
    if res is None or res == {}:
        ctx.note(
            path,
            "none given: a trial requests sweepyard's defaults (cpu 4, memory 16Gi), no GPU",
        )
        return out
    if not isinstance(res, Mapping):
        ctx.refuse(path, "must be {limits, requests}")
        return out
    for key in sorted(set(res) - {"limits", "requests"}):
        ctx.refuse(f"{path}.{key}", "cannot map: a trial takes cpu, memory and GPUs")
    limits = mapping(res.get("limits"))
    requests = mapping(res.get("requests"))
    for part, values in (("limits", limits), ("requests", requests)):
        for key in sorted(values):
            if key == "ephemeral-storage":
                ctx.note(f"{path}.{part}.{key}", "dropped: a trial writes to the shared disk")
            elif key not in ("cpu", "memory", GPU_RESOURCE):
                ctx.refuse(
                    f"{path}.{part}.{key}",
                    f"cannot map: a trial takes cpu, memory and {GPU_RESOURCE}",
                )
    _quantities(ctx, path, limits, requests, out)
    return out


def _quantities(
    ctx: Context,
    path: str,
    limits: Mapping[str, Any],
    requests: Mapping[str, Any],
    out: dict[str, Any],
) -> None:
    """Set ``out``'s cpu (the request's, else the limit's), memory (the limit's, else the
    request's) and GPU count (the limit's, else the request's)."""
    cpu_part = "requests" if "cpu" in requests else "limits"
    cpu = (requests or {}).get("cpu", limits.get("cpu"))
    if cpu is not None:
        text = scalar_text(cpu)
        if CPU.match(text):
            out["cpu"] = text
        else:
            ctx.refuse(f"{path}.{cpu_part}.cpu", f"a CPU quantity like 2 or 500m, got {cpu!r}")
    mem_part = "limits" if "memory" in limits else "requests"
    memory = limits.get("memory", requests.get("memory"))
    if memory is not None:
        text = scalar_text(memory)
        if MEMORY.match(text):
            out["memory"] = text
        else:
            ctx.refuse(f"{path}.{mem_part}.memory", f"a memory quantity like 4Gi, got {memory!r}")
    gpu_part = "limits" if GPU_RESOURCE in limits else "requests"
    count = limits.get(GPU_RESOURCE, requests.get(GPU_RESOURCE))
    if count is not None:
        text = scalar_text(count)
        if INTEGER.match(text) and 0 <= int(text) <= 16:
            out["gpu"]["count"] = int(text)
        else:
            ctx.refuse(
                f"{path}.{gpu_part}.{GPU_RESOURCE}",
                f"a whole number of GPUs (0-16), got {count!r}",
            )
