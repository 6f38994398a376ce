"""A newcomer's first hour: declared dependencies, tools after setup, the proto bundle, the demo."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from grpc_tools import protoc

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
_LOCAL = {"agentconf", "service", "gateway", "agent", "tests", "scripts"}


def _imported_top_level(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - _LOCAL


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    # The otel extra is imported only when tracing is on; it is declared all the same.
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["otel"]]:
        name = requirement.split(";")[0]
        for sep in "<>=![ ":
            name = name.split(sep)[0]
        names.add(name.strip().lower().replace("_", "-"))
    return names


@pytest.mark.parametrize("package", ["agentconf", "service", "gateway"])
def test_every_imported_package_is_declared(package: str) -> None:
    distributions = packages_distributions()
    declared = _declared()
    for module in sorted(_imported_top_level(ROOT / package)):
        providers = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        assert providers & declared, f"{package} imports {module!r}, provided by {providers}"


def test_make_setup_prepares_buf_modules() -> None:
    # --always-make: the recipes setup runs on a fresh clone, whatever exists here.
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", "setup"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "scripts/generate.py --deps" in result.stdout


def test_proto_bundle_compiles_on_its_own(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    dry = subprocess.run(
        ["make", "--dry-run", "proto-bundle", f"PROTO_BUNDLE={bundle}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"scripts/generate.py --bundle {bundle}" in dry.stdout
    subprocess.run(
        [sys.executable, "scripts/generate.py", "--bundle", str(bundle)], cwd=ROOT, check=True
    )
    assert (bundle / "google/api/annotations.proto").is_file()
    assert (bundle / "google/api/http.proto").is_file()
    assert (bundle / "agent/v1/agent.proto").is_file()
    wkt = Path(protoc.__file__).parent / "_proto"  # well-known types ship with every protoc
    out = tmp_path / "out"
    out.mkdir()
    status = protoc.main(
        ["protoc", f"-I{bundle}", f"-I{wkt}", f"--python_out={out}", "agent/v1/agent.proto"]
    )
    assert status == 0
    assert (out / "agent/v1/agent_pb2.py").is_file()


def test_demo_has_its_own_data_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("run_script", ROOT / "scripts/run.py")
    assert spec and spec.loader
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    default = Settings().store.resolved_url()
    for key, value in run.demo_environment(12345).items():
        monkeypatch.setenv(key, value)
    demo = Settings().store.resolved_url()
    assert demo != default
    assert "demo" in demo
