"""What a trial's result depends on, in the terms both halves use (DESIGN.md, "Outcomes").

The trial records its lineage (:mod:`components.runtime.lineage`: MLflow tags, a dataset input and
``lineage.json``); ``make rerun`` (:mod:`pipelines.rerun`) reads it back and compares it with what
is here now. Both take the code's git state, the lock's hash, the trial spec hash and the tag names
from this module. Pure: the standard library, and git as a subprocess.

The trial spec hash (tag ``sweepyard.trial_spec_hash``) stands in for a hash of the compiled
workflow: a step cannot carry a hash of the manifest it is part of (the value would change the
manifest), so the train step hashes what it was given instead: its command line without the
trial-specific arguments (:data:`TRIAL_SPECIFIC_ARGS`), i.e. everything the pipeline config decides
about a trial (trainer, objective, checkpoints, threads, budgets, pruner). A launcher that can hash
the whole workflow may pass it as ``SWEEPYARD_WORKFLOW_HASH``; it is recorded as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the folder holding components/
LOCK_FILE = "requirements.lock"

GIT_COMMIT_ENV = "SWEEPYARD_GIT_COMMIT"  # wins over git (the image has no checkout)
LOCK_ENV = "SWEEPYARD_LOCK_FILE"  # the lock to hash instead of <repo root>/requirements.lock
IMAGE_ENV = "SWEEPYARD_IMAGE"
IMAGE_DIGEST_ENV = "SWEEPYARD_IMAGE_DIGEST"  # sha256:... of the image, where the launcher knows it
WORKFLOW_HASH_ENV = "SWEEPYARD_WORKFLOW_HASH"  # a hash of the compiled workflow, where known
TRIAL_SPEC_ENV = "SWEEPYARD_TRIAL_SPEC"  # set by components.train: spec_json(its command line)
PIPELINE_ENV = "SWEEPYARD_PIPELINE"

# The train step's arguments that differ from trial to trial (left out of the trial spec hash).
TRIAL_SPECIFIC_ARGS = ("--trial-id", "--params", "--sweep-id", "--data", "--data-hash")

TAG_SWEEP = "sweepyard.sweep_id"  # = components.links.TAG_SWEEP
TAG_TRIAL = "sweepyard.trial_id"  # = components.runtime.tracking.TAG_TRIAL
TAG_ROLE = "sweepyard.role"
TAG_COMMIT = "sweepyard.git_commit"
TAG_DIRTY = "sweepyard.git_dirty"
TAG_DIFF = "sweepyard.git_diff_sha256"
TAG_LOCK = "sweepyard.lock_sha256"
TAG_IMAGE = "sweepyard.image"
TAG_IMAGE_DIGEST = "sweepyard.image_digest"
TAG_WORKFLOW_HASH = "sweepyard.workflow_hash"
TAG_SPEC_HASH = "sweepyard.trial_spec_hash"
TAG_SPEC = "sweepyard.trial_spec"  # the spec's arguments as JSON (when short enough for a tag)
TAG_PIPELINE = "sweepyard.pipeline"
TAG_PARAMS = "sweepyard.params_json"  # the params as typed JSON (MLflow params are strings)
TAG_SEED = "sweepyard.seed"
TAG_DATA_HASH = "sweepyard.data_hash"
TAG_DATASET = "sweepyard.dataset"
TAG_DATA_PATH = "sweepyard.data_path"
TAG_DATA_SOURCE = "sweepyard.data_source"
TAG_TORCH = "sweepyard.torch_version"
TAG_CUDA = "sweepyard.cuda_version"
TAG_DEVICE = "sweepyard.device"
TAG_ORIGIN = "sweepyard.origin_run_id"  # on a rerun's run: the run it reran
TAG_CONTINUED_STEP = (
    "sweepyard.continued_from_step"  # its first attempt resumed another's checkpoint
)
DRIFT_TAG_PREFIX = "sweepyard.drift."  # + what drifted, on a rerun allowed to drift
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag's value


@dataclass(frozen=True)
class GitState:
    """The code a process runs: the commit, and whether (and how) the tree differs from it."""

    commit: str  # "unknown" outside a checkout without SWEEPYARD_GIT_COMMIT
    dirty: bool
    diff_sha256: str = ""  # of `git diff HEAD` and the untracked files; "" when clean

    def describe(self) -> str:
        """``abc123 (clean)`` or ``abc123 (dirty, diff 1a2b3c4d5e6f)``."""
        if not self.dirty:
            return f"{self.commit} (clean)"
        return f"{self.commit} (dirty, diff {self.diff_sha256[:12] or 'unknown'})"


def _git(args: Sequence[str], cwd: Path) -> bytes | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(env: Mapping[str, str] | None = None, cwd: Path = REPO_ROOT) -> GitState:
    """The code's git state.

    ``SWEEPYARD_GIT_COMMIT`` wins when set (as in :func:`components.runtime.tracking.git_commit`):
    it names the code as built (the image has no checkout), so the tree counts as clean. Otherwise
    git answers for the checkout holding ``components/``: HEAD, dirty when ``git status`` lists
    anything, and a sha256 of ``git diff HEAD --binary`` plus each untracked file's name and content.
    """
    env = os.environ if env is None else env
    given = env.get(GIT_COMMIT_ENV, "").strip()
    if given:
        return GitState(given, False)
    head = _git(["rev-parse", "HEAD"], cwd)
    commit = head.decode().strip() if head and head.strip() else "unknown"
    if commit == "unknown":
        return GitState(commit, False)
    status = _git(["status", "--porcelain", "--untracked-files=all"], cwd)
    if status is None or not status.strip():
        return GitState(commit, False)
    digest = hashlib.sha256(_git(["diff", "HEAD", "--binary"], cwd) or b"")
    untracked = _git(["ls-files", "-z", "--others", "--exclude-standard"], cwd) or b""
    for name in sorted(n for n in untracked.split(b"\0") if n):
        digest.update(b"\0untracked\0" + name + b"\0")
        try:
            digest.update(hashlib.sha256((cwd / name.decode()).read_bytes()).digest())
        except OSError:
            digest.update(b"unreadable")
    return GitState(commit, True, digest.hexdigest())


def lock_path(env: Mapping[str, str] | None = None) -> Path:
    """``SWEEPYARD_LOCK_FILE``, else ``requirements.lock`` next to the code (the repo root)."""
    env = os.environ if env is None else env
    given = env.get(LOCK_ENV, "").strip()
    return Path(given) if given else REPO_ROOT / LOCK_FILE


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), or ``""`` when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def lock_sha256(env: Mapping[str, str] | None = None) -> str:
    """The sha256 of the lock (:func:`lock_path`); ``""`` where there is none (an installed wheel)."""
    return file_sha256(lock_path(env))


def trial_spec_args(argv: Sequence[str]) -> list[str]:
    """The train step's arguments without the trial-specific ones (``--flag value`` and
    ``--flag=value`` forms alike)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in TRIAL_SPECIFIC_ARGS:
            skip = True
            continue
        if arg.split("=", 1)[0] in TRIAL_SPECIFIC_ARGS and "=" in arg:
            continue
        kept.append(arg)
    return kept


def spec_json(argv: Sequence[str]) -> str:
    """The canonical JSON of :func:`trial_spec_args` (what the trial spec hash is of)."""
    return json.dumps(trial_spec_args(argv), separators=(",", ":"), ensure_ascii=False)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def trial_spec_hash(argv: Sequence[str]) -> str:
    """sha256 of :func:`spec_json` (see the module's docstring)."""
    return text_sha256(spec_json(argv))


def spec_flags(args: Sequence[str]) -> dict[str, str]:
    """``--flag value`` pairs of a spec's arguments (a flag without a value maps to ``""``)."""
    flags: dict[str, str] = {}
    key = ""
    for arg in args:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            key = "" if eq else name
            flags[name] = value
        elif key:
            flags[key] = arg
            key = ""
    return flags
