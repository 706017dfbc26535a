"""What the gs:// fetch tests write and check: fresh bucket names, random objects, a fetched folder
against them, and the fetch CLI run in a subprocess. No tests here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bucket_name() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


def objects(n: int, size: int, prefix: str = "train") -> dict[str, bytes]:
    return {f"{prefix}/part-{i:04d}.bin": os.urandom(size) for i in range(n)}


def assert_matches(path: Path, objs: dict[str, bytes], prefix: str = "train") -> None:
    for name, content in objs.items():
        assert (path / name[len(prefix) + 1 :]).read_bytes() == content, name


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "components.fetch", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
