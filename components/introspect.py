"""Print a Python trainer's declared params as JSON: ``python -m components.introspect mod:fn``.

The config check (``pipelines/config.py``) runs this in a subprocess, so that importing the trainer
(and torch) never happens in the compiler's process. Output, exit 0::

    {"params": [{"name": "lr", "type": "float", "required": false}, ...],
     "metrics": ["train_loss", "val_loss"] | null}

``metrics`` is what the trainer declares with ``@components.api.reports(...)`` (null: undeclared).

Exit 1 with ``{"error": "..."}`` when the trainer does not import, is not callable, or does not
take a trial first.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence


def describe(ref: str) -> dict[str, object]:
    """The declared params of ``ref``, or ``{"error": ...}``."""
    from components.runtime.function_trainer import load_function
    from components.runtime.params import signature

    try:
        fn = load_function(ref)
        sig = signature(fn)
    except (ValueError, TypeError) as exc:
        return {"error": str(exc)}
    metrics = getattr(fn, "__sweepyard_metrics__", None)
    return {
        "params": [dataclasses.asdict(d) for d in sig.params],
        "metrics": list(metrics) if metrics is not None else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(json.dumps({"error": "usage: python -m components.introspect module:function"}))
        return 2
    doc = describe(args[0])
    print(json.dumps(doc))
    return 1 if "error" in doc else 0


if __name__ == "__main__":
    sys.exit(main())
