"""Regenerate the Python stubs of server/api/extension.proto.

The Envoy types it imports are not compiled from .proto sources: their descriptors are
taken from the `xds-protos` package that the server runs with, so the stubs always match
the Envoy types in use. `make api` runs this; tests/test_api_stubs.py fails when the
checked-in stubs drift from what this script produces.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = "server/api/extension.proto"
OUTPUTS = ("extension_pb2.py", "extension_pb2.pyi", "extension_pb2_grpc.py")

# The xds-protos modules that define what extension.proto imports.
ENVOY_MODULES = (
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.route.v3.route_components_pb2",
    "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
)


def _collect(file: FileDescriptor, seen: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
    """Add `file` and everything it imports, dependencies first."""
    if file.name in seen:
        return
    for dependency in file.dependencies:
        _collect(dependency, seen)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    seen[file.name] = proto


def envoy_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    seen: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for module in ENVOY_MODULES:
        _collect(importlib.import_module(module).DESCRIPTOR, seen)
    return descriptor_pb2.FileDescriptorSet(file=list(seen.values()))


def generate(out_dir: Path) -> None:
    """Write the stubs for PROTO into out_dir/server/api/."""
    with tempfile.TemporaryDirectory() as tmp:
        descriptors = Path(tmp) / "envoy.pb"
        descriptors.write_bytes(envoy_descriptor_set().SerializeToString())
        (out_dir / "server" / "api").mkdir(parents=True, exist_ok=True)
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"--descriptor_set_in={descriptors}",
                f"--proto_path={ROOT}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                str(ROOT / PROTO),
            ]
        )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write server/api/ under")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
