"""The users file (``auth.tokens_file``): who may call, with which token, tier and role.

Each entry is either the short form ``user: token`` or the long form::

    alice: tok-plain-or-sha256
    bob:
      token: "sha256:<hex digest of the token>"
      tier: pro        # a name under limits.tiers; absent: the default limits
      admin: true      # may list and cancel every user's requests

A token may be written in clear or as ``sha256:<hex>``; ``agent-service users``
writes digests only. The whole mapping may also sit under a ``tokens:`` key.
Writing rewrites the file (comments are not kept) through a temporary file
and an atomic rename, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.profiles import validate_user_id

SHA256_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")
_HEADER = (
    "# Users of the agent service: user: {token, tier, admin}. Written by `agent-service users`;\n"
    "# tokens are stored as sha256 digests. Edits by hand are fine; comments are not kept.\n"
)


def token_digest(token: str) -> bytes:
    """The SHA-256 digest tokens are kept and compared as."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class UserEntry:
    """One user of the file; ``token`` is as written (clear, or ``sha256:<hex>``)."""

    user_id: str
    token: str
    tier: str = ""
    admin: bool = False

    @property
    def digest(self) -> bytes:
        if self.token.startswith(SHA256_PREFIX):
            return bytes.fromhex(self.token[len(SHA256_PREFIX) :])
        return token_digest(self.token)


def parse_users(data: Any, source: str) -> dict[str, UserEntry]:
    """Entries from the file's parsed YAML; ValueError (InvalidRequest for ids) when malformed.

    Two users with the same token are refused: the token would sign in as only one of them.
    """
    data = data or {}
    if isinstance(data, dict) and isinstance(data.get("tokens"), dict):
        data = data["tokens"]
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of user_id to token or {{token, tier}}")
    return _checked([(user_id, value, 0) for user_id, value in data.items()], source)


def _checked(items: list[tuple[Any, Any, int]], source: str) -> dict[str, UserEntry]:
    """Entries of ``(user_id, value, line)``; line 0 when unknown. Duplicates are errors."""
    entries: dict[str, UserEntry] = {}
    lines: dict[str, int] = {}
    by_digest: dict[bytes, str] = {}
    problems: list[str] = []
    for user_id, value, line in items:
        if not isinstance(user_id, str):
            raise ValueError(f"{source}{_at(line)}: user ids must be strings, got {user_id!r}")
        validate_user_id(user_id)
        entry = _entry(user_id, value, source)
        if user_id in entries:
            problems.append(f"user {user_id!r} is listed twice{_lines(lines[user_id], line)}")
            continue
        other = by_digest.get(entry.digest)
        if other is not None:
            problems.append(
                f"users {other!r} and {user_id!r} have the same token{_lines(lines[other], line)}"
            )
            continue
        entries[user_id], lines[user_id], by_digest[entry.digest] = entry, line, user_id
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return entries


def _at(line: int) -> str:
    return f" line {line}" if line else ""


def _lines(first: int, second: int) -> str:
    return f" (lines {first} and {second})" if first and second else ""


def _entry(user_id: str, value: Any, source: str) -> UserEntry:
    if isinstance(value, str):
        entry = UserEntry(user_id, value)
    elif isinstance(value, dict):
        unknown = set(value) - {"token", "tier", "admin"}
        token, tier, admin = value.get("token"), value.get("tier", ""), value.get("admin", False)
        if unknown or not isinstance(token, str) or not isinstance(tier, str):
            raise ValueError(
                f"{source}: user {user_id!r} needs token (text), and only tier (text) and "
                f"admin (true/false) besides"
            )
        if not isinstance(admin, bool):
            raise ValueError(f"{source}: admin of user {user_id!r} must be true or false")
        entry = UserEntry(user_id, token, tier, admin)
    else:
        raise ValueError(f"{source}: expected a mapping of user_id to token or {{token, tier}}")
    if not entry.token:
        raise ValueError(f"{source}: user {user_id!r} has an empty token")
    if entry.token.startswith(SHA256_PREFIX) and not _HEX_DIGEST.match(
        entry.token[len(SHA256_PREFIX) :]
    ):
        raise ValueError(f"{source}: the sha256 digest of user {user_id!r} is not 64 hex digits")
    return entry


def load_users(path: Path) -> dict[str, UserEntry]:
    """Read and check the users file; ValueError (naming the lines) when it is not valid.

    The YAML is read as nodes rather than loaded: loading keeps only the last of
    two equal keys, and a user listed twice must be an error that names both lines.
    """
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        items = _items(root)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    if items is None:
        raise ValueError(f"{path}: expected a mapping of user_id to token or {{token, tier}}")
    return _checked(items, str(path))


def _items(root: yaml.Node | None) -> list[tuple[Any, Any, int]] | None:
    """``(user_id, value, line)`` of each entry, in file order; None when not a mapping."""
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if _scalar(key) == "tokens" and isinstance(value, yaml.MappingNode):
            root = value  # the whole mapping may sit under a ``tokens:`` key
            break
    loader = yaml.SafeLoader("")
    try:
        return [
            (
                loader.construct_object(key, deep=True),
                loader.construct_object(value, deep=True),
                key.start_mark.line + 1,
            )
            for key, value in root.value
        ]
    finally:
        loader.dispose()


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error in one line (its text spans several, with a caret drawing)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _scalar(node: yaml.Node) -> Any:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def dump_users(entries: Mapping[str, UserEntry]) -> str:
    """The file's text: short form for a bare token, long form when there is more to say."""
    data: dict[str, Any] = {}
    for user_id in sorted(entries):
        e = entries[user_id]
        if not e.tier and not e.admin:
            data[user_id] = e.token
            continue
        long: dict[str, Any] = {"token": e.token}
        if e.tier:
            long["tier"] = e.tier
        if e.admin:
            long["admin"] = True
        data[user_id] = long
    return _HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def write_users(path: Path, entries: Mapping[str, UserEntry]) -> None:
    """Replace the file atomically (temporary file in the same folder, fsync, rename).

    A new file is readable by its owner only; an existing one keeps its mode.
    """
    text = dump_users(entries)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
