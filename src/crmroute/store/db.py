"""Engine, sessions and migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from crmroute.settings import Settings
from crmroute.store.models import Meta
from crmroute.store.notify import announce
from crmroute.store.secrets import SecretBox

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
CONFIG_VERSION = "config_version"


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed at the end, or rolled back on error."""
    with factory() as session, session.begin():
        yield session


def upgrade(engine: Engine) -> None:
    """Migrate the database to the newest schema (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


MAX_ID = 2**31 - 1  # ids are INTEGER columns


def is_id(value: int) -> bool:
    """Whether ``value`` can be a row id (a larger number would make the database itself fail)."""
    return 0 < value <= MAX_ID


def config_version(session: Session) -> int:
    value = session.scalar(select(Meta.value).where(Meta.key == CONFIG_VERSION))
    return int(value) if value else 0


def bump_config_version(session: Session) -> None:
    """Tell every AGI worker sharing this store to reload rules, DIDs and IVRs (on PostgreSQL at once: notify.py)."""
    meta = session.get(Meta, CONFIG_VERSION, with_for_update=True)
    if meta is None:
        meta = Meta(key=CONFIG_VERSION, value="1")
        session.add(meta)
    else:
        meta.value = str(int(meta.value or 0) + 1)
    announce(session, int(meta.value))


@dataclass
class Store:
    """The database and the key for its secrets."""

    settings: Settings
    engine: Engine = field(init=False)
    factory: sessionmaker[Session] = field(init=False)
    box: SecretBox = field(init=False)

    def __post_init__(self) -> None:
        self.settings.ensure_data_dir()
        self.engine = make_engine(self.settings.db_url)
        self.factory = make_sessionmaker(self.engine)
        self.box = SecretBox.from_settings(self.settings)

    def upgrade(self) -> None:
        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()
