"""``agent-gateway``: run the REST/SSE gateway under uvicorn."""

from __future__ import annotations

import argparse
import os

import uvicorn

from gateway.config import load_gateway_settings
from gateway.http_protocol import PROTOCOL_PATH


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agent-gateway", description=__doc__)
    parser.add_argument(
        "--config", help="config file (default: AGENT_CONFIG or config/config.yaml)"
    )
    parser.add_argument("--workers", type=int, help="override api_server.workers")
    args = parser.parse_args(argv)
    if args.config:
        # Workers are separate processes: they find the file through the environment.
        os.environ["AGENT_CONFIG"] = args.config
    settings = load_gateway_settings()
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
