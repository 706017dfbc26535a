"""Where a compiled sweep runs: ``local`` (this machine), ``argo`` (Argo Server), ``kfp`` (KFP API)."""

from __future__ import annotations

from collections.abc import Mapping

BACKENDS = ("local", "argo", "kfp")


def pick_backend(explicit: str | None, env: Mapping[str, str]) -> str:
    """``BACKEND`` when given, else ``argo`` with ``ARGO_SERVER``, ``kfp`` with ``KFP_HOST``, else local."""
    if explicit:
        if explicit not in BACKENDS:
            raise SystemExit(f"unknown BACKEND {explicit!r}: use one of {', '.join(BACKENDS)}")
        return explicit
    if env.get("ARGO_SERVER"):
        return "argo"
    if env.get("KFP_HOST"):
        return "kfp"
    return "local"
