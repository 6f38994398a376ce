"""Build a store from its URL (``store.url`` in the settings)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from service.store.base import ConversationStore
from service.store.postgres import PostgresStore
from service.store.sqlite import SqliteStore

_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def open_store(url: str) -> ConversationStore:
    """The store a URL names, not yet opened: call ``await store.open()`` (or ``async with``).

    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
      ``sqlite:///:memory:``; the parent directory is created on open.
    - ``postgresql://user@host:port/db`` (or ``postgres://``); an optional
      ``schema=name`` query parameter puts the tables in that schema.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"store URL {url!r} has no scheme; use sqlite:///path or postgresql://")
    if scheme == "sqlite":
        return SqliteStore(_sqlite_path(url, rest))
    if scheme in _POSTGRES_SCHEMES:
        dsn, schema = _split_schema(url)
        return PostgresStore(dsn, schema=schema)
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}; use sqlite:///path/to.db or postgresql://..."
    )


def postgres_target(url: str) -> tuple[str, str | None] | None:
    """(DSN, schema) of a PostgreSQL store URL; None for any other URL.

    The shared scheduler keeps its tables (``sched_*``) in the store's database and schema.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in _POSTGRES_SCHEMES:
        return None
    return _split_schema(url)


def _sqlite_path(url: str, rest: str) -> str:
    # sqlite:///x -> "x" (relative); sqlite:////x -> "/x" (absolute), as SQLAlchemy spells it.
    if not rest.startswith("/") or len(rest) < 2 or "?" in rest:
        raise ValueError(
            f"SQLite store URL {url!r} must look like sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:"
        )
    return rest[1:]


def _split_schema(url: str) -> tuple[str, str | None]:
    """The DSN without our ``schema`` parameter (asyncpg would send it to the server)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    rest = [(key, value) for key, value in query if key != "schema"]
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return dsn, (schemas[-1] or None) if schemas else None
