"""Builds the wheel with the code generated from proto/.

The esaas.v1 modules are generated with grpcio-tools (it carries its own protoc, so the
build needs nothing but pip) from the repository's proto/ (or $ESAAS_PROTO_DIR) straight
into the wheel's build directory: they are never checked in, so they cannot drift from
the contract. google.rpc comes from googleapis-common-protos at run time, as every other
Python gRPC client gets it.
"""

import os
import re
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def proto_dir() -> Path:
    d = Path(os.environ.get("ESAAS_PROTO_DIR") or HERE.parent.parent / "proto")
    if not (d / "esaas" / "v1").is_dir():
        sys.exit(f"setup.py: no esaas/v1 protos under {d}: build from the repository, or set ESAAS_PROTO_DIR")
    return d


def generate(out: Path) -> None:
    """esaas/v1/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py under out."""
    import grpc_tools
    from grpc_tools import protoc

    src = proto_dir()
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(src)) for p in (src / "esaas" / "v1").glob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"--proto_path={src}",
        f"--proto_path={wkt}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        sys.exit(f"setup.py: protoc failed on {', '.join(files)}")
    init = out / "esaas" / "v1" / "__init__.py"
    init.write_text('"""esaas.v1: the API\'s messages and stubs, generated from proto/ by grpcio-tools."""\n')


def requirements() -> list:
    """The runtime the generated code checks for, read from the generated code itself."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        v1 = Path(tmp) / "esaas" / "v1"
        grpc_py = (v1 / "cluster_pb2_grpc.py").read_text()
        pb2 = (v1 / "cluster_pb2.py").read_text()
    grpc = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", grpc_py)
    pb = re.search(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+)", pb2)
    return [
        f"grpcio>={grpc.group(1) if grpc else '1.66'}",
        f"protobuf>={'.'.join(pb.groups()) if pb else '5.27'}",
        "googleapis-common-protos>=1.63",
        "grpcio-status>=1.66",
    ]


class BuildPyWithProtos(build_py):
    """build_py, then the generated modules next to the hand-written ones."""

    def run(self):
        super().run()
        generate(Path(self.build_lib))


setup(cmdclass={"build_py": BuildPyWithProtos}, install_requires=requirements())
