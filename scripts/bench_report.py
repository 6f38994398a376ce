"""Benchmark report: verdicts against DESIGN §6 and the printed tables."""

from __future__ import annotations

import sys
from typing import Any

from bench_cache import cache_verdicts
from bench_jwt import jwt_verdicts
from bench_tools import TOKEN_SPACING_MS

# --- the report ----------------------------------------------------------------


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, measured, against the baseline, met) for each DESIGN §6 figure and issue's."""
    return [
        *stack_verdicts(r),
        *(jwt_verdicts(r["jwt"]) if r.get("jwt") else []),
        *(cache_verdicts(r["cache_warm"]) if r.get("cache_warm") else []),
    ]


def stack_verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """The DESIGN §6 figures of the stack's own runs."""
    seq = r["sequential"]
    added = seq["gateway"]["latency_ms"]["p50"] - seq["backend"]["latency_ms"]["p50"]
    seq_ratio = seq["gateway"]["latency_ms"]["p50"] / seq["backend"]["latency_ms"]["p50"]
    tput = r["throughput"]
    rps = tput["gateway"]["rps"]
    st = r["streaming"]["gateway"]
    st_base = r["streaming"]["backend"]["delay_ms"]["p50"]
    big = r["open_streams"]
    grown = sum(big["rss_kib_peak"][p] - big["rss_kib_before"][p] for p in ("gateway", "service"))
    per_stream = grown / big["streams"]
    completed = big["outcomes"].get("done", 0)
    at_backend = big["most_open_at_backend"]
    base_rss = sum(big["rss_kib_before"][p] for p in ("gateway", "service"))
    return [
        (
            "one request at a time adds <= 1.2 ms (p50)",
            f"+{added:.2f} ms",
            f"{seq_ratio:.1f}x the backend's p50",
            added <= 1.2,
        ),
        (
            "32 clients: >= 800 req/s through both hops",
            f"{rps:.0f} req/s",
            f"{rps / tput['backend']['rps']:.3f}x the backend direct, "
            f"{rps / tput['grpc']['rps']:.2f}x the service alone (gRPC)",
            rps >= 800,
        ),
        (
            f"a token is not held for the next ({TOKEN_SPACING_MS} ms later)",
            f"{st['share_before_next_token']:.1%} in time, p99 {st['delay_ms']['p99']:.2f} ms",
            f"p50 {st['delay_ms']['p50'] / st_base:.1f}x the backend direct",
            st["share_before_next_token"] >= 0.99,
        ),
        *floor_verdicts(r),
        (
            f"{big['streams']} open streams are cheap (all stream at once, finish, "
            "<= 100 KiB each)",
            f"{completed}/{big['streams']} done, {at_backend} at once at the backend, "
            f"{per_stream:.0f} KiB/stream",
            f"gateway+service RSS +{grown / 1024:.0f} MiB over {base_rss / 1024:.0f} MiB "
            f"({(base_rss + grown) / base_rss:.2f}x)",
            completed == big["streams"]
            and at_backend >= 0.99 * big["streams"]
            and per_stream <= 100,
        ),
    ]


