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
      ``schema=name`` query parameter puts the tables in that schema, and
      ``write_retry_s=seconds`` (default 20) bounds how long a turn's final write
      waits out a database outage before its stream ends with the 503.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"store URL {url!r} has no scheme; use sqlite:///path or postgresql://")
    if scheme == "sqlite":
        return SqliteStore(_sqlite_path(url, rest))
    if scheme in _POSTGRES_SCHEMES:
        dsn, options = _split_options(url)
        schema = options.get("schema") or None
        if "write_retry_s" not in options:
            return PostgresStore(dsn, schema=schema)
        return PostgresStore(dsn, schema=schema, write_retry_s=_seconds(url, options))
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
    dsn, options = _split_options(url)
    return dsn, options.get("schema") or None


def _sqlite_path(url: str, rest: str) -> str:
    # sqlite:///x -> "x" (relative); sqlite:////x -> "/x" (absolute), as SQLAlchemy spells it.
    if not rest.startswith("/") or len(rest) < 2 or "?" in rest:
        raise ValueError(
            f"SQLite store URL {url!r} must look like sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:"
        )
    return rest[1:]


_OUR_OPTIONS = frozenset({"schema", "write_retry_s"})


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """The DSN without our own query parameters (asyncpg would send them to the server)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {key: value for key, value in query if key in _OUR_OPTIONS}  # the last one wins
    rest = [(key, value) for key, value in query if key not in _OUR_OPTIONS]
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return dsn, ours


def _seconds(url: str, options: dict[str, str]) -> float:
    raw = options["write_retry_s"]
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ValueError(
            f"store URL {url!r}: write_retry_s must be a number of seconds from 0 to 3600,"
            f" got {raw!r}"
        )
    return value
