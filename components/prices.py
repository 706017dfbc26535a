"""The dated price table :func:`components.cost.default_prices` loads (data only, no I/O).

Figures are QUOTED, not measured: Google Cloud's list prices for Compute Engine GPUs (per GPU-hour,
attached to a VM) and for N1/N2 vCPUs (per vCPU-hour), on-demand and Spot, in us-central1, as
recalled when this table was written (no network was reachable to check them). Spot prices move as
often as monthly. Keep ``AS_OF`` and the figures current, and verify them before billing anyone.
Memory, disks and network are not priced.

Kept in code rather than a JSON file so that it ships in the wheel with ``components`` (the
project's ``package-data`` carries only ``pipelines`` files).
"""

from __future__ import annotations

from typing import Any

AS_OF = "2026-12-07"
SOURCE = (
    "Google Cloud pricing pages for Compute Engine GPUs and spot VMs, us-central1, "
    f"as recalled on {AS_OF}; verify before billing"
)

# USD per GPU-hour, per GKE accelerator name (cloud.google.com/gke-accelerator).
GPU_HOUR: dict[str, dict[str, float]] = {
    "nvidia-tesla-t4": {"spot": 0.14, "on_demand": 0.35},
    "nvidia-l4": {"spot": 0.22, "on_demand": 0.56},
    "nvidia-tesla-v100": {"spot": 0.99, "on_demand": 2.48},
    "nvidia-tesla-a100": {"spot": 1.17, "on_demand": 2.93},
    "nvidia-a100-80gb": {"spot": 1.57, "on_demand": 3.93},
    "nvidia-h100-80gb": {"spot": 3.72, "on_demand": 9.80},
}

# USD per vCPU-hour (N1/N2 predefined vCPU).
CPU_HOUR: dict[str, float] = {"spot": 0.0070, "on_demand": 0.0316}

TABLE: dict[str, Any] = {
    "as_of": AS_OF,
    "source": SOURCE,
    "currency": "USD",
    "gpu_hour": GPU_HOUR,
    "cpu_hour": CPU_HOUR,
}
