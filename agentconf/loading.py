"""Settings from the config file and the environment, checked strictly, for either process."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from pydantic_settings.exceptions import SettingsError

from agentconf.files import (
    ConfigError,
    ConfigFile,
    KeyPath,
    MappingSource,
    Tolerated,
    check_env_names,
    check_file_keys,
    describe_settings_error,
    describe_validation_error,
    read_config_file,
)

DEFAULT_CONFIG_FILE = Path("config/config.yaml")

S = TypeVar("S", bound=BaseSettings)
# Sources between the environment and the file (e.g. the service's legacy names).
MoreSources = Callable[[type[BaseSettings]], Sequence[PydanticBaseSettingsSource]]


def config_file_path(explicit: str | None = None) -> Path | None:
    """--config, else AGENT_CONFIG, else config/config.yaml when it exists."""
    chosen = explicit or os.environ.get("AGENT_CONFIG")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            origin = "--config" if explicit else "AGENT_CONFIG"
            raise ConfigError(f"config file not found: {path} (from {origin})")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load(
    model: type[S],
    config_file: str | None,
    *,
    tolerated: Tolerated,
    more_sources: MoreSources = lambda _cls: (),
    also: Mapping[KeyPath, str] | None = None,
) -> tuple[S, ConfigFile | None]:
    """``model`` from defaults < the file < ``more_sources`` < the environment, and the file.

    Raises ConfigError, one line naming the key and where it was set, for an
    unreadable file, an unknown key or variable (``tolerated`` names what the
    other process reads), or an invalid value.
    """
    env = os.environ
    path = config_file_path(config_file)
    file = read_config_file(path) if path is not None else None
    if file is not None:
        check_file_keys(model, file, tolerated)
    check_env_names(model, env, tolerated)
    # The other process's sections are its to validate.
    data = {k: v for k, v in (file.data if file else {}).items() if k in model.model_fields}

    def sources(
        cls: type[BaseSettings],
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            *more_sources(settings_cls),
            MappingSource(settings_cls, data),
        )

    # A subclass per call: pydantic-settings takes its sources from the class.
    namespace: dict[str, Any] = {"settings_customise_sources": classmethod(sources)}
    reading = cast(type[S], type(model.__name__, (model,), namespace))
    try:
        return reading(), file
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, file, env, also)) from None
    except SettingsError as exc:  # e.g. a list-valued variable that is not JSON
        raise ConfigError(describe_settings_error(exc, model, env)) from None
