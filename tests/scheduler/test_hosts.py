"""The host policy: which free host a request runs on (pure, no scheduler)."""

from __future__ import annotations

import pytest

from service.scheduler import Host, choose_host, model_aliases
from service.scheduler.registry import Ticket


def busy(host: Host, n: int) -> Host:
    for i in range(n):
        host.running.add(
            Ticket(
                request_id=f"{host.name}-{i}",
                user_id="u",
                provider="ollama",
                priority=5,
                seq=i,
                enqueued_mono=0.0,
                enqueued_at=0.0,
            )
        )
    return host


def test_model_aliases_follow_ollamas_latest_tag() -> None:
    assert model_aliases(["m1"]) == {"m1", "m1:latest"}
    assert model_aliases(["m1:latest"]) == {"m1", "m1:latest"}
    assert model_aliases(["m1:7b"]) == {"m1:7b"}


def test_a_host_serves_its_models_in_either_spelling_or_any_without_a_list() -> None:
    host = Host("a", 1, models=frozenset({"m1:latest"}))
    assert host.serves("m1") and host.serves("m1:latest") and not host.serves("m2")
    assert Host("b", 1).serves("anything")


def test_only_hosts_that_serve_the_model_are_chosen() -> None:
    a = Host("a", 1, models=frozenset({"m1"}))
    b = Host("b", 1, models=frozenset({"m2"}))
    assert choose_host([a, b], "m2") is b
    assert choose_host([a, b], "m1") is a
    assert choose_host([a, b], "m3") is None
    assert choose_host([a], "m2") is None


def test_the_previous_turns_host_comes_first() -> None:
    a = busy(Host("a", 4, loaded=frozenset({"m:latest"})), 0)
    b = busy(Host("b", 4), 3)  # more loaded, model not loaded: still preferred
    assert choose_host([a, b], "m", previous="b") is b


def test_then_a_host_with_the_model_loaded() -> None:
    a = busy(Host("a", 4), 0)
    b = busy(Host("b", 4, loaded=frozenset({"m:latest"})), 2)
    assert choose_host([a, b], "m") is b
    assert choose_host([a, b], "other") is a  # loaded only counts for the model asked for


def test_then_the_least_loaded_host() -> None:
    a = busy(Host("a", 2), 1)  # half full
    b = busy(Host("b", 4), 1)  # a quarter full
    c = busy(Host("c", 4), 1)
    assert choose_host([a, b, c], "m") is b  # ties go to the order of configuration


def test_a_host_the_request_failed_on_comes_last_but_is_still_used() -> None:
    a = Host("a", 1, loaded=frozenset({"m:latest"}))
    b = Host("b", 1)
    assert choose_host([a, b], "m", previous="a", avoid=("a",)) is b
    assert choose_host([a], "m", avoid=("a",)) is a


def test_a_host_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Host("a", 0)
