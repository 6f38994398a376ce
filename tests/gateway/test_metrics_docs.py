"""docs/operations.md's metric table and what the two processes export agree.

The table is read from the document itself: every exported ``agent_*``
family is listed with its type and its label names, every listed metric is
exported, label values quoted in the table are the ones sent, and no
``*_created`` series doubles the series count.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.errors import Reason
from service.server import RunningService
from tests.gateway.conftest import AUTH

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
_ROW = re.compile(r"^\| `(agent_[a-z_]+)` \| (\w+) \| ([^|]*) \| (.*) \|$")


def documented() -> dict[str, tuple[str, set[str], str]]:
    """metric -> (type, label names, the row's text)."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            name, kind, labels, text = match.groups()
            rows[name] = (kind, set(re.findall(r"`(\w+)`", labels)), text)
    return rows


def _base(sample_name: str, family: str) -> str:
    return family if sample_name.startswith(family) else sample_name


async def test_the_docs_table_is_what_both_processes_export(
    service: RunningService, client: httpx.AsyncClient
) -> None:
    # Traffic that fills the labelled series: a turn that fails at the provider (nothing
    # listens at the Ollama URL) and a status call.
    failed = await client.post("/api/chat", json={"message": "hi"}, headers=AUTH)
    assert failed.status_code == 503, failed.text
    assert (await client.get("/api/status", headers=AUTH)).status_code == 200
    assert service.metrics_port
    async with httpx.AsyncClient() as plain:  # not the gateway: the service's metrics
        own = await plain.get(f"http://127.0.0.1:{service.metrics_port}/metrics")
    texts = {"service": own.text, "gateway": (await client.get("/metrics")).text}
    docs = documented()
    assert len(docs) >= 16
    exported: dict[str, tuple[str, set[str]]] = {}
    for process, text in texts.items():
        assert "_created" not in text, f"{process} exports *_created series"
        for family in text_string_to_metric_families(text):
            if not family.name.startswith("agent_"):
                continue
            labels = {k for s in family.samples for k in s.labels if k != "le"}
            name = family.name + ("_total" if family.type == "counter" else "")
            known = exported.get(name, (family.type, set()))[1]
            exported[name] = (family.type, known | labels)
    assert set(exported) == set(docs)
    for name, (kind, labels) in exported.items():
        doc_kind, doc_labels, _ = docs[name]
        assert kind == doc_kind, name
        assert labels <= doc_labels, (name, labels, doc_labels)
    # Label values the table names are the ones exported.
    assert "`Chat`" in docs["agent_grpc_server_handled_total"][2]
    assert 'method="Chat"' in texts["service"]
    # kind is a Reason in lower case: the table names the rule and examples that exist.
    kinds = {reason.value.lower() for reason in Reason}
    quoted = set(re.findall(r"`(\w+)`", docs["agent_provider_errors_total"][2]))
    assert quoted - {"kind", "reason", "deadline_exceeded"} <= kinds and len(quoted & kinds) >= 3
    for reason in ("max_pending", "max_pending_per_user", "shutting_down"):
        assert f"`{reason}`" in docs["agent_queue_rejected_total"][2], reason


async def test_a_provider_that_is_not_configured_exports_nothing(
    service: RunningService, client: httpx.AsyncClient
) -> None:
    """No Anthropic key here: no anthropic slots, queue series or status row."""
    status = (await client.get("/api/status", headers=AUTH)).json()
    assert [p["provider"] for p in status["queue_stats"]["providers"]] == ["ollama"]
    assert [p["name"] for p in status["providers"]] == ["ollama"]
    async with httpx.AsyncClient() as plain:  # not the gateway: the service's metrics
        text = (await plain.get(f"http://127.0.0.1:{service.metrics_port}/metrics")).text
    assert 'provider="ollama"' in text and "anthropic" not in text
