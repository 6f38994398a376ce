"""``agent-service``: run the gRPC service until SIGTERM or SIGINT.

Mistakes an operator makes at start (bad configuration, a taken port) end the
process with one line on stderr: exit code 2 for configuration, 1 for the port.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import yaml

from agentconf.files import ConfigError
from service.config import Settings, load_settings
from service.listen import ListenError
from service.observability.logs import configure_logging
from service.server import running_service

EXIT_CONFIG = 2
EXIT_LISTEN = 1
_MASK = "***"


async def serve(settings: Settings) -> None:
    """Run until a signal arrives, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_service(settings):
        await stop.wait()


def effective_config(settings: Settings) -> str:
    """The settings as YAML, with every secret masked (for --check-config)."""
    data = settings.model_dump(mode="json")
    for section, key in (("anthropic", "api_key"), ("auth", "shared_token")):
        if data[section][key]:
            data[section][key] = _MASK
    data["store"]["url"] = _mask_url(data["store"]["url"])
    header = f"# effective configuration; default provider: {settings.provider}\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _mask_url(url: str) -> str:
    """postgresql://user:secret@host/db → postgresql://user:***@host/db."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:{_MASK}@{host}"


def _fail(message: str, code: int) -> None:
    print(f"agent-service: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["users"]:  # user management: a command of its own, no server
        from service import users_cli

        raise SystemExit(users_cli.main(args_in[1:]))
    parser = argparse.ArgumentParser(prog="agent-service", description=__doc__)
    parser.add_argument(
        "--config", help="config file (default: AGENT_CONFIG or config/config.yaml)"
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print it with secrets masked, and exit",
    )
    args = parser.parse_args(args_in)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}", EXIT_CONFIG)
        return
    if args.check_config:
        print(effective_config(settings), end="")
        return
    configure_logging(
        settings.api_server.log_level,
        settings.logging.format,
        include_content=settings.logging.include_content,
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(serve(settings))
    except ListenError as exc:
        _fail(str(exc), EXIT_LISTEN)


if __name__ == "__main__":
    main()
