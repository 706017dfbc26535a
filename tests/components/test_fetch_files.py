"""Local sources: file:// URIs, plain paths (file or folder) and pkg:// package data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.data.storage import COMPLETE, MANIFEST, FetchError
from components.fetch import fetch

REPO = Path(__file__).resolve().parents[2]


def make_tree(root: Path) -> dict[str, bytes]:
    files = {"a.csv": b"x,y\n1,2\n", "nested/b.bin": os.urandom(3000), "nested/deeper/c.txt": b"c"}
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return files


def test_folder_by_file_uri_and_plain_path_is_one_version(tmp_path: Path):
    src = tmp_path / "src"
    files = make_tree(src)
    env = {"SWEEPYARD_SHARED": str(tmp_path / "shared")}
    first = fetch(f"file://{src}", "local", env=env)
    assert first.downloaded
    for name, content in files.items():
        assert (first.path / name).read_bytes() == content
    manifest = json.loads((first.path / MANIFEST).read_text())
    assert manifest["kind"] == "file" and manifest["count"] == 3
    assert manifest["source"] == f"file://{src}"

    os.utime(src / "a.csv", (1, 1))  # a new mtime is not a new version: the content is
    plain = fetch(str(src), "local", env=env)
    assert (plain.path, plain.downloaded) == (first.path, False)

    (src / "a.csv").write_bytes(b"x,y\n1,3\n")
    changed = fetch(str(src), "local", env=env)
    assert changed.hash != first.hash and changed.downloaded
    assert (changed.path / "a.csv").read_bytes() == b"x,y\n1,3\n"
    assert (first.path / "a.csv").read_bytes() == b"x,y\n1,2\n"


def test_single_file_and_package_data(tmp_path: Path):
    import sklearn.datasets

    env = {"SWEEPYARD_SHARED": str(tmp_path / "shared")}
    result = fetch("pkg://sklearn.datasets/data/digits.csv.gz", "digits", env=env)
    shipped = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    assert (result.path / "digits.csv.gz").read_bytes() == shipped.read_bytes()
    assert sorted(p.name for p in result.path.iterdir()) == [
        ".complete",
        "MANIFEST.json",
        "digits.csv.gz",
    ]
    # The same bytes from a plain path are the same version.
    assert fetch(str(shipped), "digits", env=env).hash == result.hash


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file://host/abs/path", "file:// URIs take an absolute path"),
        ("pkg://sklearn.datasets", "expected pkg://PYTHON.MODULE/RELATIVE/PATH"),
        ("pkg://sklearn.datasets/../secrets", "must stay inside the package"),
        ("pkg://no_such_module_x/data.csv", "no installed Python package 'no_such_module_x'"),
        ("pkg://sklearn.datasets/data/nope.csv", "no such file or folder"),
        ("file:///definitely/not/here", "file:///definitely/not/here: no such file or folder"),
        ("", "malformed source ''"),
    ],
)
def test_bad_local_sources(uri: str, message: str, tmp_path: Path):
    with pytest.raises(FetchError, match=message.replace("(", r"\(")):
        fetch(uri, "ds", env={"SWEEPYARD_SHARED": str(tmp_path)})


def test_empty_folder_and_bad_dataset_name(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    env = {"SWEEPYARD_SHARED": str(tmp_path / "shared")}
    with pytest.raises(FetchError, match=r"empty: the folder is empty"):
        fetch(str(tmp_path / "empty"), "ds", env=env)
    with pytest.raises(FetchError, match=r"invalid dataset name '\.\./up'"):
        fetch(str(tmp_path), "../up", env=env)
    with pytest.raises(FetchError, match="SWEEPYARD_SHARED is not set"):
        fetch(str(tmp_path), "ds", env={})


def test_cli_exit_codes_and_output(tmp_path: Path):
    src = tmp_path / "src"
    make_tree(src)
    env = {
        "PATH": "/usr/bin:/bin",
        "SWEEPYARD_SHARED": str(tmp_path / "shared"),
        "SWEEPYARD_OUTPUTS": str(tmp_path / "out"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "components.fetch", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run(str(src), "--dataset", "cli")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert (tmp_path / "out" / "path").read_text() == out["path"]
    assert (tmp_path / "out" / "hash").read_text() == out["hash"]
    assert (Path(out["path"]) / COMPLETE).exists()
    missing = run(str(tmp_path / "nope"), "--dataset", "cli")
    assert missing.returncode == 3 and "no such file or folder" in missing.stderr
    assert missing.stdout == ""
    usage = run(str(src))
    assert usage.returncode == 3 and "--dataset" in usage.stderr
