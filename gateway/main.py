"""``agent-gateway``: run the REST/SSE gateway under uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import uvicorn
import yaml

from agentconf.files import ConfigError
from gateway.config import load_gateway_settings
from gateway.http_protocol import PROTOCOL_PATH
from gateway.logs import log_config
from gateway.upstream_target import TargetError, dial_target

# prometheus_client's multiprocess directory (gateway.metrics); read when the client is imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

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
        dial_target(settings.grpc.address)
    except (ConfigError, TargetError) as exc:
        print(f"agent-gateway: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if args.check_config:
        print("# effective gateway configuration (it holds no secrets)")
        print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")
        return
    server = settings.api_server
    # Before any worker imports prometheus_client: each one writes its metrics there.
    private_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        private_dir = tempfile.mkdtemp(prefix="agent-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = private_dir
    try:
        uvicorn.run(
            "gateway.app:app_from_environment",
            factory=True,
            host=server.host,
            port=server.port,
            workers=args.workers or server.workers,
            log_level=server.log_level,
            log_config=log_config(
                settings.logging.format,
                server.log_level,
                include_content=settings.logging.include_content,
            ),
            access_log=False,  # gateway.access writes one line per request instead
            loop="auto",
            http=PROTOCOL_PATH,  # httptools, answering parser errors in the JSON error shape
            # After the drain (api_server.shutdown_grace_s), for what is still open.
            timeout_graceful_shutdown=10,
        )
    finally:
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