def floor_verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """The targets of the turn path, as ratios to the floor probes of the same run."""
    floor_p50 = r["floor"]["sequential"]["http"]["latency_ms"]["p50"]
    floor_rps = r["floor"]["throughput"]["http"]["rps"]
    p50 = r["sequential"]["gateway"]["latency_ms"]["p50"]
    rps = r["throughput"]["gateway"]["rps"]
    long = r["long_conversation"]
    fresh_p50, half_p50, long_p50 = (
        long[k]["latency_ms"]["p50"] for k in ("fresh", "half", "long")
    )
    fresh_cpu, half_cpu, long_cpu = (
        long[k]["cpu"]["service"]["cpu_us_per_request"] for k in ("fresh", "half", "long")
    )
    big = r["open_streams"]
    first_p99 = big["first_token_ms"]["p99"]
    grown = sum(big["rss_kib_peak"][p] - big["rss_kib_before"][p] for p in ("gateway", "service"))
    per_stream = grown / big["streams"]
    return [
        (
            "/api/chat at c=1: p50 <= 2.0x the bare route's",
            f"{p50:.2f} ms against {floor_p50:.2f} ms",
            f"{p50 / floor_p50:.2f}x the floor",
            p50 <= 2.0 * floor_p50,
        ),
        (
            "/api/chat at c=32: >= 0.5x the bare route's requests/s",
            f"{rps:.0f} req/s against {floor_rps:.0f}",
            f"{rps / floor_rps:.2f}x the floor",
            rps >= 0.5 * floor_rps,
        ),
        (
            f"a turn on a {long['messages']}-message conversation <= 1.3x a fresh one",
            f"p50 {long_p50:.2f} ms against {fresh_p50:.2f} ms; service CPU "
            f"{long_cpu:.0f} us against {fresh_cpu:.0f} us",
            f"{long_p50 / fresh_p50:.2f}x (p50), {long_cpu / fresh_cpu:.2f}x (CPU)",
            long_p50 <= 1.3 * fresh_p50 and long_cpu <= 1.3 * fresh_cpu,
        ),
        (
            f"flat in the length: {long['messages']} messages <= 1.3x "
            f"{long['half_messages']} (both past the history budget)",
            f"p50 {long_p50:.2f} ms against {half_p50:.2f} ms; service CPU "
            f"{long_cpu:.0f} us against {half_cpu:.0f} us",
            f"{long_p50 / half_p50:.2f}x (p50), {long_cpu / half_cpu:.2f}x (CPU)",
            long_p50 <= 1.3 * half_p50 and long_cpu <= 1.3 * half_cpu,
        ),
        (
            f"{big['streams']} streams at once: first token p99 <= 1.5 s, <= 80 KiB each",
            f"p99 {first_p99 / 1e3:.2f} s, {per_stream:.0f} KiB/stream",
            "gateway + service RSS growth at the peak",
            first_p99 <= 1500 and per_stream <= 80,
        ),
    ]


def chat_report(meta: dict[str, Any], r: dict[str, Any]) -> None:
    """``bench.py --chat-only``: the single-request path of /api/chat against the floor."""
    sys.stderr.flush()
    m = meta["machine"]
    print(f"\n/api/chat against the floor ({meta['mode']} run, {meta['seconds']:.0f} s)")
    print(
        f"speed: one small JSON dumps+loads takes {m['json_round_trip_us']:.1f} us here; "
        f"load average at start {m['loadavg_at_start'][0]:.2f}"
    )
    floor = r["floor"]["sequential"]["http"]["latency_ms"]
    floor_rps = r["floor"]["throughput"]["http"]["rps"]
    seq = r["sequential"]["gateway"]["latency_ms"]
    tp = r["throughput"]["gateway"]
    print(
        f"  floor: c=1 p50 {floor['p50']:.2f} ms, p99 {floor['p99']:.2f} ms;"
        f" c=32 {floor_rps:.0f} req/s"
    )
    print(
        f"  /api/chat c=1: p50 {seq['p50']:.2f} ms ({seq['p50'] / floor['p50']:.2f}x the floor),"
        f" p99 {seq['p99']:.2f} ms ({seq['p99'] / seq['p50']:.2f}x its p50), max {seq['max']:.2f}"
        f" ms (n={seq['n']})"
    )
    print(
        f"  /api/chat c={tp['clients']}: {tp['rps']:.0f} req/s ({tp['rps'] / floor_rps:.2f}x the"
        f" floor), p50 {tp['latency_ms']['p50']:.2f} ms, errors {tp['errors']}"
    )
    grpc_rps = r["throughput"]["grpc"]["rps"]
    print(f"  gRPC Chat c={tp['clients']}: {grpc_rps:.0f} req/s")
    for key, label in (("sequential", "c=1"), ("throughput", f"c={tp['clients']}")):
        cpu = r[key]["gateway"]["cpu"]
        print(f"  CPU per request at {label}: {cpu_line(cpu, 'cpu_us_per_request', ' us')}")


