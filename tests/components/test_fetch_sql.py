"""Database sources against the machine's PostgreSQL (127.0.0.1:5432), snapshotted to Parquet."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy
from sqlalchemy.engine import Engine

from components.data.sources.sql import PASSWORD_ENV, database_url
from components.data.storage import COMPLETE, MANIFEST, FetchError
from components.fetch import fetch

REPO = Path(__file__).resolve().parents[2]
QUERY = "SELECT id, name, score FROM samples ORDER BY id"


@pytest.fixture
def db(postgres_db: str) -> Iterator[str]:
    engine = sqlalchemy.create_engine(postgres_db)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE samples (id int PRIMARY KEY, name text, score float8)")
        conn.exec_driver_sql(
            "INSERT INTO samples SELECT i, 'row ' || i, i * 0.5 FROM generate_series(1, 250) i"
        )
    engine.dispose()
    yield postgres_db


def query_rows(url: str, query: str = QUERY) -> list[tuple]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql(query)]
    engine.dispose()
    return rows


def snapshot_rows(path: Path) -> list[tuple]:
    table = pq.read_table(path / "table.parquet")
    return list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def test_snapshot_equals_query_reused_then_new_version_on_change(db: str, tmp_path: Path):
    env = {"SWEEPYARD_SHARED": str(tmp_path)}
    first = fetch(db, "samples", query=QUERY, env=env)
    assert first.downloaded
    assert snapshot_rows(first.path) == query_rows(db)
    assert pq.read_table(first.path / "table.parquet").column_names == ["id", "name", "score"]
    manifest = json.loads((first.path / MANIFEST).read_text())
    assert manifest["kind"] == "sql" and manifest["rows"] == 250 and manifest["query"] == QUERY
    assert manifest["files"][0]["name"] == "table.parquet" and (first.path / COMPLETE).exists()

    again = fetch(db, "samples", query=QUERY, env=env)
    assert (again.path, again.hash, again.downloaded) == (first.path, first.hash, False)

    engine = sqlalchemy.create_engine(db)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE samples SET score = -1 WHERE id = 7")
    engine.dispose()
    changed = fetch(db, "samples", query=QUERY, env=env)
    assert changed.hash != first.hash and changed.downloaded
    assert snapshot_rows(changed.path) == query_rows(db)
    assert snapshot_rows(changed.path)[6] == (7, "row 7", -1.0)
    assert snapshot_rows(first.path)[6] == (7, "row 7", 3.5)  # the old version stays frozen

    other = fetch(db, "samples", query="SELECT id FROM samples ORDER BY id", env=env)
    assert other.hash not in (first.hash, changed.hash)


@pytest.fixture
def role_with_password(db: str) -> Iterator[tuple[str, str]]:
    """A login role with a password (pg_hba is trust here, so the test also checks libpq got it)."""
    role = f"sweepyard_reader_{uuid.uuid4().hex[:8]}"
    password = f"S3cret-{uuid.uuid4().hex}"
    engine = sqlalchemy.create_engine(db, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"ALTER ROLE {role} PASSWORD '{password}'")
        conn.exec_driver_sql(f"GRANT SELECT ON samples TO {role}")
    url = sqlalchemy.engine.make_url(db).set(username=role, host="127.0.0.1", port=5432)
    yield url.render_as_string(hide_password=False), password
    with engine.connect() as conn:
        conn.exec_driver_sql(f"REVOKE ALL ON samples FROM {role}")
        conn.exec_driver_sql(f"DROP ROLE {role}")
    engine.dispose()


def test_password_comes_from_the_secret_and_never_leaks(role_with_password, tmp_path: Path):
    url, password = role_with_password
    seen: list[str | None] = []

    def on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        seen.append(dbapi_conn.info.password)
        assert dbapi_conn.info.user == url.split("://", 1)[1].split("@", 1)[0]

    sqlalchemy.event.listen(Engine, "connect", on_connect)
    try:
        result = fetch(
            url,
            "secret",
            query=QUERY,
            env={"SWEEPYARD_SHARED": str(tmp_path), PASSWORD_ENV: password},
        )
    finally:
        sqlalchemy.event.remove(Engine, "connect", on_connect)
    assert seen == [password]  # libpq connected over TCP with the secret's password
    assert len(snapshot_rows(result.path)) == 250

    env = {
        "PATH": "/usr/bin:/bin",
        "SWEEPYARD_SHARED": str(tmp_path / "cli"),
        "SWEEPYARD_OUTPUTS": str(tmp_path / "outputs"),
        PASSWORD_ENV: password,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "components.fetch", url, "--dataset", "secret", "--query", QUERY],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    path = Path(json.loads(proc.stdout)["path"])
    assert snapshot_rows(path) == query_rows(url.replace("@", f":{password}@", 1))
    written = [p for p in (tmp_path / "cli").rglob("*") if p.is_file()]
    written += list((tmp_path / "outputs").iterdir())
    assert {p.name for p in written} >= {"MANIFEST.json", "path", "hash", "table.parquet"}
    for text in [proc.stdout, proc.stderr, *(p.read_bytes().decode("latin-1") for p in written)]:
        assert password not in text


def test_url_with_a_password_is_refused_without_echoing_it(db: str, tmp_path: Path):
    secret = f"pw-{uuid.uuid4().hex}"
    url = db.replace("postgres@", f"postgres:{secret}@")
    with pytest.raises(FetchError) as info:
        fetch(url, "x", query=QUERY, env={"SWEEPYARD_SHARED": str(tmp_path)})
    message = str(info.value)
    assert secret not in message
    assert "contains a password" in message and "SWEEPYARD_DB_PASSWORD" in message
    assert "postgres:***@127.0.0.1" in message
    proc = subprocess.run(
        [sys.executable, "-m", "components.fetch", url, "--dataset", "x", "--query", QUERY],
        env={"PATH": "/usr/bin:/bin", "SWEEPYARD_SHARED": str(tmp_path)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert secret not in proc.stdout + proc.stderr and "contains a password" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_bad_query_and_missing_query(db: str, tmp_path: Path):
    env = {"SWEEPYARD_SHARED": str(tmp_path)}
    with pytest.raises(
        FetchError,
        match=r"database source postgresql://postgres@.*: the query failed: .*no_such_table",
    ):
        fetch(db, "x", query="SELECT * FROM no_such_table", env=env)
    with pytest.raises(
        FetchError, match=r"database source postgresql://postgres@.*: --query is required"
    ):
        fetch(db, "x", env=env)
    with pytest.raises(FetchError, match=r"--query applies only to a database URL"):
        fetch(str(tmp_path), "x", query="SELECT 1", env=env)


def test_database_url_sets_the_password_from_env_only():
    url = database_url("postgresql://reader@db.internal:5432/features", {PASSWORD_ENV: "pw"})
    assert url.password == "pw" and url.username == "reader"
    assert "pw" not in url.render_as_string(hide_password=True)
    assert database_url("postgresql://reader@db.internal/features", {}).password is None
