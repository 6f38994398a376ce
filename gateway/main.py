"""``agent-gateway``: run the REST/SSE gateway under uvicorn."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import socket
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import uvicorn
import yaml

from agentconf.files import ConfigError
from gateway.config import load_gateway_settings
from gateway.http_protocol import BODY_TIMEOUT_ENV, HEADER_TIMEOUT_ENV, PROTOCOL_PATH
from gateway.logs import log_config
from gateway.upstream_target import TargetError, dial_target

# prometheus_client's multiprocess directory (gateway.metrics); read when the client is imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

EXIT_CONFIG = 2  # also a port that is taken: both are the operator's to fix
# The private metrics folder, under api_server.data_dir:
# agent-gateway-metrics-<pid of agent-gateway>-<random>.
METRICS_DIR_PREFIX = "agent-gateway-metrics-"


def remove_stale_metrics_dirs(folder: Path) -> list[Path]:
    """Remove the metrics folders of gateways that are gone; the ones removed.

    A gateway killed with SIGKILL cannot remove its own folder. Each folder
    names its gateway's pid, so one whose process is no longer alive can go,
    and so can one with this process's pid: called before this gateway made
    its own, it is an earlier process's (in a container the gateway is pid 1
    at every start). Only the current user's are touched.
    """
    removed = []
    for entry in folder.glob(f"{METRICS_DIR_PREFIX}*"):
        pid_text = entry.name.removeprefix(METRICS_DIR_PREFIX).split("-", 1)[0]
        try:
            if not entry.is_dir() or entry.stat().st_uid != os.getuid():
                continue
            if not pid_text.isdigit():
                continue
            if int(pid_text) != os.getpid() and _alive(int(pid_text)):
                continue
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def private_metrics_dir(data_dir: Path) -> Path:
    """A fresh metrics folder of this gateway under ``data_dir``, stale ones removed first.

    Raises OSError when the folder cannot be made.
    """
    data_dir = data_dir.absolute()  # the workers get it through the environment
    data_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_metrics_dirs(data_dir)
    prefix = f"{METRICS_DIR_PREFIX}{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def version() -> str:
    """The installed package's version ("unknown" when run from a bare checkout)."""
    try:
        return metadata.version("agent-service")
    except metadata.PackageNotFoundError:
        return "unknown"


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, in one line; None when it is free.

    uvicorn's own failure is a log line without the address; this probe binds
    the way uvicorn will (SO_REUSEADDR) and lets go at once.
    """
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror} (set api_server.host)"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"cannot listen on {host}:{port}: address already in use "
                    "(is another agent-gateway running? set api_server.port)"
                )
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agent-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"agent-gateway {version()}")
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
    taken = port_in_use(server.host, server.port)
    if taken is not None:
        print(f"agent-gateway: {taken}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    # Before any worker imports prometheus_client: each one writes its metrics there.
    private_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        try:
            private_dir = private_metrics_dir(server.data_dir)
        except OSError as exc:
            print(
                f"agent-gateway: cannot make the metrics folder under api_server.data_dir "
                f"{server.data_dir}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            raise SystemExit(EXIT_CONFIG) from None
        os.environ[MULTIPROC_ENV] = str(private_dir)
    # The workers' HTTP protocol reads its timeouts from the environment they inherit.
    os.environ[HEADER_TIMEOUT_ENV] = str(server.header_timeout_s)
    os.environ[BODY_TIMEOUT_ENV] = str(server.body_timeout_s)
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
