"""Request scheduling: who runs next on which provider, and what became of each request.

Every chat request is submitted to the ``Scheduler`` and gets a ``Ticket``
with a ``request_id``. Its record moves queued → running → completed |
cancelled | failed and is kept for ``retention_s`` after it ends, so status
look-ups still answer. Each provider has a fixed number of slots; a request
waits in that provider's queue until a slot is handed to it. The order of the
queue (priority, users taking turns, aging) is described in
``service.scheduler.queue``. Waiting requests are capped service-wide and per
user; a request over a cap is refused at once with QueueFull and a retry hint.
A provider's slots may sit on several hosts (a pool of Ollama boxes); which
host a request runs on is ``service.scheduler.hosts``.

Pure asyncio, one event loop, no background tasks.
"""

from service.scheduler.admission import MAX_PRIORITY, MIN_PRIORITY, check_request
from service.scheduler.estimates import HostStats, ProviderQueueStats, QueueStats
from service.scheduler.hosts import Host, choose_host, model_aliases
from service.scheduler.registry import Outcome, RequestInfo, State, Ticket
from service.scheduler.scheduler import COMMANDS, Scheduler

__all__ = [
    "COMMANDS",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Host",
    "HostStats",
    "Outcome",
    "ProviderQueueStats",
    "QueueStats",
    "RequestInfo",
    "Scheduler",
    "State",
    "Ticket",
    "check_request",
    "choose_host",
    "model_aliases",
]
