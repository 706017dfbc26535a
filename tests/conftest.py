"""Shared fixtures: real services started on loopback by the tests themselves."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipelines.backends.mlflow_server import MlflowServer, start_mlflow_server

if TYPE_CHECKING:
    from tests.support.rerun import Origin

REPO = Path(__file__).resolve().parents[1]
SHARED_ARGO = REPO.parent / "shared" / "argo"
POSTGRES_ADMIN_URL = os.environ.get(
    "SWEEPYARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow tracking server (sqlite store) for the whole test session."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rerun_origin(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> Origin:
    """The origin trial the rerun tests rerun (tests/support/rerun.py), run once per session."""
    from tests.support.rerun import make_origin

    return make_origin(tmp_path_factory.mktemp("rerun"), mlflow_server.url)


@pytest.fixture
def fresh_mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A real MLflow tracking server of the test's own (for outage and isolation tests)."""
    server = start_mlflow_server(tmp_path / "mlflow")
    yield server
    server.stop()


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (127.0.0.1:5432); its SQLAlchemy URL."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = f"sweepyard_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()
