"""`make run` / `make demo`: the service and the gateway together; Ctrl-C stops both.

--demo also starts the bundled fake Ollama (an echo backend, clearly not a
model) on a free port and points the service at it, with its own data
directory (data/demo), so demo turns and real ones never share a history.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DEMO_DATA_DIR = "data/demo"


def demo_environment(ollama_port: int) -> dict[str, str]:
    """What --demo adds to the environment of both processes."""
    return {
        "AGENT_API__PROVIDER": "ollama",
        "AGENT_OLLAMA__URL": f"http://127.0.0.1:{ollama_port}",
        # Both keys: a store.url in the config file would otherwise win over data_dir.
        "AGENT_STORE__DATA_DIR": DEMO_DATA_DIR,
        "AGENT_STORE__URL": f"sqlite:///{DEMO_DATA_DIR}/agent.db",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo", action="store_true", help="run against the fake Ollama")
    parser.add_argument("--config", help="config file for both processes")
    args = parser.parse_args()

    env = dict(os.environ)
    if args.config:
        env["AGENT_CONFIG"] = args.config
    children: list[subprocess.Popen[bytes]] = []

    def spawn(*args: str) -> None:
        # Own session: a terminal's Ctrl-C reaches only this launcher, which then
        # sends each child one SIGTERM (a second signal would make uvicorn force-exit).
        children.append(subprocess.Popen([sys.executable, *args], env=env, start_new_session=True))

    if args.demo:
        port = _free_port()
        spawn("-m", "tests.fakes.ollama", "--port", str(port))
        env.update(demo_environment(port))
        print(
            f"*** DEMO MODE: answers come from a fake echo backend on port {port} ***", flush=True
        )
    spawn("-m", "service.main")
    time.sleep(0.5)  # let the service bind before the gateway dials (it retries anyway)
    spawn("-m", "gateway.main")

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        stop()
        for child in children:
            try:
                child.wait(40)
            except subprocess.TimeoutExpired:
                child.kill()
    return max((child.returncode or 0) for child in children)


if __name__ == "__main__":
    raise SystemExit(main())
