"""``agent-service users``: add, rotate, revoke and list the users of the users file.

A new token is printed once, on standard output, and only its ``sha256:``
digest is written. The service notices the changed file within a couple of
seconds; no restart is needed.

The first ``add`` creates the file (readable by its owner only), even when
the configuration already names it in ``auth.tokens_file``. ``--config`` and
``--file`` may come before or after the subcommand. A tier must be one of
``limits.tiers`` of the configuration.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from agentconf.files import ConfigError
from service.config import Settings, load_settings
from service.errors import AgentError
from service.profiles import validate_user_id
from service.userfile import SHA256_PREFIX, UserEntry, load_users, token_digest, write_users

_TOKEN_BYTES = 32


def _where(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--config", default=default, help="config file whose auth.tokens_file to edit"
    )
    parser.add_argument(
        "--file", type=Path, default=default, help="the users file (overrides --config)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-service users", description="Manage the users file (auth.tokens_file)."
    )
    _where(parser, None)
    # The same options after the subcommand; SUPPRESS keeps a value given before it.
    after = argparse.ArgumentParser(add_help=False)
    _where(after, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, parents=[after])

    add = command("add", "create a user with a new token (printed once)")
    add.add_argument("name")
    add.add_argument("--tier", default="", help="a tier of limits.tiers (default: none)")
    add.add_argument("--admin", action="store_true", help="may list and cancel every request")
    command("rotate", "give a user a new token; the old one stops").add_argument("name")
    command("revoke", "remove a user; their token stops working").add_argument("name")
    command("list", "users, tiers and roles (never tokens)")
    return parser


def _new_token() -> tuple[str, str]:
    """A fresh token and the digest form the file keeps."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    return token, SHA256_PREFIX + token_digest(token).hex()


class UsersCommandError(Exception):
    """A command that cannot be carried out; its message is for the operator."""


def run(args: argparse.Namespace, path: Path, tiers: set[str] | None) -> str:
    """Carry out one command on the file at ``path``; what to print on standard output."""
    entries = load_users(path) if path.exists() else {}
    if args.command == "list":
        rows = [("user", "tier", "admin")] + [
            (e.user_id, e.tier or "-", "yes" if e.admin else "no")
            for e in sorted(entries.values(), key=lambda e: e.user_id)
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{u:<{width}}  {t:<12}  {a}" for u, t, a in rows)
    name: str = args.name
    if args.command == "add":
        if name in entries:
            raise UsersCommandError(f"user {name!r} already exists; use `users rotate {name}`")
        if args.tier and tiers is not None and args.tier not in tiers:
            known = ", ".join(sorted(tiers)) or "none configured"
            raise UsersCommandError(f"tier {args.tier!r} is not in limits.tiers (known: {known})")
        validate_user_id(name)
        token, stored = _new_token()
        entries[name] = UserEntry(name, stored, args.tier, args.admin)
        write_users(path, entries)
        return token
    if name not in entries:
        raise UsersCommandError(f"no user {name!r} in {path}")
    if args.command == "rotate":
        token, stored = _new_token()
        old = entries[name]
        entries[name] = UserEntry(name, stored, old.tier, old.admin)
        write_users(path, entries)
        return token
    del entries[name]  # revoke
    write_users(path, entries)
    return f"revoked {name}"


_MISSING_FILE = "auth.tokens_file: no such file: "


def _settings(config: str | None, command: str) -> tuple[Settings, Path | None]:
    """The configuration, and a users file it names that ``add`` had to create first.

    The service refuses to start on a tokens_file that does not exist; the
    first ``add`` is how that file comes to exist, so it creates it (empty,
    mode 0600) and reads the configuration again.
    """
    try:
        return load_settings(config), None
    except ConfigError as exc:
        missing = str(exc).removeprefix(_MISSING_FILE)
        if command != "add" or missing == str(exc):
            raise
    created = Path(missing)
    write_users(created, {})
    try:
        return load_settings(config), created
    except BaseException:
        created.unlink(missing_ok=True)
        raise


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        settings, created = _settings(args.config, args.command)
    except (ConfigError, OSError) as exc:
        print(f"agent-service users: configuration error: {exc}", file=sys.stderr)
        return 2
    tiers = set(settings.limits.tiers)
    path: Path | None = args.file or settings.auth.tokens_file
    if created is not None and path != created:  # --file names another: that one is edited
        created.unlink(missing_ok=True)
        created = None
    if path is None:
        print(
            "agent-service users: no users file: set auth.tokens_file in the config or pass --file",
            file=sys.stderr,
        )
        return 2
    try:
        output = run(args, path, tiers)
    except (UsersCommandError, ValueError, OSError, AgentError) as exc:
        if created is not None:
            created.unlink(missing_ok=True)  # nothing was added: leave things as they were
        print(f"agent-service users: {exc}", file=sys.stderr)
        return 1
    if args.command in ("add", "rotate"):
        note = f"new token for {args.name} (shown only now; {path} keeps its digest):"
        print(note, file=sys.stderr)
    print(output)
    return 0
