"""Counts the statements asyncpg connections send (pass ``attach`` as a pool's ``init``)."""

from __future__ import annotations

from typing import Any


class QueryCounter:
    """Counts the statements every attached connection sends."""

    def __init__(self) -> None:
        self.count = 0

    async def attach(self, conn: Any) -> None:
        conn.add_query_logger(self._seen)

    def _seen(self, _record: Any) -> None:
        self.count += 1
