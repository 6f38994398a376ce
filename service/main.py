"""``agent-service``: run the gRPC service until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from service.config import Settings, load_settings
from service.server import running_service


async def serve(settings: Settings) -> None:
    """Run until a signal arrives, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_service(settings):
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["users"]:  # user management: a command of its own, no server
        from service import users_cli

        raise SystemExit(users_cli.main(args_in[1:]))
    parser = argparse.ArgumentParser(prog="agent-service", description=__doc__)
    parser.add_argument(
        "--config", help="config file (default: AGENT_CONFIG or config/config.yaml)"
    )
    args = parser.parse_args(args_in)
    settings = load_settings(args.config)
    logging.basicConfig(
        level=settings.api_server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
