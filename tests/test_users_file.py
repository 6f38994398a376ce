"""The users file: its two entry forms, reload on change, and the `users` command line."""

from __future__ import annotations

import hashlib
import logging
import re
import stat
from pathlib import Path

import pytest

from service.auth import Authenticator
from service.errors import InvalidRequest, Unauthenticated
from service.main import main as service_main
from service.main import users_argv
from service.userfile import UserEntry, load_users, write_users


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_short_and_long_forms(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(
        "# operators\n"
        "alice: tok-a\n"
        f"bob:\n  token: '{digest('tok-b')}'\n  tier: pro\n  admin: true\n"
        "carol: {token: tok-c, tier: free}\n"
    )
    users = load_users(path)
    assert users["alice"] == UserEntry("alice", "tok-a")
    assert (users["bob"].tier, users["bob"].admin) == ("pro", True)
    assert users["carol"].tier == "free" and not users["carol"].admin
    auth = Authenticator(users_file=path)
    bob = auth.authenticate("Bearer tok-b")
    assert (bob.user_id, bob.admin) == ("bob", True)
    assert not auth.authenticate("Bearer tok-a").admin
    assert (auth.tier_of("bob"), auth.tier_of("alice"), auth.tier_of("nobody")) == ("pro", "", "")


@pytest.mark.parametrize(
    "text",
    [
        "alice: {tier: pro}\n",  # no token
        "alice: {token: t, role: admin}\n",  # unknown key
        "alice: {token: t, admin: 'yes'}\n",  # not a boolean
        "alice: 'sha256:abc'\n",  # not a digest
        "alice: ''\n",
        "- a list\n",
    ],
)
def test_malformed_entries_are_refused_with_the_reason(tmp_path: Path, text: str) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"users\.yaml"):
        load_users(path)


def test_a_bad_user_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("'../x': t\n")
    with pytest.raises(InvalidRequest):
        load_users(path)


def test_changes_are_picked_up_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    write_users(path, {"alice": UserEntry("alice", digest("old"))})
    clock = Clock()
    auth = Authenticator(users_file=path, reload_interval_s=1.0, clock=clock)
    assert auth.authenticate("Bearer old").user_id == "alice"

    write_users(path, {"alice": UserEntry("alice", digest("new"), tier="pro")})
    clock.now = 0.5  # checked at most once a second
    assert auth.authenticate("Bearer old").user_id == "alice"
    clock.now = 1.0
    with pytest.raises(Unauthenticated):
        auth.authenticate("Bearer old")
    assert auth.authenticate("Bearer new").user_id == "alice"
    assert auth.tier_of("alice") == "pro"

    path.write_text("alice: {token: [broken\n")  # a bad edit keeps the last good file
    clock.now = 2.0
    assert auth.authenticate("Bearer new").user_id == "alice"

    write_users(path, {})  # everyone revoked: nobody gets in, and the service is not open
    clock.now = 3.0
    with pytest.raises(Unauthenticated):
        auth.authenticate("Bearer new")
    with pytest.raises(Unauthenticated):
        auth.authenticate(None)


