"""The garbage collector after start-up: what start-up built is left out of full collections."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then move every object alive now to the permanent generation.

    A full (generation 2) collection walks every tracked object. After start-up
    that is ~120,000 of them (modules, classes, the gRPC and pydantic
    machinery), which made every full collection under load a pause of ~35 ms
    on the bench machine, whatever the request traffic. Frozen, they are never
    walked again; they are still freed by reference counting if they go.
    Returns how many objects are frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
