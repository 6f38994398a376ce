"""Every adapter of the scheduler port offers each operation with the port's parameters.

mypy checks the structural fit where the service hands an adapter to code
typed with ``RequestScheduler`` (service/server.py); this test also catches an
operation added to one side only, and a sync method where the port is async.
"""

from __future__ import annotations

import inspect

import pytest

from service.scheduler.interface import RequestScheduler
from service.scheduler.memory import MemoryScheduler
from service.scheduler.postgres import PostgresScheduler

ADAPTERS: list[type] = [MemoryScheduler, PostgresScheduler]


def _ops() -> list[str]:
    return [
        name
        for name, member in vars(RequestScheduler).items()
        if callable(member) and not name.startswith("_")
    ]


def _params(function: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]  # type: ignore[arg-type]


def test_the_port_names_its_operations() -> None:
    assert {"submit", "acquire", "release", "finish", "cancel", "status", "stats"} <= set(_ops())


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.__name__)
def test_each_adapter_has_every_operation_with_the_same_parameters_and_kind(adapter: type) -> None:
    for name in _ops():
        wanted = getattr(RequestScheduler, name)
        have = getattr(adapter, name)
        assert _params(have) == _params(wanted), name
        assert inspect.iscoroutinefunction(have) == inspect.iscoroutinefunction(wanted), name
        assert inspect.isasyncgenfunction(have) == (name == "positions"), name