def users(path: Path, *args: str) -> int:
    """The command on ``path``, with a configuration (beside it) that has the tier ``pro``."""
    config = path.parent / "tiers.yaml"
    if not config.exists():
        config.write_text("limits:\n  tiers:\n    pro: {}\n")
    with pytest.raises(SystemExit) as ended:
        service_main(["users", "--config", str(config), "--file", str(path), *args])
    return int(ended.value.code or 0)


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "users.yaml"
    assert users(path, "add", "alice", "--tier", "pro", "--admin") == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40
    text = path.read_text()
    assert token not in text and digest(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    auth = Authenticator(users_file=path)
    alice = auth.authenticate(f"Bearer {token}")
    assert (alice.user_id, alice.admin, auth.tier_of("alice")) == ("alice", True, "pro")

    assert users(path, "add", "bob") == 0
    bob_token = capsys.readouterr().out.strip()
    assert users(path, "add", "bob") == 1
    assert "already exists" in capsys.readouterr().err

    assert users(path, "rotate", "alice") == 0
    rotated = capsys.readouterr().out.strip()
    assert rotated != token
    auth = Authenticator(users_file=path)
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {token}")
    assert auth.authenticate(f"Bearer {rotated}").admin  # tier and role are kept
    assert auth.tier_of("alice") == "pro"

    assert users(path, "list") == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "pro" in listing and "bob" in listing
    assert rotated not in listing and bob_token not in listing and "sha256" not in listing

    assert users(path, "revoke", "bob") == 0
    capsys.readouterr()
    with pytest.raises(Unauthenticated):
        Authenticator(users_file=path).authenticate(f"Bearer {bob_token}")
    assert users(path, "revoke", "bob") == 1
    assert "no user 'bob'" in capsys.readouterr().err
    # No temp files left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiers.yaml", "users.yaml"]


def test_cli_keeps_hand_written_entries_and_checks_tiers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("# hand-written\nlegacy: plain-token\n")
    path.chmod(0o640)
    config = tmp_path / "config.yaml"
    config.write_text(f"auth:\n  tokens_file: {path}\nlimits:\n  tiers:\n    pro: {{}}\n")
    with pytest.raises(SystemExit) as ended:
        service_main(["users", "--config", str(config), "add", "x", "--tier", "gold"])
    assert ended.value.code == 1
    assert "tier 'gold' is not in limits.tiers (known: pro)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ended:
        service_main(["users", "--config", str(config), "add", "newcomer", "--tier", "pro"])
    assert ended.value.code == 0
    assert load_users(path)["legacy"].token == "plain-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # an existing file keeps its mode
    assert users(path, "add", "../evil") == 1
    assert "user_id" in capsys.readouterr().err


def test_cli_without_a_file_says_how_to_name_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENT_CONFIG", raising=False)
    monkeypatch.delenv("AGENT_AUTH__TOKENS_FILE", raising=False)
    with pytest.raises(SystemExit) as ended:
        service_main(["users", "list"])
    assert ended.value.code == 2
    assert "auth.tokens_file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"alice: tok-a\nbob: tok-b\nmallory: '{digest('tok-a')}'\n",
            "users 'alice' and 'mallory' have the same token (lines 1 and 3)",
        ),
        (
            "tokens:\n  alice: tok-a\n  bob: tok-b\n  alice: tok-c\n",
            "'alice' is listed twice (lines 2 and 4)",
        ),
    ],
)
def test_duplicate_tokens_and_users_make_the_file_invalid(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_users(path)


def test_a_reload_with_a_duplicate_token_keeps_the_last_good_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("alice: tok-a\n")
    clock = Clock()
    auth = Authenticator(users_file=path, reload_interval_s=1.0, clock=clock)
    path.write_text("alice: tok-a\nmallory: tok-a\n")  # mallory copies alice's token
    clock.now = 1.0
    with caplog.at_level(logging.INFO, logger="service.auth"):
        assert auth.authenticate("Bearer tok-a").user_id == "alice"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "'alice' and 'mallory' have the same token (lines 1 and 2)" in errors[0].getMessage()
    assert not [r for r in caplog.records if r.levelno == logging.INFO]  # no "reloaded" line


def test_an_empty_users_file_warns_that_nobody_can_sign_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("alice: tok-a\n")
    clock = Clock()
    auth = Authenticator(users_file=path, reload_interval_s=1.0, clock=clock)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    write_users(path, {})
    clock.now = 1.0
    with caplog.at_level(logging.INFO, logger="service.auth"), pytest.raises(Unauthenticated):
        auth.authenticate("Bearer tok-a")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("nobody can sign in" in w for w in warnings)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        Authenticator(users_file=path)
    assert "nobody can sign in" in caplog.text


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("alice: tok-a\nalice: tok-b\n", "'alice' is listed twice (lines 1 and 2)"),
        # The same token by digest: in clear for one user, hashed for the other.
        (
            f"alice: tok-a\nmallory: '{digest('tok-a')}'\n",
            "'alice' and 'mallory' have the same token (lines 1 and 2)",
        ),
    ],
    ids=["duplicate-user", "duplicate-token"],
)
def test_an_invalid_users_file_at_start_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    said: str,
) -> None:
    monkeypatch.delenv("AGENT_AUTH__TOKENS_FILE", raising=False)
    path = tmp_path / "users.yaml"
    path.write_text(text)
    config = tmp_path / "config.yaml"
    config.write_text(f"auth:\n  tokens_file: {path}\napi:\n  provider: ollama\n")
    with pytest.raises(SystemExit) as ended:
        service_main(["--config", str(config), "--check-config"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "auth.tokens_file" in err and said in err
    assert "tok-a" not in err and digest("tok-a") not in err  # tokens are never echoed


def _config(tmp_path: Path, users_file: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"auth:\n  tokens_file: {users_file}\nlimits:\n  tiers:\n    pro: {{}}\n    team: {{}}\n"
    )
    return config


def _main(*args: str) -> int:
    with pytest.raises(SystemExit) as ended:
        service_main(["users", *args])
    return int(ended.value.code or 0)


def test_the_first_add_creates_the_configured_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.yaml"  # named by the configuration, not there yet
    config = _config(tmp_path, path)
    assert _main("--config", str(config), "add", "alice") == 0
    token = capsys.readouterr().out.strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Authenticator(users_file=path).authenticate(f"Bearer {token}").user_id == "alice"


def test_options_may_follow_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.yaml"
    config = _config(tmp_path, path)
    assert _main("add", "alice", "--config", str(config), "--tier", "team") == 0
    other = tmp_path / "other.yaml"
    assert _main("--config", str(config), "add", "bob", "--file", str(other)) == 0
    capsys.readouterr()
    assert _main("list", "--config", str(config)) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "team" in listing and "bob" not in listing
    assert list(load_users(other)) == ["bob"]


def test_options_may_come_before_users_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.yaml"
    config = _config(tmp_path, path)
    with pytest.raises(SystemExit) as ended:
        service_main(["--config", str(config), "users", "add", "erin", "--tier", "pro"])
    assert ended.value.code == 0
    other = tmp_path / "other.yaml"
    with pytest.raises(SystemExit) as ended:
        service_main([f"--config={config}", "--file", str(other), "users", "add", "frank"])
    assert ended.value.code == 0
    capsys.readouterr()
    assert _main("list", "--config", str(config)) == 0
    listing = capsys.readouterr().out
    assert "erin" in listing and "pro" in listing and "frank" not in listing
    assert list(load_users(other)) == ["frank"]


def test_users_argv_finds_the_command_after_its_options_only() -> None:
    assert users_argv(["users", "list"]) == ["list"]
    assert users_argv(["--config", "c.yaml", "users", "list"]) == ["--config", "c.yaml", "list"]
    assert users_argv(["--config=c.yaml", "users"]) == ["--config=c.yaml"]
    assert users_argv(["--config", "users"]) is None  # a config file named "users"
    assert users_argv(["--check-config", "users"]) is None
    assert users_argv([]) is None


def test_an_unknown_tier_is_refused_with_the_tiers_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.yaml"
    config = _config(tmp_path, path)
    assert _main("add", "alice", "--tier", "gold", "--config", str(config)) == 1
    assert "tier 'gold' is not in limits.tiers (known: pro, team)" in capsys.readouterr().err
    assert not path.exists()


def test_other_commands_on_a_missing_file_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, tmp_path / "users.yaml")
    assert _main("list", "--config", str(config)) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "auth.tokens_file: no such file" in line
