from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import Code, InvalidRequest
from service.profiles import MAX_PROFILE_BYTES, Profile, ProfileDirectory, validate_user_id


@pytest.mark.parametrize(
    "user_id", ["alice", "Bob_2", "a.b-c", "user@example.com", "x" * 128, "a..b", "7"]
)
def test_valid_user_ids(user_id: str) -> None:
    assert validate_user_id(user_id) == user_id


@pytest.mark.parametrize(
    "user_id",
    [
        "",
        "x" * 129,
        ".hidden",
        ".",
        "..",
        "../etc/passwd",
        "a/b",
        "a\\b",
        "a b",
        "ali\x00ce",
        "alice\n",
        "é",
        "~root",
        "a:b",
    ],
)
def test_invalid_user_ids(user_id: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_user_id(user_id)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "user_id" in info.value.message


async def test_no_directory_gives_defaults() -> None:
    profiles = ProfileDirectory(None)
    assert await profiles.load("alice") == Profile("alice", "alice", "")
    assert await profiles.reload("alice") == Profile("alice", "alice", "")


async def test_no_directory_still_validates() -> None:
    with pytest.raises(InvalidRequest):
        await ProfileDirectory(None).load("../x")


async def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert await ProfileDirectory(tmp_path).load("bob") == Profile("bob", "bob", "")


async def test_missing_directory_gives_defaults(tmp_path: Path) -> None:
    profiles = ProfileDirectory(tmp_path / "does-not-exist")
    assert await profiles.load("bob") == Profile("bob", "bob", "")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("alice.yaml", "display_name: Alice\nsystem_prompt: |\n  Answer in French.\n"),
        ("alice.yml", "display_name: Alice\nsystem_prompt: Answer in French.\n"),
        ("alice.json", '{"display_name": "Alice", "system_prompt": "Answer in French."}'),
    ],
)
async def test_profile_from_file(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    profile = await ProfileDirectory(tmp_path).load("alice")
    assert profile == Profile("alice", "Alice", "Answer in French.")


async def test_partial_and_empty_files_fall_back_to_defaults(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("system_prompt: Be brief.\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("display_name: Bee\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text("", encoding="utf-8")
    (tmp_path / "d.yaml").write_text("display_name: null\nsystem_prompt: '  '\n", "utf-8")
    profiles = ProfileDirectory(tmp_path)
    assert await profiles.load("a") == Profile("a", "a", "Be brief.")
    assert await profiles.load("b") == Profile("b", "Bee", "")
    assert await profiles.load("c") == Profile("c", "c", "")
    assert await profiles.load("d") == Profile("d", "d", "")


async def test_yaml_is_preferred_over_json(tmp_path: Path) -> None:
    (tmp_path / "u.yaml").write_text("display_name: From YAML\n", encoding="utf-8")
    (tmp_path / "u.json").write_text('{"display_name": "From JSON"}', encoding="utf-8")
    assert (await ProfileDirectory(tmp_path).load("u")).display_name == "From YAML"


async def test_load_is_cached_and_reload_rereads(tmp_path: Path) -> None:
    path = tmp_path / "carol.yaml"
    path.write_text("display_name: Carol\n", encoding="utf-8")
    profiles = ProfileDirectory(tmp_path)
    assert (await profiles.load("carol")).display_name == "Carol"

    path.write_text("display_name: Caroline\nsystem_prompt: Call me Caroline.\n", "utf-8")
    assert (await profiles.load("carol")).display_name == "Carol"  # cached
    reloaded = await profiles.reload("carol")
    assert reloaded == Profile("carol", "Caroline", "Call me Caroline.")
    assert await profiles.load("carol") == reloaded

    path.unlink()
    assert await profiles.reload("carol") == Profile("carol", "carol", "")


async def test_defaults_are_cached_until_reload(tmp_path: Path) -> None:
    profiles = ProfileDirectory(tmp_path)
    assert (await profiles.load("dave")).display_name == "dave"
    (tmp_path / "dave.yml").write_text("display_name: Dave\n", encoding="utf-8")
    assert (await profiles.load("dave")).display_name == "dave"
    assert (await profiles.reload("dave")).display_name == "Dave"


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("m.yaml", "display_name: [unclosed\n", "but got '<stream end>' at line 2"),
        ("m.yaml", "a: b\n  c: d\n", "at line 2, column 4"),
        ("m.yaml", "- just\n- a list\n", "expected a mapping"),
        ("m.yaml", "plain text\n", "expected a mapping of keys, got str"),
        ("m.yaml", "display_name: 42\n", "display_name must be a string, got int"),
        ("m.yaml", "system_prompt: {a: 1}\n", "system_prompt must be a string, got dict"),
        ("m.yaml", "system_promt: typo\n", "unknown key(s) system_promt"),
        ("m.json", '{"display_name": "x",}', "line 1"),
        ("m.json", "[]", "expected a mapping"),
    ],
)
async def test_malformed_file_is_invalid_request(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(InvalidRequest) as info:
        await ProfileDirectory(tmp_path).load("m")
    assert name in info.value.message
    assert problem in info.value.message
    assert str(tmp_path) not in info.value.message  # server paths stay private


async def test_unreadable_files_are_invalid_request(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"display_name: \xff\xfe\n")
    (tmp_path / "big.yaml").write_bytes(b"#" * (MAX_PROFILE_BYTES + 1))
    (tmp_path / "dir.yaml").mkdir()
    profiles = ProfileDirectory(tmp_path)
    for user_id, problem in [("bin", "not UTF-8"), ("big", "larger than"), ("dir", "")]:
        with pytest.raises(InvalidRequest) as info:
            await profiles.load(user_id)
        assert f"{user_id}.yaml" in info.value.message
        assert problem in info.value.message


async def test_error_is_not_cached(tmp_path: Path) -> None:
    path = tmp_path / "erin.yaml"
    path.write_text("display_name: [\n", encoding="utf-8")
    profiles = ProfileDirectory(tmp_path)
    with pytest.raises(InvalidRequest):
        await profiles.load("erin")
    path.write_text("display_name: Erin\n", encoding="utf-8")
    assert (await profiles.load("erin")).display_name == "Erin"


async def test_traversal_never_reaches_the_filesystem(tmp_path: Path) -> None:
    inside = tmp_path / "profiles"
    inside.mkdir()
    (tmp_path / "secret.yaml").write_text("display_name: leaked\n", encoding="utf-8")
    profiles = ProfileDirectory(inside)
    for user_id in ["../secret", "..", "sub/../../secret"]:
        with pytest.raises(InvalidRequest):
            await profiles.load(user_id)
        with pytest.raises(InvalidRequest):
            await profiles.reload(user_id)
