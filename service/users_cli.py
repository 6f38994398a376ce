"""``agent-service users``: add, rotate, revoke and list the users of the users file.

A new token is printed once, on standard output, and only its ``sha256:``
digest is written. The service notices the changed file within a couple of
seconds; no restart is needed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from service.config import load_settings
from service.errors import AgentError
from service.profiles import validate_user_id
from service.userfile import SHA256_PREFIX, UserEntry, load_users, token_digest, write_users

_TOKEN_BYTES = 32


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-service users", description="Manage the users file (auth.tokens_file)."
    )
    parser.add_argument("--config", help="config file whose auth.tokens_file to edit")
    parser.add_argument("--file", type=Path, help="the users file (overrides --config)")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="create a user with a new token (printed once)")
    add.add_argument("name")
    add.add_argument("--tier", default="", help="a tier of limits.tiers (default: none)")
    add.add_argument("--admin", action="store_true", help="may list and cancel every request")
    rotate = commands.add_parser("rotate", help="give a user a new token; the old one stops")
    rotate.add_argument("name")
    revoke = commands.add_parser("revoke", help="remove a user; their token stops working")
    revoke.add_argument("name")
    commands.add_parser("list", help="users, tiers and roles (never tokens)")
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
            known = ", ".join(sorted(tiers)) or "none"
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


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    tiers: set[str] | None = None
    path: Path | None = args.file
    if path is None or args.config:
        settings = load_settings(args.config)
        tiers = set(settings.limits.tiers)
        path = path or settings.auth.tokens_file
    if path is None:
        print(
            "agent-service users: no users file: set auth.tokens_file in the config or pass --file",
            file=sys.stderr,
        )
        return 2
    try:
        output = run(args, path, tiers)
    except (UsersCommandError, ValueError, OSError, AgentError) as exc:
        print(f"agent-service users: {exc}", file=sys.stderr)
        return 1
    if args.command in ("add", "rotate"):
        note = f"new token for {args.name} (shown only now; {path} keeps its digest):"
        print(note, file=sys.stderr)
    print(output)
    return 0