def row(*cells: object, widths: tuple[int, ...] = (26, 7, 9, 9, 9, 14)) -> str:
    out: list[str] = []
    for cell, width in zip(cells, widths, strict=False):
        text = f"{cell:.2f}" if isinstance(cell, float) else str(cell)
        out.append(text.ljust(width) if not out else text.rjust(width))
    return " ".join(out)


def cpu_line(cpu: dict[str, dict[str, float]], key: str, unit: str) -> str:
    parts = [
        f"{name} {v[key] * (100 if key == 'core_share' else 1):.0f}{unit}"
        for name, v in cpu.items()
    ]
    return ", ".join(parts)


def report(meta: dict[str, Any], r: dict[str, Any]) -> None:
    sys.stderr.flush()
    m = meta["machine"]
    print(f"\nagent-service benchmark ({meta['mode']} run, {meta['seconds']:.0f} s)")
    print(
        f"machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, "
        f"{m['implementation']} {m['python']}, uvloop {m['uvloop']}, grpcio {m['grpcio']}"
    )
    print(
        f"speed: one small JSON dumps+loads takes {m['json_round_trip_us']:.1f} us here; "
        f"load average at start {m['loadavg_at_start'][0]:.2f}"
    )
    print(
        "stack: 1 gateway worker + 1 service + bench_backend.py (fake Ollama); "
        "client = this process (httpx / grpc.aio on uvloop)"
    )
    print("chat turns: new_conversation=true, users bench-0..31 (one store write per turn)")

    fl = r["floor"]
    print("\n0. The floor: a bare FastAPI route calling a bare grpc.aio echo (same run)")
    for key, label in (("grpc", "bare grpc.aio echo"), ("http", "bare route -> echo")):
        s = fl["sequential"][key]["latency_ms"]
        print(f"  {label}: c=1 p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms (n={s['n']})")
    ft = fl["throughput"]["http"]
    print(
        f"  bare route at c={ft['clients']}: {ft['rps']:.0f} req/s, "
        f"p50 {ft['latency_ms']['p50']:.2f} ms"
    )

    seq = r["sequential"]
    base = seq["backend"]["latency_ms"]["p50"]
    print("\n1-3. Sequential latency, one request at a time (ms)")
    print(row("path", "n", "p50", "p99", "mean", "p50 vs backend"))
    for key, label in (
        ("backend", "backend direct (HTTP)"),
        ("grpc", "service via gRPC Chat"),
        ("gateway", "gateway POST /api/chat"),
    ):
        s = seq[key]["latency_ms"]
        print(
            row(
                label,
                s["n"],
                s["p50"],
                s["p99"],
                s["mean"],
                f"{s['p50'] / base:.2f}x +{s['p50'] - base:.2f}",
            )
        )
    g, c = seq["gateway"]["latency_ms"]["p50"], seq["grpc"]["latency_ms"]["p50"]
    print(
        f"  added p50: service hop (gRPC - backend) {c - base:.2f} ms, "
        f"gateway hop (gateway - gRPC) {g - c:.2f} ms, total {g - base:.2f} ms"
    )
    for key in ("grpc", "gateway"):
        print(
            f"  CPU per request ({key} run): "
            f"{cpu_line(seq[key]['cpu'], 'cpu_us_per_request', ' us')}"
        )

    tp = r["throughput"]
    labels = {
        "backend": "backend direct (lean)",
        "grpc": "service via gRPC Chat",
        "gateway": "gateway /api/chat (lean)",
        "gateway_httpx": "gateway /api/chat (httpx)",
    }
    rows = [(key, label) for key, label in labels.items() if key in tp]
    print(
        f"\n4. Throughput, {tp['gateway']['clients']} concurrent clients, keep-alive "
        "(lean = this script's raw HTTP/1.1 client)"
    )
    print(row("path", "errors", "req/s", "p50 ms", "p99 ms", "vs backend"))
    for key, label in rows:
        t = tp[key]
        print(
            row(
                label,
                t["errors"],
                f"{t['rps']:.0f}",
                t["latency_ms"]["p50"],
                t["latency_ms"]["p99"],
                f"{t['rps'] / tp['backend']['rps']:.3f}x",
            )
        )
    for key, label in rows:
        cpu = tp[key]["cpu"]
        busy = sum(v["core_share"] for v in cpu.values())
        print(
            f"  {label}: % of one core: {cpu_line(cpu, 'core_share', '%')} "
            f"(sum {busy:.2f} of {m['usable_cores']})"
        )
        pad = " " * len(label)
        print(f"  {pad}  CPU per request: {cpu_line(cpu, 'cpu_us_per_request', ' us')}")
        print(f"  {pad}  new connections at the backend: {tp[key]['backend_connections_opened']}")
    for key, label in rows[2:]:
        cpu = tp[key]["cpu"]
        client = cpu["client"]["core_share"]
        busy = sum(v["core_share"] for v in cpu.values())
        if client > 0.85:
            verdict = "it may be the bottleneck"
        elif busy > 0.9 * m["usable_cores"]:
            verdict = "the cores are all busy, so it takes CPU the servers need"
        else:
            verdict = "not the bottleneck"
        print(f"  {label}: the client used {client:.0%} of a core: {verdict}")
    if tp["backend"]["cpu"]["client"]["core_share"] > 0.85:
        print("  (the backend-direct baseline is bound by this client, so it is a floor)")

    st = r["streaming"]
    base = st["backend"]["delay_ms"]["p50"]
    print(
        f"\n5. Streaming: backend write -> client receipt per token, "
        f"tokens {TOKEN_SPACING_MS} ms apart (ms)"
    )
    print(row("path", "tokens", "p50", "p99", "max", "< spacing"))
    for key, label in (
        ("backend", "backend direct (NDJSON)"),
        ("grpc", "gRPC ChatStream"),
        ("gateway", "gateway SSE"),
    ):
        d = st[key]["delay_ms"]
        print(
            row(
                label,
                d["n"],
                d["p50"],
                d["p99"],
                d["max"],
                f"{st[key]['share_before_next_token']:.1%}",
            )
        )
    print(f"  gateway p50 is {st['gateway']['delay_ms']['p50'] / base:.1f}x the backend's")

    big = r["open_streams"]
    print(
        f"\n6. {big['streams']} concurrent streams ({big['tokens_each']} tokens, 1 s apart), "
        f"{big['seconds']:.1f} s"
    )
    print(
        f"  outcomes: {big['outcomes']}; open at once: {big['most_open_at_client']} at the "
        f"client, {big['most_open_at_backend']} at the backend"
    )
    for key, label in (
        ("open_ms", "request -> SSE headers"),
        ("first_token_ms", "request -> first token"),
        ("token_delay_ms", "token write -> receipt"),
    ):
        d = big[key]
        print(
            f"  {label}: p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, max {d['max']:.1f} ms "
            f"(n={d['n']})"
        )
    print(f"  % of one core meanwhile: {cpu_line(big['cpu'], 'core_share', '%')}")
    print(row("process RSS (MiB)", "", "before", "peak", "after", "KiB/stream"))
    for name in ("gateway", "service", "backend", "client"):
        b, p, a = (big[k][name] / 1024 for k in ("rss_kib_before", "rss_kib_peak", "rss_kib_after"))
        print(row(name, "", b, p, a, f"{(p - b) * 1024 / big['streams']:.1f}"))

    lc = r["long_conversation"]
    print(f"\n7. History cost: a turn on a fresh conversation vs one of {lc['messages']}+ messages")
    for key in ("fresh", "half", "long"):
        s = lc[key]["latency_ms"]
        cpu = lc[key]["cpu"]["service"]["cpu_us_per_request"]
        print(
            f"  {key}: p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms, service CPU {cpu:.0f} us/turn"
        )

    print("\nSummary against DESIGN §6, the floor, and the JWT and cache-warm targets")
    for target, measured, ratio, met in verdicts(r):
        print(f"  [{'met' if met else 'NOT met'}] {target}\n      {measured}; {ratio}")
