"""The deployment files say what docs/operations.md says they do.

Each property is a checker that returns its problems, run on the real file
and on a small bad example (so the check can fail). systemd-analyze, promtool
and docker compose are used when they are on PATH and skipped otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
UNITS = [DEPLOY / "systemd" / "agent-service.service", DEPLOY / "systemd" / "agent-gateway.service"]
DASHBOARD = DEPLOY / "grafana" / "agent-service.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"

# The metrics issue 13 asks for, by family name.
METRICS = [
    "agent_http_requests_total",
    "agent_http_request_duration_seconds",
    "agent_grpc_server_handled_total",
    "agent_grpc_server_handling_seconds",
    "agent_queue_waiting",
    "agent_queue_running",
    "agent_queue_slots",
    "agent_queue_wait_seconds",
    "agent_queue_rejected_total",
    "agent_turn_duration_seconds",
    "agent_time_to_first_token_seconds",
    "agent_tokens_total",
    "agent_active_streams",
    "agent_provider_errors_total",
    "agent_backend_up",
    "agent_limit_rejections_total",
]
# What the dashboard must plot (the list plus the brief's).
DASHBOARD_METRICS = [
    "agent_queue_waiting",
    "agent_queue_running",
    "agent_queue_wait_seconds_bucket",
    "agent_time_to_first_token_seconds_bucket",
    "agent_tokens_total",
    "agent_http_requests_total",
    "agent_provider_errors_total",
    "agent_grpc_server_handled_total",
    "agent_backend_up",
    "agent_limit_rejections_total",
    "agent_http_request_duration_seconds_bucket",
]
DEFAULTED = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def with_defaults(text: str) -> str:
    """Compose interpolation with every variable unset: ${X:-d} -> d, ${X} -> ''."""
    return DEFAULTED.sub(lambda m: m.group(2) or "", text)


def compose_problems(doc: dict[str, Any]) -> list[str]:
    services: dict[str, dict[str, Any]] = doc.get("services", {})
    problems = []
    if "name" in doc:
        problems.append("top-level name: docker-compose v1 refuses the file")
    for name in ("service", "gateway"):
        mounts = [str(v).split(":") for v in services.get(name, {}).get("volumes", [])]
        if not any(m[0] in set(doc.get("volumes") or {}) and m[1] == "/app/config" for m in mounts):
            problems.append(f"{name}: no volume on /app/config (config file, users file)")
    ollama = services.get("ollama", {})
    if not str(ollama.get("image", "")).startswith("ollama/ollama"):
        problems.append("no ollama service on the official ollama/ollama image")
    named = set(doc.get("volumes") or {})
    mounts = [str(v).split(":") for v in ollama.get("volumes", [])]
    if not any(m[0] in named and m[1:] == ["/root/.ollama"] for m in mounts):
        problems.append("ollama keeps no models in a named volume on /root/.ollama")
    one_shot = {n for n, s in services.items() if str(s.get("restart")) == "no"}
    for name, service in services.items():
        if "healthcheck" not in service and name not in one_shot:
            problems.append(f"{name}: no healthcheck")
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on without conditions")
            depends = {}
        for target, spec in depends.items():
            condition = spec.get("condition")
            wanted = "service_completed_successfully" if target in one_shot else "service_healthy"
            if condition != wanted:
                problems.append(f"{name}: depends on {target} with {condition}, not {wanted}")
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: publishes {port} beyond loopback")
        rest = {k: v for k, v in service.items() if k != "extra_hosts"}
        hosts = [str(h) for h in service.get("extra_hosts", [])]
        if "host.docker.internal" in json.dumps(rest) and not any(
            h.startswith("host.docker.internal:") for h in hosts
        ):
            problems.append(f"{name}: host.docker.internal without extra_hosts")
    return problems


def load_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(with_defaults(COMPOSE.read_text()))
    return loaded


def test_compose_file_has_the_properties() -> None:
    assert compose_problems(load_compose()) == []


def test_compose_check_finds_the_old_file_s_faults() -> None:
    old = {
        "name": "agent-service",
        "services": {
            "service": {"environment": {"AGENT_OLLAMA__URL": "http://host.docker.internal:11434"}},
            "gateway": {"ports": ["8000:8000"], "depends_on": ["service"]},
        },
        "volumes": {"agent-data": None},
    }
    problems = compose_problems(old)
    for expected in (
        "no ollama service",
        "ollama keeps no models",
        "service: no healthcheck",
        "gateway: depends_on without conditions",
        "gateway: publishes 8000:8000",
        "service: host.docker.internal without extra_hosts",
        "top-level name",
        "service: no volume on /app/config",
        "gateway: no volume on /app/config",
    ):
        assert any(p.startswith(expected) for p in problems), (expected, problems)


def test_compose_healthchecks_call_the_script_where_the_image_puts_it() -> None:
    installed = re.search(r"^COPY deploy/healthcheck.py (\S+)$", DOCKERFILE.read_text(), re.M)
    assert installed is not None
    for name in ("service", "gateway"):
        assert installed.group(1) in load_compose()["services"][name]["healthcheck"]["test"]


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return ["docker", "compose"]
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if not bases:
        problems.append("no FROM")
    for base in bases:
        tag = base.partition("@")[0].partition(":")[2]
        if "@sha256:" not in base and not re.match(r"\d+\.\d+\.\d+", tag):
            problems.append(f"base {base} is not pinned to an exact version")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("runs as root")
    if not re.search(r"^HEALTHCHECK\s+.*CMD", text, re.M | re.S):
        problems.append("no HEALTHCHECK")
    return problems


def test_dockerfile_is_pinned_non_root_and_checks_health() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("FROM python:3.11-slim\nUSER app\nHEALTHCHECK CMD true\n", "not pinned"),
        ("FROM python:latest\nUSER app\nHEALTHCHECK CMD true\n", "not pinned"),
        ("FROM python:3.11.14-slim\nHEALTHCHECK CMD true\n", "runs as root"),
        ("FROM python:3.11.14-slim\nUSER app\n", "no HEALTHCHECK"),
    ],
)
def test_dockerfile_check_finds_faults(text: str, problem: str) -> None:
    assert any(problem in p for p in dockerfile_problems(text))


def unit_entries(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> every value it is given (systemd allows repeated keys)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith(("#", ";")) and "=" in line:
            key, _, value = line.partition("=")
            entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_reads_an_environment_file_and_waits_for_the_network(unit: Path) -> None:
    entries = unit_entries(unit)
    assert entries.get("Service.EnvironmentFile")
    for key in ("Unit.After", "Unit.Wants"):
        assert "network-online.target" in " ".join(entries.get(key, [])).split(), key
    assert entries["Service.ExecStart"][0].startswith("/")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed")
    return found


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_exposure_is_at_most_3(unit: Path) -> None:
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        cwd=unit.parent,
    )
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert level is not None, done.stdout + done.stderr
    assert float(level.group(1)) <= 3.0, done.stdout


def test_units_verify_cleanly(tmp_path: Path) -> None:
    """`systemd-analyze verify` in a root holding the host's units and stand-in programs."""
    analyze = systemd_analyze()
    system_units = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
        None,
    )
    if system_units is None:
        pytest.skip("no systemd unit directory to verify against")
    shutil.copytree(system_units, tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, tmp_path / "etc/systemd/system" / unit.name)
        program = tmp_path / unit_entries(unit)["Service.ExecStart"][0].split()[0].lstrip("/")
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    done = subprocess.run(
        [analyze, "verify", f"--root={tmp_path}", *(u.name for u in UNITS)],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify exits 0 on unknown keys and bad values; they show up as warnings.
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs += [t["expr"] for t in inner.get("targets", [])]
    return exprs


def test_dashboard_plots_every_required_metric_through_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    exprs = dashboard_exprs(dashboard)
    for metric in DASHBOARD_METRICS:
        assert any(re.search(rf"\b{metric}\b", e) for e in exprs), metric
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    grafana = {"$__rate_interval": "5m", "$provider": ".*"}
    rules = []
    for i, expr in enumerate(exprs):
        for macro, value in grafana.items():
            expr = expr.replace(macro, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", "alerts.yaml"],
        ["check", "config", "prometheus.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ],
    ids=" ".join,
)
def test_prometheus_files_pass_promtool(args: list[str]) -> None:
    done = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, cwd=ALERTS.parent, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_operations_doc_names_every_metric_and_alert() -> None:
    doc = OPERATIONS.read_text()
    for metric in METRICS:
        assert f"`{metric}`" in doc, metric
    for field in ("timestamp", "level", "logger", "message", "request_id", "user", "duration_ms"):
        assert f"`{field}`" in doc, field
    for endpoint in ("/health", "/health/live", "/health/ready", "/metrics"):
        assert f"`GET {endpoint}`" in doc or f"`{endpoint}`" in doc, endpoint
    assert "api_server.shutdown_grace_s" in doc and "127.0.0.1:9464" in doc


def test_operations_doc_shows_the_alert_rules_as_shipped() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", OPERATIONS.read_text(), re.S)
    shown = [yaml.safe_load(b) for b in blocks]
    assert yaml.safe_load(ALERTS.read_text()) in shown


def test_nothing_listens_beyond_loopback_by_default() -> None:
    """The example config and the defaults keep an open-mode gateway off the network."""
    example = yaml.safe_load((ROOT / "config" / "config.example.yaml").read_text())
    assert example["api_server"]["host"] == "127.0.0.1"
    from gateway.config import GatewaySettings

    assert GatewaySettings().api_server.host == "127.0.0.1"
    # The container listens on all its interfaces; what is published stays the runtime's.
    assert re.search(r"^ENV AGENT_API_SERVER__HOST=0\.0\.0\.0$", DOCKERFILE.read_text(), re.M)


def test_the_image_installs_pinned_runtime_dependencies() -> None:
    """deploy/constraints.txt pins the whole runtime closure, within pyproject's ranges."""
    import importlib.util

    from packaging.utils import canonicalize_name

    assert "pip install -c constraints.txt ." in DOCKERFILE.read_text()
    assert "COPY deploy/constraints.txt ./constraints.txt" in DOCKERFILE.read_text()
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
    assert spec and spec.loader
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    roots = lock._project_requirements()
    assert set(lock.closure(roots)) <= set(pins)  # nothing the service imports is unpinned
    for req in roots:
        name = canonicalize_name(req.name)
        if req.marker is None or req.marker.evaluate():
            assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name])


def _overlay(base: Any, extra: Any) -> Any:
    """Compose's merge of a second file over the first, for the keys these files use."""
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = _overlay(base[key], value) if key in base else value
        return merged
    return extra


def test_the_replicas_overlay_runs_two_replicas_on_postgres_behind_the_gateway() -> None:
    overlay = yaml.safe_load(with_defaults((DEPLOY / "compose.replicas.yaml").read_text()))
    doc = _overlay(load_compose(), overlay)
    assert compose_problems(doc) == []
    service, gateway = doc["services"]["service"], doc["services"]["gateway"]
    assert service["deploy"]["replicas"] == 2
    assert service["environment"]["AGENT_SCHEDULER__BACKEND"] == "postgres"
    assert service["environment"]["AGENT_STORE__URL"].startswith("postgresql://")
    assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert gateway["environment"]["AGENT_GRPC__ADDRESS"] == "dns:///service:50051"
    assert "healthcheck" in doc["services"]["postgres"]
