"""The gRPC server's options that only matter under load, checked where they are made.

gRPC cancels calls that arrived but that the application has not picked up
yet once there are more than 1,000 (3,000 hard) of them: a burst of a few
thousand streams opened at once then ended ``499`` at the gateway without
the service ever seeing them (measured with ``scripts/bench_waiting.py``:
287 of 3,000 before, none after), and it cancels one held for 30 s (at 5,000
streams, ~800 ended ``cancelled``). The limits must stay far above any burst
the queue is configured to hold.
"""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.server import MAX_METADATA_BYTES, server_options

GRPC_DEFAULT_PENDING = 1_000


def test_calls_waiting_for_the_event_loop_are_not_cancelled_by_grpc(tmp_path: Path) -> None:
    settings = Settings(store={"data_dir": str(tmp_path)}, queue={"max_pending": 10_000})
    options = dict(server_options(settings))
    soft = options["grpc.server.max_pending_requests"]
    hard = options["grpc.server.max_pending_requests_hard_limit"]
    assert soft > GRPC_DEFAULT_PENDING and hard >= soft
    assert soft >= 10 * settings.queue.max_pending  # a burst at the waiting cap fits
    # gRPC also cancels a call it has held for 30 s (by default) before the loop took it.
    assert options["grpc.server_max_unrequested_time_in_server"] >= 600


def test_request_metadata_has_one_bounded_limit(tmp_path: Path) -> None:
    """A 100 KB bearer token reaches the interceptor, which names the check it fails.

    gRPC's defaults (8 KiB soft, 16 KiB hard) refused it in the transport, and one
    of 8-16 KiB only at random; equal limits make the answer the same every time.
    """
    options = dict(server_options(Settings(store={"data_dir": str(tmp_path)})))
    soft = options["grpc.max_metadata_size"]
    assert soft == options["grpc.absolute_max_metadata_size"] == MAX_METADATA_BYTES
    assert 100_000 + 1024 < MAX_METADATA_BYTES <= 256 * 1024
