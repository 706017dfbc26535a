"""``RUNTIME=image``: every step of a local run inside the built image, as a pod would run it.

The image's root filesystem comes from buildah's local storage (one working container for the run,
mounted once); each step attempt is a bubblewrap sandbox over it:

- the root filesystem read-only, as the image's (numeric, non-root) user, no capabilities, in its
  own PID, IPC and user namespaces; the image's ``WorkingDir`` as the working directory;
- a writable tmpfs at ``/tmp`` (the pod's emptyDir), each volumeMount bound writable at its
  ``mountPath`` (the shared disk at ``cluster.mount_path``, ``/dev/shm``), the step's
  ``/tmp/outputs`` bound to the attempt's outputs folder;
- the image's ``Env`` overridden by the manifest's env (values as written: no path mapping), and
  the manifest's command line unchanged;
- the host's network namespace, so the run's loopback services (MLflow) answer as in process mode.

Preemption works as with processes: :func:`pipelines.backends.local.pod.run_attempt` signals the
sandbox's process group. The sandbox's monitor ignores SIGTERM (``env --ignore-signal``) and the step
gets it with its default disposition back (``env --default-signal`` inside), so the step alone
handles it; a SIGKILL of the monitor takes the sandbox down with it (``--die-with-parent``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.backends.local.launcher import PodRequest
from pipelines.backends.local.pod import Attempt, PodSpec, ProcessTable, run_attempt

DEFAULT_IMAGE = "localhost/sweepyard:cpu"  # what `make image` tags
IMAGE_ENV = "SWEEPYARD_LOCAL_IMAGE"
RUNTIMES = ("process", "image")
WRITABLE_IN_SANDBOX = ("/tmp", "/dev")  # tmpfs in the sandbox: mount points are made there
SCRIPT_IN_POD = "/argo/staging/script"  # where Argo puts a script template's source


class ImageError(RuntimeError):
    """The image cannot be run here (not built, tools missing, runs as root); nothing has run."""


@dataclass(frozen=True)
class ImageRuntime:
    """The mounted image of a run and how to run one step attempt in it."""

    ref: str
    rootfs: Path
    uid: int
    gid: int
    env: Mapping[str, str]
    workdir: str
    env_tool: str
    bwrap: str

    def pod_spec(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        mounts: Mapping[str, Path],
        grace: float,
        deadline: float | None,
        preempt_after: float | None,
    ) -> PodSpec:
        """The sandboxed attempt: ``argv`` as the image's user, ``mounts`` (path in pod -> host)."""
        sandbox = [self.env_tool, "--ignore-signal=TERM", self.bwrap]
        sandbox += ["--ro-bind", str(self.rootfs), "/", "--dev", "/dev", "--proc", "/proc"]
        sandbox += ["--tmpfs", "/tmp"]
        for target in sorted(mounts, key=lambda p: (p.count("/"), p)):  # parents first
            self._mount_point(target, mounts[target])
            sandbox += ["--bind", str(mounts[target]), target]
        sandbox += ["--unshare-user", "--uid", str(self.uid), "--gid", str(self.gid)]
        sandbox += ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--cap-drop", "ALL"]
        sandbox += ["--chdir", self.workdir, "--", "/usr/bin/env", "--default-signal=TERM"]
        return PodSpec(
            argv=[*sandbox, *(str(a) for a in argv)],
            env={**self.env, **env},
            cwd=Path("/"),
            grace=grace,
            deadline=deadline,
            preempt_after=preempt_after,
        )

    def _mount_point(self, target: str, source: Path) -> None:
        """Make ``target`` in the working container's layer (a runtime does so for a volume)."""
        if not target.startswith("/") or ".." in Path(target).parts:
            raise ImageError(f"volumeMount path {target!r}: an absolute path is needed")
        if any(target.startswith(f"{d}/") for d in WRITABLE_IN_SANDBOX):
            return
        point = self.rootfs / target.lstrip("/")
        if source.is_dir():
            point.mkdir(parents=True, exist_ok=True)
        elif not point.exists():
            point.parent.mkdir(parents=True, exist_ok=True)
            point.touch()


