"""A serving process leaves what start-up built out of the garbage collector's full walks."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path

from service.config import Settings
from service.heap import freeze_startup_heap
from service.main import serve
from tests.fakes.ollama import FakeOllama


def test_freezing_moves_what_is_alive_out_of_the_collections() -> None:
    gc.unfreeze()
    try:
        kept = [[n] for n in range(1000)]
        assert any(o is kept[0] for o in gc.get_objects())
        assert freeze_startup_heap() >= len(kept)
        assert not any(o is kept[0] for o in gc.get_objects())  # no collection walks it
    finally:
        gc.unfreeze()


async def test_the_service_freezes_its_heap_once_it_serves(tmp_path: Path) -> None:
    gc.unfreeze()
    try:
        with FakeOllama() as fake:
            settings = Settings(
                grpc={"address": "127.0.0.1:0"},
                metrics={"address": "127.0.0.1:0"},
                store={"data_dir": tmp_path},
                ollama={"url": fake.url},
                api={"provider": "ollama"},
            )
            serving = asyncio.create_task(serve(settings))
            async with asyncio.timeout(30):
                while gc.get_freeze_count() == 0:
                    assert not serving.done()
                    await asyncio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)  # serve() stops on it, as in production
            await serving
    finally:
        gc.unfreeze()
