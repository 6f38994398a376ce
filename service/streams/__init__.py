"""Re-attachable chat streams: numbered events, the disconnect policy, idempotent retries."""

from service.streams.registry import RunRegistry
from service.streams.run import Policy, TurnRun, event_size
from service.streams.turns import RunElsewhere, StreamingTurns, Write

__all__ = [
    "Policy",
    "RunElsewhere",
    "RunRegistry",
    "StreamingTurns",
    "TurnRun",
    "Write",
    "event_size",
]
