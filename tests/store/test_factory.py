"""Store URLs, and the stored form of content and page tokens (backend-independent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from service.content import TextBlock, ToolResultBlock, ToolUseBlock
from service.errors import InvalidRequest
from service.store import NewMessage, PostgresStore, SqliteStore, open_store
from service.store.rows import (
    decode_content,
    decode_page_token,
    encode_content,
    encode_page_token,
    title_from,
)


def test_sqlite_relative_absolute_and_memory_paths() -> None:
    relative = open_store("sqlite:///./data/agent.db")
    assert isinstance(relative, SqliteStore) and relative.path == "./data/agent.db"
    absolute = open_store("sqlite:////var/lib/agent/agent.db")
    assert isinstance(absolute, SqliteStore) and absolute.path == "/var/lib/agent/agent.db"
    memory = open_store("sqlite:///:memory:")
    assert isinstance(memory, SqliteStore) and memory.path == ":memory:"


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///x.db?mode=ro"]
)
def test_malformed_sqlite_urls(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite:///"):
        open_store(url)


@pytest.mark.parametrize("url", ["mysql://localhost/db", "redis://x", "agent.db", ""])
def test_unknown_scheme_is_a_clear_error(url: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///.*postgresql://"):
        open_store(url)


def test_postgres_urls_and_schema_option() -> None:
    plain = open_store("postgres://u@db:5432/agent")
    assert isinstance(plain, PostgresStore) and plain.schema is None
    scoped = open_store("postgresql://u@db/agent?sslmode=disable&schema=tenant_1")
    assert isinstance(scoped, PostgresStore) and scoped.schema == "tenant_1"
    with pytest.raises(ValueError, match="schema"):
        open_store("postgresql://u@db/agent?schema=Robert'); DROP TABLE x;--")


def test_postgres_write_retry_option() -> None:
    default = open_store("postgresql://u@db/agent")
    assert isinstance(default, PostgresStore) and default.write_retry_s == 20
    patient = open_store("postgresql://u@db/agent?write_retry_s=45&schema=t")
    assert isinstance(patient, PostgresStore)
    assert patient.write_retry_s == 45 and patient.schema == "t"
    assert "write_retry_s" not in patient._dsn  # never sent to the server
    for bad in ("-1", "soon", "nan", "99999"):
        with pytest.raises(ValueError, match="write_retry_s"):
            open_store(f"postgresql://u@db/agent?write_retry_s={bad}")


async def test_sqlite_creates_the_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "agent.db"
    async with open_store(f"sqlite:///{path}") as store:
        assert await store.ping()
    assert path.exists()


async def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///./data/agent.db") as store:
        await store.create_conversation("alice")
    assert os.path.exists(tmp_path / "data" / "agent.db")


async def test_sqlite_in_memory_works() -> None:
    async with open_store("sqlite:///:memory:") as store:
        conversation = await store.create_conversation("alice")
        assert (await store.get_conversation("alice", conversation.id)).id == conversation.id


def test_content_round_trip() -> None:
    blocks = (
        TextBlock("héllo \U0001f600"),
        ToolUseBlock(id="t1", name="clock", input={"tz": "Europe/Paris", "n": [1, 2.5]}),
        ToolResultBlock(tool_use_id="t1", content="12:00", is_error=False, name="clock"),
    )
    raw = encode_content(blocks)
    assert [item["type"] for item in json.loads(raw)] == [
        "text",
        "tool_use",
        "tool_result",
    ]
    assert decode_content(raw) == blocks


def test_unknown_stored_block_type_is_reported() -> None:
    with pytest.raises(ValueError, match="image"):
        decode_content('[{"type": "image"}]')


def test_title_skips_assistant_and_tool_results() -> None:
    batch = [
        NewMessage(role="assistant", content=[TextBlock("assistant text")]),
        NewMessage(role="user", content=[ToolResultBlock("t", "result")]),
        NewMessage(role="user", content=[TextBlock("   "), TextBlock("  the\tquestion ")]),
    ]
    assert title_from(batch) == "the question"
    assert title_from([NewMessage(role="assistant", content=[])]) == ""


def test_page_token_round_trip_and_rejections() -> None:
    assert decode_page_token("") is None
    assert decode_page_token(encode_page_token(12345)) == 12345
    for bad in ["%%%", encode_page_token(1)[:-2], "eyJ2IjoxLCJiZWZvcmUiOnRydWV9"]:
        with pytest.raises(InvalidRequest):
            decode_page_token(bad)