@dataclass(frozen=True)
class ImageLauncher:
    """``RUNTIME=image``: each pod in the run's mounted image
    (:class:`pipelines.backends.local.launcher.PodLauncher`).

    The manifest's env as written (no path mapping: the volumes are mounted where it says), a
    script's source at Argo's path for it, the command line unchanged.
    """

    image: ImageRuntime

    def pod_spec(self, request: PodRequest) -> PodSpec:
        command = list(request.command)
        mounts = dict(request.mounts)
        if request.script is not None:
            mounts[SCRIPT_IN_POD] = request.script
            command.append(SCRIPT_IN_POD)
        env: dict[str, str] = {}
        for e in request.env:
            if e.value is not None:  # an optional secret that is not set stays unset
                env[e.name] = e.value
        env.update(request.overrides)
        return self.image.pod_spec(
            [*command, *request.args],
            env,
            mounts,
            request.grace,
            request.deadline,
            request.preempt_after,
        )

    def launch(
        self, spec: PodSpec, attempt: Attempt, table: ProcessTable, stopping: threading.Event
    ) -> str:
        return run_attempt(spec, attempt, table, stopping)


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ImageError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def _user(config: Mapping[str, object], rootfs: Path, ref: str) -> tuple[int, int, str]:
    """The image's ``USER`` as numeric ids, and that user's home (``/`` when it has none)."""
    user = str(config.get("User") or "")
    name, _, group = user.partition(":")
    entries = {}
    with contextlib.suppress(OSError):
        for line in (rootfs / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 6:
                entries[fields[0]] = entries[fields[2]] = (fields[2], fields[3], fields[5])
    uid, gid, home = entries.get(name, (name, "", "/"))
    if not uid.isdigit() or int(uid) == 0:
        raise ImageError(
            f"image {ref} runs as {user or 'root'!r}: a pod with runAsNonRoot needs a numeric, "
            "non-root USER"
        )
    gid = group or gid or uid
    return int(uid), int(gid) if gid.isdigit() else int(uid), home


@contextlib.contextmanager
def image_runtime(ref: str | None = None) -> Iterator[ImageRuntime]:
    """Mount ``ref`` (default ``$SWEEPYARD_LOCAL_IMAGE`` or ``make image``'s tag) for one run.

    Raises:
        ImageError: buildah or bubblewrap missing, the image not built, or a root image.
    """
    ref = ref or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
    tools = {t: shutil.which(t) for t in ("buildah", "bwrap", "env")}
    missing = [t for t, path in tools.items() if path is None]
    if missing:
        raise ImageError(
            f"RUNTIME=image needs {', '.join(missing)}: apt-get install -y buildah bubblewrap"
        )
    inspect = subprocess.run(
        ["buildah", "inspect", "--type", "image", ref], capture_output=True, text=True, timeout=60
    )
    if inspect.returncode != 0:
        raise ImageError(f"image {ref} is not built here: run `make image` first")
    config = json.loads(inspect.stdout).get("OCIv1", {}).get("config") or {}
    name = f"sweepyard-run-{uuid.uuid4().hex[:8]}"
    container = _run(["buildah", "from", "--pull=never", "--quiet", "--name", name, ref])
    try:
        rootfs = Path(_run(["buildah", "mount", container]))
        uid, gid, home = _user(config, rootfs, ref)
        env = dict(e.partition("=")[::2] for e in config.get("Env") or [])
        env.setdefault("HOME", home)
        yield ImageRuntime(
            ref=ref,
            rootfs=rootfs,
            uid=uid,
            gid=gid,
            env=env,
            workdir=str(config.get("WorkingDir") or "/"),
            env_tool=str(tools["env"]),
            bwrap=str(tools["bwrap"]),
        )
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, timeout=120)
