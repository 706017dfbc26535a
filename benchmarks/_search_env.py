"""bench_search's process setup: quiet logs, one torch thread, a shared folder and the digits
table. Not a benchmark: `make bench` runs benchmarks/bench_*.py only."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def quiet() -> None:
    """Quiet logs, one torch thread (in this process and in each seed's worker)."""
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    # the harness's float() of a logged loss tensor warns once per process: not what is measured
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    for name in ("components", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def environment(root: Path) -> Iterator[Path]:
    """A shared folder, no tracking server, quiet logs; the digits table copied once."""
    saved = {k: os.environ.get(k) for k in ("SWEEPYARD_SHARED", "MLFLOW_TRACKING_URI")}
    os.environ["SWEEPYARD_SHARED"] = str(root / "shared")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    (root / "shared").mkdir()
    import sklearn

    data = root / "data"
    data.mkdir()
    shutil.copy(Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz", data)
    quiet()
    try:
        yield data
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
