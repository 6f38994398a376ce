"""The tally of the tests marked ``postgres``: what it counts, and when it fails a CI run."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import POSTGRES_ENV, PostgresTally


def report(
    name: str, outcome: Any, when: Any = "call", *, marked: bool = True, reason: str = ""
) -> pytest.TestReport:
    keywords: dict[str, Any] = {name: 1, "postgres": 1} if marked else {name: 1}
    longrepr = ("tests/x.py", 1, f"Skipped: {reason}") if outcome == "skipped" else None
    return pytest.TestReport(
        f"tests/x.py::{name}", ("tests/x.py", 1, name), keywords, outcome, longrepr, when
    )


def tally_of(*reports: pytest.TestReport) -> PostgresTally:
    tally = PostgresTally()
    for r in reports:
        tally.pytest_runtest_logreport(r)
    return tally


def test_it_counts_only_postgres_tests_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    tally = tally_of(
        report("a", "passed", "setup"),
        report("a", "passed"),
        report("a", "passed", "teardown"),
        report("b", "skipped", "setup", reason=f"{POSTGRES_ENV} is not set"),
        report("c", "skipped", "setup", reason="no server binaries"),
        report("d", "failed"),
        report("d", "failed", "teardown"),
        report("memory", "passed", marked=False),
    )
    assert (tally.passed, tally.failed) == ({"tests/x.py::a"}, {"tests/x.py::d"})
    assert set(tally.skipped) == {"tests/x.py::b", "tests/x.py::c"}
    assert tally.unconfigured == 1
    assert tally.problem() is None  # not in CI


def test_under_ci_a_missing_database_url_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv(POSTGRES_ENV, raising=False)
    problem = PostgresTally().problem()
    assert problem is not None and POSTGRES_ENV in problem


def test_under_ci_a_postgres_test_skipped_for_lack_of_it_fails_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv(POSTGRES_ENV, "postgresql://db/test")
    assert tally_of(report("c", "skipped", reason="no server binaries")).problem() is None
    lacking = tally_of(report("b", "skipped", reason=f"{POSTGRES_ENV} is not set"))
    assert lacking.problem() is not None
    monkeypatch.setenv("CI", "false")
    assert lacking.problem() is None
