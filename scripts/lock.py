"""Pin the runtime dependencies: write deploy/constraints.txt from the installed environment.

The Docker image installs with ``pip install -c deploy/constraints.txt .``, so a
rebuild gets the versions the test suite ran against, not whatever a range
allows that day. The closure is read from the installed packages' metadata:
``[project.dependencies]`` of agent-service (extras a requirement names are
followed; the project's own extras, dev and otel, are not), with markers
judged for this interpreter and platform, the image's (CPython 3.11, Linux).

    python scripts/lock.py          # rewrite deploy/constraints.txt
    python scripts/lock.py --check  # exit 1 when it differs from the installed versions
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "constraints.txt"
HEADER = (
    "# Runtime dependencies of agent-service, pinned (scripts/lock.py writes this file;\n"
    "# the Dockerfile installs with -c deploy/constraints.txt). Regenerate after changing\n"
    "# [project.dependencies] or upgrading the environment: python scripts/lock.py\n"
)


def _project_requirements() -> list[Requirement]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Every distribution the roots need here, by canonical name, with its installed version."""
    pinned: dict[str, str] = {}
    todo = list(roots)
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        pinned[name] = dist.version
        for text in dist.requires or []:
            child = Requirement(text)
            environments = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                todo.append(child)
    return pinned


def render() -> str:
    pins = closure(_project_requirements())
    return HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.exists() and OUT.read_text() == text:
            print("deploy/constraints.txt matches the installed versions")
            return 0
        print("deploy/constraints.txt is stale: run python scripts/lock.py", file=sys.stderr)
        return 1
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({text.count('==')} pins)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
