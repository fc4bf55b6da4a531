"""The checked-in gRPC stubs: reproducible from the .proto, and wire-identical to Envoy Gateway.

Envoy Gateway only ever talks to us through field numbers and the method path, so these
tests read both straight from the descriptors the server runs with and compare them to
the tables of contract.md section 1.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from server.api import extension_pb2

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "envoygateway.extension.EnvoyGatewayExtension"

# contract.md section 1: method -> (request fields, response fields), each name -> (number, type)
METHODS = {
    "PostRouteModify": (
        {
            "route": (1, "envoy.config.route.v3.Route"),
            "post_route_context": (2, "envoygateway.extension.PostRouteExtensionContext"),
        },
        {"route": (1, "envoy.config.route.v3.Route")},
    ),
    "PostVirtualHostModify": (
        {
            "virtual_host": (1, "envoy.config.route.v3.VirtualHost"),
            "post_virtual_host_context": (
                2,
                "envoygateway.extension.PostVirtualHostExtensionContext",
            ),
        },
        {"virtual_host": (1, "envoy.config.route.v3.VirtualHost")},
    ),
    "PostHTTPListenerModify": (
        {
            "listener": (1, "envoy.config.listener.v3.Listener"),
            "post_listener_context": (2, "envoygateway.extension.PostHTTPListenerExtensionContext"),
        },
        {"listener": (1, "envoy.config.listener.v3.Listener")},
    ),
    "PostClusterModify": (
        {
            "cluster": (1, "envoy.config.cluster.v3.Cluster"),
            "post_cluster_context": (2, "envoygateway.extension.PostClusterExtensionContext"),
        },
        {"cluster": (1, "envoy.config.cluster.v3.Cluster")},
    ),
    "PostEndpointsModify": (
        {
            "load_assignment": (1, "envoy.config.endpoint.v3.ClusterLoadAssignment"),
            "post_endpoints_context": (2, "envoygateway.extension.PostEndpointsExtensionContext"),
        },
        {"load_assignment": (1, "envoy.config.endpoint.v3.ClusterLoadAssignment")},
    ),
    "PostTranslateModify": (
        {
            "post_translate_context": (1, "envoygateway.extension.PostTranslateExtensionContext"),
            "clusters": (2, "envoy.config.cluster.v3.Cluster"),
            "secrets": (3, "envoy.extensions.transport_sockets.tls.v3.Secret"),
            "listeners": (4, "envoy.config.listener.v3.Listener"),
            "routes": (5, "envoy.config.route.v3.RouteConfiguration"),
        },
        {
            "clusters": (1, "envoy.config.cluster.v3.Cluster"),
            "secrets": (2, "envoy.extensions.transport_sockets.tls.v3.Secret"),
            "listeners": (3, "envoy.config.listener.v3.Listener"),
            "routes": (4, "envoy.config.route.v3.RouteConfiguration"),
        },
    ),
}
REPEATED = {"clusters", "secrets", "listeners", "routes"}

RESOURCE = "envoygateway.extension.ExtensionResource"
# contract.md section 1, context messages: name -> (number, type or "bytes"/"string", repeated)
CONTEXTS = {
    "ExtensionResource": {"unstructured_bytes": (1, "bytes", False)},
    "PostHTTPListenerExtensionContext": {"extension_resources": (1, RESOURCE, True)},
    "PostRouteExtensionContext": {
        "extension_resources": (1, RESOURCE, True),
        "hostnames": (2, "string", True),
        "extension_policies": (3, RESOURCE, True),
    },
    "PostClusterExtensionContext": {"backend_extension_resources": (1, RESOURCE, True)},
    "PostTranslateExtensionContext": {"extension_resources": (1, RESOURCE, True)},
    "PostVirtualHostExtensionContext": {},
    "PostEndpointsExtensionContext": {},
}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_api", ROOT / "scripts" / "generate_api.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def field_type(field: object) -> str:
    message = getattr(field, "message_type", None)
    if message is not None:
        return str(message.full_name)
    return {field.TYPE_BYTES: "bytes", field.TYPE_STRING: "string"}[field.type]  # type: ignore[attr-defined]


def fields_of(message: object) -> dict[str, tuple[int, str, bool]]:
    return {
        f.name: (f.number, field_type(f), f.is_repeated)
        for f in message.fields  # type: ignore[attr-defined]
    }


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stubs")
    load_generator().generate(out)
    return out / "server" / "api"


@pytest.mark.parametrize("name", ["extension_pb2.py", "extension_pb2.pyi", "extension_pb2_grpc.py"])
def test_regenerating_the_stubs_reproduces_the_checked_in_files(
    regenerated: Path, name: str
) -> None:
    checked_in = (ROOT / "server" / "api" / name).read_bytes()
    assert (regenerated / name).read_bytes() == checked_in, (
        f"server/api/{name} is stale: run scripts/generate_api.py"
    )


def test_the_service_has_envoy_gateways_name_and_exactly_its_six_methods() -> None:
    service = extension_pb2.DESCRIPTOR.services_by_name["EnvoyGatewayExtension"]
    assert service.full_name == SERVICE
    assert {method.name for method in service.methods} == set(METHODS)
    for method in service.methods:
        assert not method.client_streaming and not method.server_streaming
        assert method.input_type.full_name == f"envoygateway.extension.{method.name}Request"
        assert method.output_type.full_name == f"envoygateway.extension.{method.name}Response"


@pytest.mark.parametrize("method", METHODS)
def test_each_request_and_response_has_the_contracts_fields(method: str) -> None:
    service = extension_pb2.DESCRIPTOR.services_by_name["EnvoyGatewayExtension"]
    descriptor = service.methods_by_name[method]
    request, response = METHODS[method]
    for message, expected in ((descriptor.input_type, request), (descriptor.output_type, response)):
        assert fields_of(message) == {
            name: (number, type_name, name in REPEATED)
            for name, (number, type_name) in expected.items()
        }, message.full_name


@pytest.mark.parametrize("message", CONTEXTS)
def test_each_context_message_has_the_contracts_fields(message: str) -> None:
    descriptor = extension_pb2.DESCRIPTOR.message_types_by_name[message]
    assert descriptor.full_name == f"envoygateway.extension.{message}"
    assert fields_of(descriptor) == CONTEXTS[message]
