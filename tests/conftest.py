"""Shared fixtures: a temporary data dir, and a migrated store on SQLite and PostgreSQL.

Tests taking ``store`` run once per engine. PostgreSQL is the server on
127.0.0.1:5432 (``CRMROUTE_TEST_PG_URL`` overrides); each test gets a new
database, dropped afterwards. Its runs skip only when no server answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from crmroute.service import Store
from crmroute.settings import Settings

PG_ADMIN_URL = os.environ.get("CRMROUTE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


PG_AVAILABLE = _pg_available()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{data_dir / 'crmroute.db'}"
        return
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"crmroute_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(data_dir: Path, db_url: str = "", **env: str) -> Settings:
    environ = {"CRMROUTE_DATA_DIR": str(data_dir), "CRMROUTE_DATABASE_URL": db_url}
    environ.update({f"CRMROUTE_{k.upper()}": v for k, v in env.items()})
    return Settings.from_env(environ)


@pytest.fixture
def settings(data_dir: Path, db_url: str) -> Settings:
    return make_settings(data_dir, db_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store(settings)
    store.upgrade()
    try:
        yield store
    finally:
        store.close()
