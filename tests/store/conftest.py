"""One contract suite, two backends: every test taking ``store`` or ``backend`` runs on both.

The PostgreSQL variant needs AGENT_TEST_POSTGRES_URL and is skipped without it.
Each PostgreSQL test gets its own randomly named schema, dropped afterwards, so
parallel runs against one database never see each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.store import ConversationStore, PostgresStore, SqliteStore, sqlite_ops
from service.store.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Migration

POSTGRES_ENV = "AGENT_TEST_POSTGRES_URL"


@dataclass
class Backend:
    """Opens stores on one test database and can count its rows behind the store's back."""

    name: str
    sqlite_path: Path | None = None
    postgres_url: str = ""
    schema: str = ""
    opened: list[ConversationStore] = field(default_factory=list)

    def make(self, migrations: Sequence[Migration] | None = None) -> ConversationStore:
        """A new, unopened store on this backend's database (another 'process')."""
        store: ConversationStore
        if self.sqlite_path is not None:
            store = SqliteStore(self.sqlite_path, migrations=migrations or SQLITE_MIGRATIONS)
        else:
            store = PostgresStore(
                self.postgres_url,
                schema=self.schema,
                max_size=4,
                migrations=migrations or POSTGRES_MIGRATIONS,
            )
        self.opened.append(store)
        return store

    async def count(self, table: str) -> int:
        """Rows in ``table``, read with a separate connection."""
        query = f"SELECT COUNT(*) FROM {table}"
        if self.sqlite_path is not None:
            return await asyncio.to_thread(_count_sqlite, self.sqlite_path, query)
        conn = await asyncpg.connect(
            self.postgres_url, server_settings={"search_path": self.schema}
        )
        try:
            return int(await conn.fetchval(query))
        finally:
            await conn.close()

    async def execute(self, statement: str) -> None:
        """Run one statement with a separate connection (to age rows behind the store's back)."""
        if self.sqlite_path is not None:
            await asyncio.to_thread(_execute_sqlite, self.sqlite_path, statement)
            return
        conn = await asyncpg.connect(
            self.postgres_url, server_settings={"search_path": self.schema}
        )
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


def _count_sqlite(path: Path, query: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(query).fetchone()[0])


def _execute_sqlite(path: Path, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(statement)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        chosen = Backend("sqlite", sqlite_path=tmp_path / "data" / "agent.db")
        yield chosen
        for store in chosen.opened:
            await store.close()
        return
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    chosen = Backend("postgres", postgres_url=url, schema="t_" + secrets.token_hex(8))
    try:
        yield chosen
    finally:
        for store in chosen.opened:
            await store.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{chosen.schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def store(backend: Backend) -> ConversationStore:
    """An open store on a fresh database; closed by the backend fixture."""
    opened = backend.make()
    await opened.open()
    return opened


# --- the SQLite store's own thread: its database file, and a watch on its operations


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


Watch = Callable[[str], threading.Event]  # the name of a sqlite_ops operation -> an event


@pytest.fixture
def entered(monkeypatch: pytest.MonkeyPatch) -> Watch:
    """An event set when the store's thread enters the operation ``sqlite_ops.<name>``."""

    def watch(name: str) -> threading.Event:
        event = threading.Event()
        operation = getattr(sqlite_ops, name)

        def observed(*args: Any, **kwargs: Any) -> Any:
            event.set()
            return operation(*args, **kwargs)

        monkeypatch.setattr(sqlite_ops, name, observed)
        return event

    return watch
