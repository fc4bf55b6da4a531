"""docs/operations.md's grpcurl section shows what the server answers.

grpcurl itself is not installed here; its requests are the standard health and
reflection calls, made with the gRPC clients that ship with grpcio.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from server.demo.envoy import free_port

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


def grpcurl_section() -> str:
    text = OPERATIONS.read_text()
    return text.split("## Checking the server with grpcurl", 1)[1].split("\n## ", 1)[0]


def test_the_services_and_the_method_the_section_names_are_served(served: Any) -> None:
    section = grpcurl_section()
    listed = re.findall(r"^# (\S+)$", section, re.MULTILINE)
    (described,) = re.findall(r" describe (\S+)$", section, re.MULTILINE)
    port = free_port()
    served(["--host", "127.0.0.1", "--port", str(port)], port=port)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert sorted(database.get_services()) == listed
        service, _, method = described.rpartition(".")
        pool = DescriptorPool(database)
        request = pool.FindServiceByName(service).methods_by_name[method].input_type
        assert request.fields_by_name["listener"].message_type.full_name == (
            "envoy.config.listener.v3.Listener"
        )
        health = health_pb2_grpc.HealthStub(channel)
        for name in [*re.findall(r'"service": "([^"]*)"', section), ""]:
            answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
