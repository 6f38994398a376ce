"""Build the configured Provider from plain settings values."""

from __future__ import annotations

from service.providers.base import Provider

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OLLAMA_MODEL = "llama3.2"
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-5-5"


def resolve_provider_name(name: str, anthropic_api_key: str | None) -> str:
    """``auto`` means anthropic when an API key is set, else ollama."""
    name = name.strip().lower()
    if name == "auto":
        return "anthropic" if anthropic_api_key else "ollama"
    return name


def build_provider(
    name: str,
    *,
    ollama_url: str = DEFAULT_OLLAMA_URL,
    ollama_model: str = DEFAULT_OLLAMA_MODEL,
    ollama_keep_alive: str | None = None,
    ollama_max_connections: int = 8,
    anthropic_api_key: str | None = None,
    anthropic_base_url: str | None = None,
    anthropic_model: str = DEFAULT_ANTHROPIC_MODEL,
    anthropic_max_retries: int = 2,
    anthropic_prompt_caching: bool = True,
    first_byte_timeout_s: float = 120.0,
    idle_timeout_s: float = 60.0,
    connect_timeout_s: float = 5.0,
    probe_timeout_s: float = 3.0,
) -> Provider:
    """The bridge named ``name`` ("ollama", "anthropic" or "auto"); ValueError otherwise.

    Cheap: no network until the first call. The caller owns the result and
    must ``await provider.aclose()``.
    """
    resolved = resolve_provider_name(name, anthropic_api_key)
    if resolved == "ollama":
        from service.providers.ollama import OllamaBridge

        return OllamaBridge(
            url=ollama_url,
            model=ollama_model,
            first_byte_timeout_s=first_byte_timeout_s,
            idle_timeout_s=idle_timeout_s,
            connect_timeout_s=connect_timeout_s,
            probe_timeout_s=probe_timeout_s,
            keep_alive=ollama_keep_alive,
            max_connections=ollama_max_connections,
        )
    if resolved == "anthropic":
        if not anthropic_api_key:
            raise ValueError("the anthropic provider needs an API key: set ANTHROPIC_API_KEY")
        # Imported here: the SDK is heavy and an Ollama-only deployment never needs it.
        from service.providers.anthropic import AnthropicBridge

        return AnthropicBridge(
            api_key=anthropic_api_key,
            base_url=anthropic_base_url,
            model=anthropic_model,
            max_retries=anthropic_max_retries,
            prompt_caching=anthropic_prompt_caching,
            first_byte_timeout_s=first_byte_timeout_s,
            idle_timeout_s=idle_timeout_s,
            connect_timeout_s=connect_timeout_s,
            probe_timeout_s=probe_timeout_s,
        )
    raise ValueError(f"unknown provider {name!r}: expected 'ollama', 'anthropic' or 'auto'")
