"""The health checks against a scripted probe (the seam), reporting into a real scheduler."""

from __future__ import annotations

from service.errors import ProviderError, UpstreamLost
from service.pool import HealthMonitor
from service.providers.base import HostInventory
from service.scheduler import Host, Scheduler
from service.scheduler.memory import MemoryScheduler


class ScriptedProbe:
    """Answers per host: an inventory, or an error to raise."""

    def __init__(self) -> None:
        self.answers: dict[str, HostInventory | Exception] = {}
        self.asked: list[tuple[str, bool]] = []

    async def __call__(self, host: str, installed: bool) -> HostInventory:
        self.asked.append((host, installed))
        answer = self.answers.get(host, HostInventory(loaded=frozenset()))
        if isinstance(answer, Exception):
            raise answer
        return answer


def setup(unhealthy_after: int = 2) -> tuple[Scheduler, ScriptedProbe, HealthMonitor]:
    scheduler = Scheduler(
        slots={}, hosts={"ollama": [Host("a", 1), Host("b", 1, models=frozenset({"m"}))]}
    )
    probe = ScriptedProbe()
    monitor = HealthMonitor(
        MemoryScheduler(scheduler),
        provider="ollama",
        probe=probe,
        interval_s=5.0,
        unhealthy_after=unhealthy_after,
        learn_models=["a"],
    )
    return scheduler, probe, monitor


def state(scheduler: Scheduler) -> dict[str, tuple[bool, str]]:
    return {h.name: (h.up, h.last_error) for h in scheduler.hosts("ollama")}


async def test_a_host_is_down_after_failed_probes_in_a_row_and_up_after_one_passes() -> None:
    scheduler, probe, monitor = setup(unhealthy_after=2)
    probe.answers["b"] = ProviderError("Ollama at b answered HTTP 500")
    await monitor.check()
    assert state(scheduler)["b"] == (True, "Ollama at b answered HTTP 500")  # one is not enough
    await monitor.check()
    assert state(scheduler)["b"] == (False, "Ollama at b answered HTTP 500")
    probe.answers["b"] = HostInventory(loaded=frozenset({"m:latest"}))
    await monitor.check()
    b = scheduler.hosts("ollama")[1]
    assert b.up and b.loaded == {"m:latest"}


async def test_a_refused_connection_marks_a_host_down_at_once() -> None:
    scheduler, probe, monitor = setup(unhealthy_after=5)
    probe.answers["a"] = UpstreamLost("cannot reach a: connection refused", refused=True)
    await monitor.check()
    assert state(scheduler) == {"a": (False, "cannot reach a: connection refused"), "b": (True, "")}


async def test_hosts_without_configured_models_learn_them_from_the_host() -> None:
    scheduler, probe, monitor = setup()
    probe.answers["a"] = HostInventory(loaded=frozenset(), installed=frozenset({"x:latest"}))
    await monitor.check()
    assert sorted(probe.asked) == [("a", True), ("b", False)]
    a = scheduler.hosts("ollama")[0]
    assert a.models == {"x:latest"} and a.serves("x") and not a.serves("m")
