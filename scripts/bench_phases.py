"""Benchmark phases: sequential latency, load, per-token delay, many open streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench_tools import (
    BIG_STREAMS,
    STAMP,
    TOKEN_SPACING_MS,
    Clients,
    Meter,
    Plan,
    RawHttp,
    Send,
    chat_body,
    pb,
    rss_kib,
    stats,
)

# --- measurements ---------------------------------------------------------------


async def sequential(
    send: Send, count: int, limit_s: float, pids: dict[str, int]
) -> dict[str, Any]:
    """One request at a time: latency (ms) of each, and CPU per request in each process."""
    for i in range(min(100, count)):
        await send(i)
    latencies: list[float] = []
    meter = Meter(pids)
    deadline = time.perf_counter() + limit_s
    for i in range(count):
        t0 = time.perf_counter()
        await send(i)
        latencies.append((time.perf_counter() - t0) * 1e3)
        if t0 > deadline:
            break
    return {"latency_ms": stats(latencies), "cpu": meter.read(len(latencies))}


async def load(send: Send, plan: Plan, pids: dict[str, int], backend: Clients) -> dict[str, Any]:
    """``load_clients`` workers back to back for a fixed time: requests/s, latency, CPU."""
    loop = asyncio.get_running_loop()
    measuring = False
    stop_at = loop.time() + plan.load_warmup_s + plan.load_s
    done: list[float] = []
    errors: list[str] = []

    async def worker(w: int) -> None:
        i = w
        while loop.time() < stop_at:
            t0 = time.perf_counter()
            try:
                await send(i)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)
                continue
            if measuring:
                done.append((time.perf_counter() - t0) * 1e3)
            i += plan.load_clients

    workers = [asyncio.create_task(worker(w)) for w in range(plan.load_clients)]
    await asyncio.sleep(plan.load_warmup_s)
    measuring = True
    connections = await backend.backend_connections()
    meter = Meter(pids)
    t0 = time.perf_counter()
    await asyncio.sleep(plan.load_s)
    measuring = False
    elapsed = time.perf_counter() - t0
    count = len(done)
    cpu = meter.read(count)
    connections = await backend.backend_connections() - connections
    async with asyncio.timeout(60):
        await asyncio.gather(*workers)
    return {
        "clients": plan.load_clients,
        "seconds": elapsed,
        "requests": count,
        "rps": count / elapsed,
        "latency_ms": stats(done),
        "errors": len(errors),
        "first_errors": errors[:3],
        "cpu": cpu,
        "backend_connections_opened": connections,
    }


async def streaming(stream: Callable[[str], Awaitable[list[float]]], plan: Plan) -> dict[str, Any]:
    """Per-token delay from the backend's write to this client, one stream at a time."""
    message = f"tokens={plan.stream_tokens} delay_ms={TOKEN_SPACING_MS}"
    delays: list[float] = []
    await stream(message)
    for _ in range(plan.stream_turns):
        delays += await stream(message)
    on_time = sum(1 for d in delays if d < TOKEN_SPACING_MS)
    return {
        "spacing_ms": TOKEN_SPACING_MS,
        "delay_ms": stats(delays),
        "share_before_next_token": on_time / len(delays) if delays else 0.0,
    }


