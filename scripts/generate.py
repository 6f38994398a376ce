"""Regenerate generated/ from proto/ with grpcio-tools, deterministically (--check: only compare).

Also copies google/api/{annotations,http}.proto from the installed
googleapis-common-protos package into build/protodeps (git-ignored), the
second module buf.yaml lists, so buf needs no registry access.

--deps: only that copy (`make setup`, so buf works on a fresh clone).
--bundle DIR: proto/ plus the google/api files and the google/rpc error model
(status, error_details, code) in one folder, every .proto a consumer needs to
generate its own client and decode the errors' details, such as RetryInfo
(`make proto-bundle`). Only the well-known types (google/protobuf/*) are left
out: every protoc ships them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from google.api import annotations_pb2
from google.rpc import status_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "generated"
DEPS = ROOT / "build" / "protodeps"


def copy_google_api(root: Path = DEPS) -> None:
    source = Path(annotations_pb2.__file__).parent
    target = root / "google" / "api"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("annotations.proto", "http.proto"):
        shutil.copyfile(source / name, target / name)


# The error model of gRPC's status details: google.rpc.Status carries ErrorInfo/RetryInfo.
RPC_PROTOS = ("status.proto", "error_details.proto", "code.proto")


def copy_google_rpc(root: Path) -> None:
    source = Path(status_pb2.__file__).parent
    target = root / "google" / "rpc"
    target.mkdir(parents=True, exist_ok=True)
    for name in RPC_PROTOS:
        shutil.copyfile(source / name, target / name)


def same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def bundle(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(PROTO_ROOT, folder)
    copy_google_api(folder)
    copy_google_rpc(folder)
    print(f"wrote every .proto a client needs into {folder}/")


def main() -> int:
    args = sys.argv[1:]
    if "--bundle" in args:
        bundle(Path(args[args.index("--bundle") + 1]).resolve())
        return 0
    check = "--check" in args
    copy_google_api()
    if "--deps" in args:
        return 0
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{DEPS}",
            f"-I{wkt}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            print("protoc failed", file=sys.stderr)
            return 1
        # Every generated folder is a regular package, so mypy and setuptools agree.
        for folder in [Path(tmp), *Path(tmp).rglob("*")]:
            if folder.is_dir() and folder != Path(tmp):
                (folder / "__init__.py").touch()
        if check:
            if OUT.exists() and same_tree(Path(tmp), OUT):
                print("generated/ is up to date")
                return 0
            print("generated/ is stale: run `make generate` and commit the result", file=sys.stderr)
            return 1
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(tmp, OUT)
    print(f"generated {len(protos)} proto file(s) into {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
