"""The in-process scheduler provides the whole narrow interface its callers use."""

from __future__ import annotations

import inspect

from service.scheduler import Scheduler
from service.scheduler.interface import RequestScheduler


def conforms(scheduler: RequestScheduler) -> RequestScheduler:
    return scheduler  # mypy checks this assignment in `make lint`'s type check of service/


def test_the_scheduler_has_every_operation_with_the_same_signature() -> None:
    ops = [
        name
        for name, member in vars(RequestScheduler).items()
        if callable(member) and not name.startswith("_")
    ]
    assert len(ops) >= 14
    for name in ops:
        wanted = inspect.signature(getattr(RequestScheduler, name))
        have = inspect.signature(getattr(Scheduler, name))
        assert list(have.parameters) == list(wanted.parameters), name
    assert conforms(Scheduler(slots={"ollama": 1})) is not None