async def many_streams(
    clients: Clients, gateway_url: str, plan: Plan, pids: dict[str, int]
) -> dict[str, Any]:
    """``BIG_STREAMS`` slow streams at once: memory before/during, waits, completion.

    The streams are read with RawHttp, one connection each: httpx's pool does
    work proportional to its size on every request, which at 1,000
    connections would make this client a bottleneck of its own.
    """
    message = f"tokens={plan.big_tokens} delay_ms=1000"
    gateway = RawHttp.for_url(gateway_url, "/api/chat/stream", 0)
    before = {name: rss_kib(pid) for name, pid in pids.items()}
    peak = dict(before)
    open_now = most_open = 0
    outcomes: list[str] = []
    open_ms: list[float] = []
    first_token_ms: list[float] = []
    token_delay_ms: list[float] = []

    async def one(i: int) -> None:
        nonlocal open_now, most_open
        t0, event, counted, first = time.perf_counter(), "message", False, True
        request = gateway.request(chat_body(message, f"bench-{i % 32}"))
        try:
            async for line in gateway.lines(request):
                if not counted:
                    if line.startswith("HTTP "):
                        outcomes.append(line)
                        return
                    open_ms.append((time.perf_counter() - t0) * 1e3)
                    open_now, counted = open_now + 1, True
                    most_open = max(most_open, open_now)
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event in ("done", "error"):
                        outcomes.append(event)
                        return
                elif line.startswith("data:") and event == "message":
                    found = STAMP.search(line)
                    if found:
                        token_delay_ms.append((time.time_ns() - int(found[1])) / 1e6)
                        if first:
                            first_token_ms.append((time.perf_counter() - t0) * 1e3)
                            first = False
                elif not line:
                    event = "message"
            outcomes.append("ended without done")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
        finally:
            if counted:
                open_now -= 1

    async def sample() -> None:
        while True:
            for name, pid in pids.items():
                peak[name] = max(peak[name], rss_kib(pid))
            await asyncio.sleep(0.1)

    await clients.backend.get("/bench/stats")  # resets the backend's peak
    sampler = asyncio.create_task(sample())
    meter = Meter(pids)
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(BIG_STREAMS)]
    _, unfinished = await asyncio.wait(tasks, timeout=plan.big_limit_s)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    cpu = meter.read(BIG_STREAMS)
    sampler.cancel()
    backend = (await clients.backend.get("/bench/stats")).json()
    await asyncio.sleep(1.0)
    after = {name: rss_kib(pid) for name, pid in pids.items()}
    tally: dict[str, int] = {}
    for outcome in outcomes:
        tally[outcome] = tally.get(outcome, 0) + 1
    if unfinished:
        tally["still open at the time limit"] = len(unfinished)
    return {
        "streams": BIG_STREAMS,
        "tokens_each": plan.big_tokens,
        "token_spacing_s": 1.0,
        "seconds": elapsed,
        "outcomes": tally,
        "most_open_at_client": most_open,
        "most_open_at_backend": backend["peak"],
        "open_ms": stats(open_ms),
        "first_token_ms": stats(first_token_ms),
        "token_delay_ms": stats(token_delay_ms),
        "rss_kib_before": before,
        "rss_kib_peak": peak,
        "rss_kib_after": after,
        "cpu": cpu,
    }


async def long_conversation(clients: Clients, plan: Plan, pids: dict[str, int]) -> dict[str, Any]:
    """A turn on a fresh conversation, on one of ``plan.long_messages // 2`` messages, and on
    one of ``plan.long_messages``.

    All go through the gateway one at a time; the conversation is filled over
    gRPC in between (two messages a turn). What is compared is the p50 and the
    service's CPU per turn. Half the long size already holds more than the
    history budget lets through, so "half" against "long" shows whether the
    cost grows with the conversation; "fresh" against "long" adds the cost of
    sending a full budget of history to the model.
    """
    user = "bench-long"
    first = await clients.gateway.post("/api/chat", json=chat_body("hi", user))
    conversation = first.json()["conversation_id"]
    stored = 2

    async def fill(messages: int) -> None:
        nonlocal stored
        while stored < messages:
            await clients.stub.Chat(
                pb.ChatRequest(message="hi", user_id=user, conversation_id=conversation),
                timeout=30,
            )
            stored += 2

    async def fresh(i: int) -> None:
        r = await clients.gateway.post("/api/chat", json=chat_body("hi", f"bench-fresh-{i}"))
        if r.status_code != 200:
            raise RuntimeError(f"gateway answered {r.status_code}")

    async def continued(_i: int) -> None:
        body = {"message": "hi", "user_id": user, "conversation_id": conversation}
        r = await clients.gateway.post("/api/chat", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"gateway answered {r.status_code}")

    service = {"service": pids["service"]}
    turns = plan.long_turns
    results: dict[str, Any] = {"messages": plan.long_messages}
    results["fresh"] = await sequential(fresh, turns, plan.seq_limit_s, service)
    await fill(plan.long_messages // 2)
    results["half_messages"] = stored
    results["half"] = await sequential(continued, turns, plan.seq_limit_s, service)
    # The measured turns added messages; fill up from wherever they left it.
    stored += 2 * (min(100, turns) + results["half"]["latency_ms"]["n"])
    await fill(plan.long_messages)
    results["long"] = await sequential(continued, turns, plan.seq_limit_s, service)
    return results
