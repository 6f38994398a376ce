"""``agent-gateway``: run the REST/SSE gateway under uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn
import yaml

from gateway.config import load_gateway_settings
from gateway.config_file import ConfigError
from gateway.http_protocol import PROTOCOL_PATH

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agent-gateway", description=__doc__)
    parser.add_argument(
        "--config", help="config file (default: AGENT_CONFIG or config/config.yaml)"
    )
    parser.add_argument("--workers", type=int, help="override api_server.workers")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print what the gateway reads, and exit",
    )
    args = parser.parse_args(argv)
    if args.config:
        # Workers are separate processes: they find the file through the environment.
        os.environ["AGENT_CONFIG"] = args.config
    try:
        # Checked here, once, so a mistake is one line and not a traceback per worker.
        settings = load_gateway_settings()
    except ConfigError as exc:
        print(f"agent-gateway: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if args.check_config:
        print("# effective gateway configuration (it holds no secrets)")
        print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")
        return
    server = settings.api_server
    uvicorn.run(
        "gateway.app:app_from_environment",
        factory=True,
        host=server.host,
        port=server.port,
        workers=args.workers or server.workers,
        log_level=server.log_level,
        loop="auto",
        http=PROTOCOL_PATH,  # httptools, answering parser errors in the JSON error shape
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
