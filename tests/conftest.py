"""Fixtures shared by the in-process tests: a fake Ollama server and a SQLite store.

End-to-end and provider tests have their own (module-scoped) fixtures in
their folders' conftest files. The tally of the tests marked ``postgres``
(``PostgresTally``) makes CI fail when the PostgreSQL half did not run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.store import ConversationStore, open_store
from tests.fakes.ollama import FakeOllama
from tests.openapi_check import found_so_far


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    """A fresh fake Ollama on loopback, for one test."""
    async with FakeOllama() as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConversationStore]:
    """An empty SQLite store in the test's own folder."""
    async with open_store(f"sqlite:///{tmp_path / 'chat.db'}") as s:
        yield s


@pytest.fixture(autouse=True)
def _answers_match_the_document() -> Iterator[None]:
    """Fails a test whose gateway answers disagreed with /openapi.json where no one looked.

    The check raises where a response is closed; a stream read in a thread
    (tests/e2e/queue_helpers.LiveStream) keeps that to itself unless joined.
    """
    before = len(found_so_far())
    yield
    late = found_so_far()[before:]
    assert not late, "responses disagree with /openapi.json:\n" + "\n".join(late)


# -- the PostgreSQL half of the suite -------------------------------------------------------

POSTGRES_ENV = "AGENT_TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    # A skip's longrepr is (path, line, reason); a list once xdist has carried it over.
    if isinstance(longrepr, tuple | list) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


class PostgresTally:
    """Counts the tests marked ``postgres`` and says in the summary whether they ran.

    Under CI (the variable ``CI`` set) the run fails when AGENT_TEST_POSTGRES_URL
    is unset or a ``postgres`` test was skipped for lack of it: a green CI log
    must mean the PostgreSQL half ran. Reports reach the controller from the
    xdist workers with their markers in ``report.keywords``, so the tally
    lives on the controller (or the only process) alone.
    """

    def __init__(self) -> None:
        self.passed: set[str] = set()
        self.failed: set[str] = set()
        self.skipped: dict[str, str] = {}  # node id → reason

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "postgres" not in report.keywords:
            return
        if report.failed:
            self.failed.add(report.nodeid)
        elif report.skipped and not hasattr(report, "wasxfail"):
            self.skipped[report.nodeid] = _skip_reason(report)
        elif report.when == "call" and report.passed:
            self.passed.add(report.nodeid)

    @property
    def unconfigured(self) -> int:
        """postgres tests skipped because no database was given."""
        return sum(POSTGRES_ENV in reason for reason in self.skipped.values())

    def problem(self) -> str | None:
        """Why this run must not count as green under CI, if it must not."""
        if not _in_ci():
            return None
        if not os.environ.get(POSTGRES_ENV):
            return f"CI is set but {POSTGRES_ENV} is not: the PostgreSQL half cannot run"
        if self.unconfigured:
            return f"CI is set but {self.unconfigured} postgres tests were skipped for lack of it"
        return None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        seen = len(self.passed) + len(self.failed) + len(self.skipped)
        if not seen and not _in_ci():
            return
        line = (
            f"tests marked postgres: {len(self.passed)} passed, {len(self.skipped)} skipped"
            f" ({self.unconfigured} for lack of {POSTGRES_ENV}), {len(self.failed)} failed"
        )
        terminalreporter.write_sep("-", "PostgreSQL")
        terminalreporter.write_line(line)
        problem = self.problem()
        if problem is not None:
            terminalreporter.write_line(f"FAILED: {problem}", red=True, bold=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.problem() is not None and session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # an xdist worker's reports go to the controller
        config.pluginmanager.register(PostgresTally(), "postgres-tally")
