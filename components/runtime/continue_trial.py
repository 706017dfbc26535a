"""A rerun's ``continue-from`` step: the origin trial's checkpoints and working folder, carried over.

``python -m components.runtime.continue_trial --from-sweep S --trial T --to-sweep N`` copies
``sweeps/S/trials/T/{checkpoints,work}`` on the shared disk into ``sweeps/N/trials/T/``, so the
rerun's train step resumes where the origin's last checkpoint left it (``make rerun
FROM_CHECKPOINT=1``, :mod:`pipelines.rerun`, on any backend: the step runs where the disk is).

The copy is made in a temporary folder beside the trial's and renamed into place at once: a step
killed half-way leaves only a ``.continue-*`` folder, never a trial folder with half a checkpoint.
Run again (a retry), it finds the trial folder in place and does nothing. The copy holds
``continued.json`` (the origin's sweep, trial and checkpoint step): the trial's lineage records it,
and its run's ``sweepyard.continued_from_step`` tag tells the rerun which steps to compare. Exit codes: 0 carried
over (or already), 3 the origin has nothing to continue from or the ids are bad.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from components.contract import (
    CHECKPOINTS_DIR,
    EXIT_GIVE_UP,
    WORK_DIR,
    SharedRootError,
    check_sweep_id,
    checkpoints_dir,
    continued_file,
    latest_file,
    shared_root,
    trial_dir,
)

STATE_DIRS = (CHECKPOINTS_DIR, WORK_DIR)  # what a continued trial carries over


class NothingToContinue(Exception):
    """The origin trial has no checkpoints or working folder."""


def carry_over(shared: Path, from_sweep: str, trial: str, to_sweep: str) -> dict[str, object]:
    """Copy the origin trial's state into the new sweep's trial folder (see the module's docstring).

    Returns:
        What was carried (``copied``: folder names) and the step ``LATEST`` names (or ``None``).
    """
    src, dst = trial_dir(shared, from_sweep, trial), trial_dir(shared, to_sweep, trial)
    present = [name for name in STATE_DIRS if (src / name).is_dir()]
    if not present:
        raise NothingToContinue(f"{src} has no {' or '.join(STATE_DIRS)} to continue from")
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".continue-{trial}-", dir=dst.parent))
        try:
            for name in present:
                shutil.copytree(src / name, tmp / name, symlinks=True)
            step = latest_step(checkpoints_dir(tmp))
            marker = {"sweep_id": from_sweep, "trial_id": trial, "step": step}
            continued_file(tmp).write_text(json.dumps(marker) + "\n", encoding="utf-8")
            os.rename(tmp, dst)  # the trial folder appears whole, or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return {"copied": present, "step": latest_step(checkpoints_dir(dst))}


def latest_step(checkpoints: Path) -> int | None:
    """The step of the checkpoint ``LATEST`` names (``step-000000400`` -> 400), or ``None``."""
    try:
        return int(latest_file(checkpoints).read_text().strip().rsplit("-", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m components.runtime.continue_trial", description=__doc__
    )
    p.add_argument("--from-sweep", required=True, help="the origin trial's sweep")
    p.add_argument("--trial", required=True, help="the trial id (the same in both sweeps)")
    p.add_argument("--to-sweep", required=True, help="the rerun's sweep")
    args = p.parse_args(argv)
    try:
        check_sweep_id(args.from_sweep)
        check_sweep_id(args.to_sweep)
        if not args.trial.isalnum():
            raise ValueError(f"--trial {args.trial!r}: a trial id is letters and digits")
        carried = carry_over(shared_root(), args.from_sweep, args.trial, args.to_sweep)
    except (ValueError, SharedRootError, NothingToContinue) as exc:
        print(f"continue-from: {exc}", file=sys.stderr)
        return EXIT_GIVE_UP
    print(json.dumps(carried), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
