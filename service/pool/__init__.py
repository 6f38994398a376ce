"""A pool of model hosts behind one provider queue: health checks and failover.

The scheduler knows hosts only as slots, model sets and an up/down flag
(``service.scheduler.hosts``). This package keeps those facts current
(``health``: a probe per host every interval) and runs a turn on the host its
ticket was given, moving it to another host when its own goes down before the
turn has sent anything (``failover``).
"""

from service.pool.breaker import CircuitBreaker
from service.pool.failover import HostPool
from service.pool.health import HealthMonitor, Probe

__all__ = ["CircuitBreaker", "HealthMonitor", "HostPool", "Probe"]
