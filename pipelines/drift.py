"""What changed since a trial ran: its recorded lineage (MLflow tags) against what is here now.

``make rerun`` (:mod:`pipelines.rerun`) refuses when anything here drifted, one line each, and
records the lines as ``sweepyard.drift.<what>`` tags when drift is allowed. Compared:

- ``commit``: the commit, dirty or not, and the diff's hash (:func:`components.provenance.git_state`);
- ``lock``: the sha256 of ``requirements.lock`` (or ``SWEEPYARD_LOCK_FILE``);
- ``image`` and ``image_digest``: the trainer image the pipeline config names now (``IMAGE``
  overriding it) and, where the run recorded one, its digest (``SWEEPYARD_IMAGE_DIGEST`` now);
- ``trial_spec``: the train step's arguments the config decides (the trial spec hash), with the
  flags that changed;
- ``data``: what the pipeline's source lists now (a listing: no download; ``gs://`` needs its
  credentials, a database its password) against the recorded content hash. A source that cannot be
  listed is drift ("cannot verify"). Whether the recorded version is still complete on the shared
  disk decides what the rerun reads: that version when it is (drift or not), else what the source
  holds now (the same content when nothing drifted).

Something not recorded (a run older than the lineage) cannot be compared, and counts as drift.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from components import provenance as pv
from components.contract import complete_file, dataset_dir
from pipelines.build import steps
from pipelines.config import SweepConfig

LISTING_TIMEOUT = 600.0


@dataclass(frozen=True)
class Drift:
    """One difference: ``what`` names the tag (``sweepyard.drift.<what>``), ``detail`` says it."""

    what: str
    detail: str

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


@dataclass(frozen=True)
class RecordedData:
    """The dataset version a trial read, and whether it is still complete on the shared disk."""

    dataset: str
    hash: str
    source: str
    complete: bool | None  # None: the shared disk is not here (the rerun runs on a cluster)


def check(
    tags: Mapping[str, str],
    cfg: SweepConfig,
    shared: Path | None,
    env: Mapping[str, str] | None = None,
) -> tuple[list[Drift], RecordedData | None]:
    """Every difference between the recorded lineage and now; and the recorded data version.

    Args:
        tags: the origin run's tags.
        cfg: the pipeline config a rerun uses now.
        shared: the shared disk's root (the claim's folder) the rerun uses; ``None`` when it is
            not on this machine (a rerun on a cluster): whether the recorded version is still
            complete is then for the rerun's fetch step to find out.
        env: the environment now (default: ``os.environ``).
    """
    env = os.environ if env is None else env
    found = [commit(tags, env), lock(tags, env), *image(tags, cfg, env), trial_spec(tags, cfg)]
    data_drift, data = check_data(tags, cfg, shared, env)
    return [d for d in (*found, data_drift) if d is not None], data


def _short(value: str | None, n: int = 12) -> str:
    return value[:n] if value else "nothing"


def commit(tags: Mapping[str, str], env: Mapping[str, str]) -> Drift | None:
    recorded = pv.GitState(
        tags.get(pv.TAG_COMMIT) or "unknown",
        tags.get(pv.TAG_DIRTY) == "true",
        tags.get(pv.TAG_DIFF, ""),
    )
    now = pv.git_state(env)
    unknown = "unknown" in (recorded.commit, now.commit)
    if recorded == now and not unknown and pv.TAG_DIRTY in tags:
        return None
    detail = f"recorded {recorded.describe()}, now {now.describe()}"
    return Drift("commit", detail + (" (cannot verify)" if unknown else ""))


def lock(tags: Mapping[str, str], env: Mapping[str, str]) -> Drift | None:
    recorded, now = tags.get(pv.TAG_LOCK, ""), pv.lock_sha256(env)
    if recorded and recorded == now:
        return None
    return Drift("lock", f"recorded {_short(recorded)}, now {_short(now)} ({pv.lock_path(env)})")


def image(tags: Mapping[str, str], cfg: SweepConfig, env: Mapping[str, str]) -> list[Drift]:
    found = []
    recorded, now = tags.get(pv.TAG_IMAGE, ""), cfg.trainer_image
    if recorded != now:
        found.append(Drift("image", f"recorded {recorded or 'nothing'}, now {now}"))
    digest, now_digest = tags.get(pv.TAG_IMAGE_DIGEST, ""), env.get(pv.IMAGE_DIGEST_ENV, "")
    if digest and digest != now_digest:
        found.append(Drift("image_digest", f"recorded {digest}, now {now_digest or 'unknown'}"))
    return found


def spec_args(cfg: SweepConfig) -> list[str]:
    """The trial spec of ``cfg``: its train arguments without the trial-specific ones."""
    argv = steps.train_args(cfg, sweep_id="", trial_id="", params="", data_path="", data_hash="")
    return pv.trial_spec_args(argv)


def trial_spec(tags: Mapping[str, str], cfg: SweepConfig) -> Drift | None:
    args = spec_args(cfg)
    recorded, now = tags.get(pv.TAG_SPEC_HASH, ""), pv.trial_spec_hash(args)
    if recorded == now:
        return None
    detail = f"recorded {_short(recorded)}, now {_short(now)}"
    try:
        before = pv.spec_flags(json.loads(tags.get(pv.TAG_SPEC) or "[]"))
    except ValueError:
        before = {}
    after = pv.spec_flags(args)
    changed = [
        f"{flag} {_clip(before.get(flag))} -> {_clip(after.get(flag))}"
        for flag in sorted(set(before) | set(after))
        if before.get(flag) != after.get(flag)
    ]
    if before and changed:
        detail += f" ({'; '.join(changed)})"
    return Drift("trial_spec", detail)


def _clip(value: str | None, n: int = 40) -> str:
    if value is None:
        return "(absent)"
    return value if len(value) <= n else value[: n - 3] + "..."


def check_data(
    tags: Mapping[str, str], cfg: SweepConfig, shared: Path | None, env: Mapping[str, str]
) -> tuple[Drift | None, RecordedData | None]:
    """The data's drift (see the module's docstring) and the recorded version."""
    digest, dataset = tags.get(pv.TAG_DATA_HASH, ""), tags.get(pv.TAG_DATASET, "")
    if not digest:
        if cfg.data is None:
            return None, None
        return Drift("data", f"recorded none, now {cfg.data.dataset} from {cfg.data.source}"), None
    folder = None if shared is None else dataset_dir(shared, dataset, digest)
    complete = None if folder is None else _complete(folder)
    data = RecordedData(dataset, digest, tags.get(pv.TAG_DATA_SOURCE, ""), complete)
    where = (
        "the rerun's fetch step reads the recorded version from the cluster's shared disk"
        if folder is None
        else "the recorded version is still on the shared disk: the rerun reads it"
        if complete
        else f"the recorded version is not on the shared disk ({folder})"
    )
    recorded = f"recorded {dataset}/{digest}"
    if cfg.data is None:
        return Drift("data", f"{recorded}, now the pipeline has no data; {where}"), data
    now, error = list_version(cfg.data.source, cfg.data.query, env)
    if now is None:
        detail = f"{recorded}, cannot verify {cfg.data.source} now: {error}; {where}"
        return Drift("data", detail), data
    if now != digest or cfg.data.dataset != dataset:
        detail = f"{recorded}, now {cfg.data.dataset}/{now} from {cfg.data.source}; {where}"
        return Drift("data", detail), data
    return None, data


def _complete(folder: Path) -> bool:
    try:
        return complete_file(folder).read_text().strip() == folder.name
    except OSError:
        return False


def list_version(source: str, query: str | None, env: Mapping[str, str]) -> tuple[str | None, str]:
    """The content hash ``source`` lists now, or ``(None, why not)``.

    The listing runs in a process of its own (``python -m components.runtime.lineage
    data-version``): the fetch step's own code, which ``pipelines/`` does not import.
    """
    cmd = [sys.executable, "-m", "components.runtime.lineage", "data-version", source]
    cmd += ["--query", query] if query else []
    try:
        out = subprocess.run(
            cmd,
            cwd=pv.REPO_ROOT,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=LISTING_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"the listing did not finish: {exc}"
    try:
        answer = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"the listing failed (exit {out.returncode}): {tail}"
    if answer.get("hash"):
        return str(answer["hash"]), ""
    return None, str(answer.get("error") or "no hash")
