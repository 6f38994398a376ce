"""Reading configuration strictly: one readable line per mistake, naming the key and its source.

Generic over a pydantic settings class, so each process passes its own model
and the sections it leaves to the other process.

What is checked, in order: the file can be read and parsed (YAML errors name
file, line and column); every key of the file and every ``AGENT_*`` variable
names a known setting (else "did you mean", from difflib); the values
validate (errors name the variable or file line that set them).
"""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

ENV_PREFIX = "AGENT_"
ENV_DELIMITER = "__"
# AGENT_ variables that are not settings: the config file's path.
ENV_NOT_SETTINGS = frozenset({"AGENT_CONFIG"})

KeyPath = tuple[str, ...]
# Per section: the keys the other process owns (None: the whole section).
Tolerated = Mapping[str, frozenset[str] | None]


class ConfigError(Exception):
    """A configuration mistake; ``str()`` is the one line to show the operator."""


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed config file with the line of every key, for error messages."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def where(self, key: KeyPath) -> str | None:
        line = self.lines.get(key)
        return None if line is None else f"{self.path}:{line}"


def read_config_file(path: Path) -> ConfigFile:
    """Parse ``path`` as YAML; a mapping of sections is required."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return ConfigFile(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the file must be a mapping of sections (api:, queue:, ...)")
    # A section left with only comments under it is empty, not null.
    data = {key: {} if value is None else value for key, value in data.items()}
    lines: dict[KeyPath, int] = {}
    _key_lines(root, (), lines)
    return ConfigFile(path, data, lines)


def _key_lines(node: yaml.Node | None, prefix: KeyPath, out: dict[KeyPath, int]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = (*prefix, str(key_node.value))
        out[key] = key_node.start_mark.line + 1
        _key_lines(value_node, key, out)


# --- unknown keys ------------------------------------------------------------------


def _section_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _suggest(word: str, choices: Iterator[str] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(
    model: type[BaseModel], key: KeyPath, tolerated: Tolerated
) -> tuple[str, str] | None:
    """(the unknown part, a hint) when ``key`` names no setting of ``model``; else None."""
    section, *rest = key
    if section in tolerated and tolerated[section] is None:
        return None
    if section not in model.model_fields:
        return section, _suggest(section, [*model.model_fields, *tolerated])
    sub = _section_model(model, section)
    if sub is None or not rest:
        return None
    name = rest[0]
    owned = tolerated.get(section) or frozenset()
    if name in sub.model_fields or name in owned:
        return None
    return name, _suggest(name, [*sub.model_fields, *owned])


def check_file_keys(model: type[BaseModel], file: ConfigFile, tolerated: Tolerated) -> None:
    """ConfigError for the first key of the file that names no setting."""
    for section, values in file.data.items():
        keys: list[KeyPath] = [(str(section),)]
        if isinstance(values, dict):
            keys += [(str(section), str(name)) for name in values]
        for key in keys:
            problem = unknown_key(model, key, tolerated)
            if problem is not None:
                where = file.where(key) or str(file.path)
                dotted = ".".join(key)
                raise ConfigError(f"{where}: unknown key {dotted}{problem[1]}")


def check_env_names(
    model: type[BaseModel], environ: Mapping[str, str], tolerated: Tolerated
) -> None:
    """ConfigError for the first AGENT_* variable that names no setting."""
    sections = [*model.model_fields, *tolerated]
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in ENV_NOT_SETTINGS:
            continue
        rest = upper[len(ENV_PREFIX) :].lower()
        if ENV_DELIMITER not in rest:
            if rest in sections:
                continue  # a whole section as JSON
            section = next((s for s in sections if rest.startswith(f"{s}_")), None)
            if section is not None:  # AGENT_QUEUE_MAX_PENDING: one underscore short
                tail = rest[len(section) + 1 :].upper()
                raise ConfigError(
                    f"{name}: unknown variable "
                    f"(did you mean {ENV_PREFIX}{section.upper()}{ENV_DELIMITER}{tail}?)"
                )
            continue  # not a setting of ours (e.g. a test's AGENT_TEST_* variable)
        key = tuple(rest.split(ENV_DELIMITER))
        problem = unknown_key(model, key[:2], tolerated)
        if problem is not None:
            raise ConfigError(f"{name}: unknown setting {'.'.join(key)}{problem[1]}")


# --- values ------------------------------------------------------------------------


def env_name(key: KeyPath, environ: Mapping[str, str]) -> str | None:
    """The AGENT_* variable that sets ``key``, if one is set."""
    wanted = (ENV_PREFIX + ENV_DELIMITER.join(key)).upper()
    return next((name for name in environ if name.upper() == wanted), None)


def describe_validation_error(
    exc: ValidationError,
    file: ConfigFile | None,
    environ: Mapping[str, str],
    also: Mapping[KeyPath, str] | None = None,
) -> str:
    """One line for the first error: where the value came from, the key, what is wrong.

    ``also`` names other variables that set a key (e.g. ANTHROPIC_API_KEY).
    """
    errors = exc.errors()
    first = errors[0]
    loc = tuple(str(part) for part in first["loc"])
    key = loc[:2]
    dotted = ".".join(loc)
    message = first["msg"]
    value = first.get("input")
    variable = env_name(key, environ)
    if variable is None and also and key in also and also[key] in environ:
        variable = also[key]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if variable is not None:
        return f"{variable}={environ[variable]!r} ({dotted}): {message}{more}"
    line = file.where(key) if file is not None else None
    if line is not None:
        return f"{line}: {dotted}={value!r}: {message}{more}"
    return f"{dotted}: {message}{more}"


def describe_settings_error(
    exc: Exception, model: type[BaseModel], environ: Mapping[str, str]
) -> str:
    """One line for pydantic-settings' own error: a structured value that is not JSON."""
    found = re.search(r'field "(\w+)"', str(exc))
    section = found.group(1) if found else ""
    sub = _section_model(model, section) if section in model.model_fields else None
    prefix = f"{ENV_PREFIX}{section}{ENV_DELIMITER}".upper()
    for name in sorted(environ):
        key = name.upper().removeprefix(prefix).lower()
        if not name.upper().startswith(prefix) or sub is None or key not in sub.model_fields:
            continue
        origin = typing.get_origin(sub.model_fields[key].annotation)
        if origin not in (list, dict):
            continue
        try:
            json.loads(environ[name])
        except ValueError:
            return (
                f"{name}={environ[name]!r} ({section}.{key}): a list or mapping must be "
                'written as JSON, e.g. \'["a", "b"]\''
            )
    return str(exc)


class MappingSource(PydanticBaseSettingsSource):
    """Settings from an already parsed file, lowest precedence."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = dict(data)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)
