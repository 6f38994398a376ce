"""WAL checkpoints on a thread and connection of their own, so no commit waits for one.

SQLite copies its write-ahead log back into the database file once the log
passes ``wal_autocheckpoint`` pages (1,000 by default), inside the commit
that crossed the mark; with ``synchronous = NORMAL`` that checkpoint is
where the fsyncs are. Under steady writes one commit in every few dozen
waited milliseconds for them, and in a group commit the whole group would.
The store's connection keeps only a far-off autocheckpoint as a backstop;
this thread runs a PASSIVE checkpoint (it never blocks the writer or a
reader) ``interval_s`` after a commit, whatever followed it meanwhile, so
the log holds about that much time of writes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.1
# The store's own connection checkpoints only past this many pages (~32 MiB):
# when this thread falls that far behind, or is not running.
BACKSTOP_PAGES = 8000


class Checkpointer:
    """Checkpoints one database file a while after each commit; ``committed`` says one happened."""

    def __init__(
        self, path: str, *, interval_s: float = DEFAULT_INTERVAL_S, busy_timeout_ms: int = 5000
    ) -> None:
        self._path = path
        self._interval_s = interval_s
        self._busy_timeout_ms = busy_timeout_ms
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="sqlite-checkpoint", daemon=True)
        self.checkpoints = 0  # completed checkpoints (read by tests and logs)

    def start(self) -> None:
        self._thread.start()

    def committed(self) -> None:
        """Called after a commit (on the store's thread): cheap, never blocks."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (a checkpoint in progress finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _main(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None)
        except sqlite3.Error:
            log.warning("the WAL checkpointer could not open %s", self._path, exc_info=True)
            return
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            while True:
                self._wake.wait()
                # Let the commits of the next interval_s join this checkpoint.
                if self._stop.wait(self._interval_s):
                    return
                self._wake.clear()
                if self._stop.is_set():  # close() ran between the two lines above:
                    return  # the wake it set is cleared, and no other comes
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # the backstop still checkpoints; say why this one did not
                    log.warning("a WAL checkpoint failed", exc_info=True)
                    continue
                self.checkpoints += 1
        finally:
            conn.close()
