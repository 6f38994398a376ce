"""``agent-service``: run the gRPC service until SIGTERM or SIGINT.

Mistakes an operator makes at start end the process with one line on stderr
and exit code 2, never a traceback: bad configuration (including a store URL
of a kind the service cannot use, which ``--check-config`` reports too), a
taken gRPC or metrics port, a store that refuses the connection (a
PostgreSQL role or database that does not exist, a wrong password, nothing
listening).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sys

import yaml

from agentconf.files import ConfigError
from service.config import Settings, load_settings
from service.heap import freeze_startup_heap
from service.listen import ListenError, check_address_free
from service.observability.logs import configure_logging
from service.store import open_store

EXIT_CONFIG = 2
EXIT_LISTEN = 2  # a startup failure the operator fixes in the configuration, as above
EXIT_STORE = 2
_MASK = "***"


async def serve(settings: Settings) -> None:
    """Run until a signal arrives, then shut down gracefully."""
    # Imported here: the gRPC stack takes ~1 s to import, which a configuration
    # mistake or --check-config should not wait for.
    from service.server import running_service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_service(settings):
        # Everything start-up built lives as long as the process: out of the GC's walks.
        freeze_startup_heap()
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


def version() -> str:
    """The installed package's version ("unknown" when run from a bare checkout)."""
    from importlib import metadata

    try:
        return metadata.version("agent-service")
    except metadata.PackageNotFoundError:
        return "unknown"


def _fail(message: str, code: int) -> None:
    print(f"agent-service: {message}", file=sys.stderr)
    raise SystemExit(code)


def check_store_url(settings: Settings) -> None:
    """ConfigError when store.url names no store the service has (no I/O: nothing is opened)."""
    try:
        open_store(settings.store.resolved_url())
    except ValueError as exc:
        raise ConfigError(f"store.url: {exc}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _startup_failure(settings: Settings, exc: BaseException) -> str | None:
    """The line for a failure to start (a port, the store); None: a defect, left as it is."""
    import asyncpg

    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:  # lost a race to a port
        return f"cannot listen: {_one_line(exc)}"
    url = _mask_url(settings.store.resolved_url())
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"cannot open the store {url}: {_one_line(exc)}"
    # The store is the one outside service the start connects to and waits for.
    if isinstance(exc, OSError) and url.startswith(("postgresql:", "postgres:")):
        return f"cannot open the store {url}: {_one_line(exc)}"
    return None


_USERS_OPTIONS = ("--config", "--file")


def users_argv(args: list[str]) -> list[str] | None:
    """The ``users`` command's arguments when ``args`` name it, else None.

    ``--config``/``--file`` may come before ``users`` (``agent-service --config
    c.yaml users add erin``); they are handed on, as if they followed it.
    """
    i = 0
    while i < len(args) and args[i].split("=", 1)[0] in _USERS_OPTIONS:
        i += 1 if "=" in args[i] else 2
    if args[i : i + 1] != ["users"]:
        return None
    return args[:i] + args[i + 1 :]


def main(argv: list[str] | None = None) -> None:
    args_in = sys.argv[1:] if argv is None else argv
    users = users_argv(args_in)
    if users is not None:  # user management: a command of its own, no server
        from service import users_cli

        raise SystemExit(users_cli.main(users))
    parser = argparse.ArgumentParser(prog="agent-service", description=__doc__)
    parser.add_argument("--version", action="version", version=f"agent-service {version()}")
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
        check_store_url(settings)
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
        # Before anything starts, as for grpc.address: a taken port is one line, not a traceback.
        if settings.metrics.address:
            check_address_free(settings.metrics.address, "metrics.address, or empty to turn off")
        run(serve(settings))
    except ListenError as exc:
        _fail(str(exc), EXIT_LISTEN)
    except Exception as exc:
        line = _startup_failure(settings, exc)
        if line is None:
            raise
        _fail(line, EXIT_STORE)


if __name__ == "__main__":
    main()
