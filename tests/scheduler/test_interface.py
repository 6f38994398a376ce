"""The in-process scheduler provides the whole narrow interface its callers use.

mypy checks the structural fit where the service hands a ``Scheduler`` to
code typed with ``RequestScheduler`` (service/server.py); this test checks
that every operation of the interface exists with the same parameters, so an
operation added to one side only is caught here too.
"""

from __future__ import annotations

import inspect

from service.scheduler import Scheduler
from service.scheduler.interface import RequestScheduler


def test_the_scheduler_has_every_operation_with_the_same_parameters() -> None:
    ops = [
        name
        for name, member in vars(RequestScheduler).items()
        if callable(member) and not name.startswith("_")
    ]
    assert len(ops) >= 14
    for name in ops:
        wanted = inspect.signature(getattr(RequestScheduler, name)).parameters
        have = inspect.signature(getattr(Scheduler, name)).parameters
        assert [(p.name, p.kind, p.default) for p in have.values()] == [
            (p.name, p.kind, p.default) for p in wanted.values()
        ], name
