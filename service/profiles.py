"""User profiles: a display name and system-prompt additions, one file per user.

A profile lives in ``<directory>/<user_id>.yaml`` (or ``.yml`` / ``.json``)
with the keys ``display_name`` and ``system_prompt``. A user without a file
gets the defaults. Profiles are cached after the first load; ``reload`` is
what ``/reload_user`` calls to pick up an edited file without a restart.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.errors import InvalidRequest

# Safe as a file name on every platform we run on; the leading-dot rule keeps
# out ".", ".." and hidden files.
_USER_ID = re.compile(r"(?!\.)[A-Za-z0-9._@-]{1,128}")
_SUFFIXES = (".yaml", ".yml", ".json")
_KEYS = frozenset({"display_name", "system_prompt"})
MAX_PROFILE_BYTES = 256 * 1024


def validate_user_id(user_id: str) -> str:
    """Return ``user_id`` unchanged if it is acceptable, else raise InvalidRequest."""
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise InvalidRequest(
            "user_id must be 1-128 characters from A-Z a-z 0-9 . _ @ - and must not start with '.'"
        )
    return user_id


@dataclass(frozen=True)
class Profile:
    """Who a user is to the agent; ``system_prompt`` is added to the base system prompt."""

    user_id: str
    display_name: str
    system_prompt: str


class ProfileDirectory:
    """Loads and caches profiles from a directory of per-user files (None: defaults only)."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._cache: dict[str, Profile] = {}

    async def load(self, user_id: str) -> Profile:
        validate_user_id(user_id)
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        return await self.reload(user_id)

    async def reload(self, user_id: str) -> Profile:
        validate_user_id(user_id)
        self._cache.pop(user_id, None)
        if self._directory is None:
            profile = _default(user_id)
        else:
            profile = await asyncio.to_thread(_read_profile, self._directory, user_id)
        self._cache[user_id] = profile
        return profile


def _default(user_id: str) -> Profile:
    return Profile(user_id=user_id, display_name=user_id, system_prompt="")


def _read_profile(directory: Path, user_id: str) -> Profile:
    for suffix in _SUFFIXES:
        path = directory / f"{user_id}{suffix}"
        if path.exists():
            return _parse(path.name, _read_text(path), user_id)
    return _default(user_id)


def _read_text(path: Path) -> str:
    def problem(text: str) -> InvalidRequest:
        return InvalidRequest(f"profile file {path.name!r} cannot be read: {text}")

    try:
        with path.open("rb") as file:
            raw = file.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise problem(exc.strerror or type(exc).__name__) from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise problem(f"larger than {MAX_PROFILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise problem(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _parse(name: str, text: str, user_id: str) -> Profile:
    def problem(text: str) -> InvalidRequest:
        return InvalidRequest(f"profile file {name!r} is malformed: {text}")

    data: Any
    try:
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise problem(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or type(exc).__name__
        raise problem(f"{reason}{where}") from None
    if data is None:  # an empty file
        return _default(user_id)
    if not isinstance(data, dict):
        raise problem(f"expected a mapping of keys, got {type(data).__name__}")
    unknown = sorted(str(key) for key in data if key not in _KEYS)
    if unknown:
        raise problem(f"unknown key(s) {', '.join(unknown)} (allowed: display_name, system_prompt)")
    values: dict[str, str] = {}
    for key in ("display_name", "system_prompt"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise problem(f"{key} must be a string, got {type(value).__name__}")
        values[key] = value or ""
    return Profile(
        user_id=user_id,
        display_name=values["display_name"].strip() or user_id,
        system_prompt=values["system_prompt"].strip(),
    )
