"""Every HTTP client of the gateway in the suite checks its answers (tests/gateway_http.py).

A raw httpx client or one-shot call anywhere else in tests/ must say, on its
line or in a comment just above it, that it talks to something else:
``# not the gateway`` and what it talks to.
"""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path

import httpx

from tests.openapi_check import CheckedTransport, found_so_far, gateway_check

TESTS = Path(__file__).resolve().parent
_RAW = re.compile(
    r"httpx\.(Client|AsyncClient|HTTPTransport|AsyncHTTPTransport|ASGITransport|WSGITransport"
    r"|get|post|put|patch|delete|head|options|request|stream)\("
    r"|from httpx import .*\b(Client|AsyncClient|ASGITransport|HTTPTransport|get|post|stream)\b"
)
_HOME = {TESTS / "gateway_http.py", Path(__file__).resolve()}
MARK = "# not the gateway"


def unmarked_raw_clients(root: Path) -> list[str]:
    """``path:line: text`` of each raw httpx client or call under ``root`` without the mark."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path in _HOME:
            continue
        above = ""
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _RAW.search(line) and MARK not in line and MARK not in above:
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
            above = line
    return found


def test_no_raw_client_of_the_gateway_in_the_suite() -> None:
    found = unmarked_raw_clients(TESTS)
    assert not found, (
        "use tests/gateway_http.py for the gateway, or mark the line "
        f"'{MARK}: <what it talks to>':\n" + "\n".join(found)
    )


def test_the_guard_sees_each_kind_of_raw_client(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text(
        "with httpx.Client(base_url=url) as c:\n"
        "    httpx.get(url)\n"
        "t = httpx.ASGITransport(app=app)\n"
        "from httpx import AsyncClient\n"
        f"httpx.get(fake.url)  {MARK}: the fake\n"
        f"{MARK}: the fake\n"
        "httpx.get(fake.url)\n"
        "def f(c: httpx.Client) -> None: ...\n"
    )
    assert [line.split(":")[1] for line in unmarked_raw_clients(tmp_path)] == ["1", "2", "3", "4"]


def test_a_disagreement_raised_where_no_test_looks_is_still_recorded() -> None:
    """A stream read in a thread swallows the check's error; tests/conftest.py still sees it."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "ok", "surprise": 1})

    transport = CheckedTransport(httpx.MockTransport(answer), gateway_check())
    before = len(found_so_far())

    def swallowed() -> None:
        with contextlib.suppress(AssertionError), httpx.Client(transport=transport) as client:
            client.get("http://gateway/health/live")

    thread = threading.Thread(target=swallowed)
    thread.start()
    thread.join()
    found = found_so_far()[before:]
    del gateway_check().found[before:]  # this test's own, not a failure of it
    assert len(found) == 1 and "surprise" in found[0]
