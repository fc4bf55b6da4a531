"""The gRPC server as Envoy Gateway meets it: real calls over a socket on 127.0.0.1.

Most tests share one in-process ExtensionServer; what is about the process itself
(signals, environment variables) runs `extension-server serve` as a subprocess.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import queue
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from compiler.listener import FILTER_NAME as OUR_FILTER
from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc
from server.app import ExtensionServer, ServerSettings, StartupError
from server.demo.envoy import free_port
from server.reflection import stream_limit
from server.tls import TlsSettings
from tests.support.builders import http_listener, managers, policy
from tests.support.builders import our_filter as our_basic_auth
from tests.support.certs import Authority
from tests.support.compile import htpasswd
from tests.support.hook import listener_request

SERVICE = "envoygateway.extension.EnvoyGatewayExtension"
SEED_HTPASSWD = "user:{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=\n"
SEED_POLICY = policy("listeneruser", "user", "p@ssw0rd")


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server = ExtensionServer(ServerSettings(host="127.0.0.1", port=0, shutdown_grace=1.0))
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan
    server.stop()


@pytest.fixture
def hooks(channel: grpc.Channel) -> api_grpc.EnvoyGatewayExtensionStub:
    return api_grpc.EnvoyGatewayExtensionStub(channel)


def user_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line and not line.startswith("#")]


# --- The hooks Envoy Gateway may enable -------------------------------------------------------

ROUTE = route_components_pb2.Route(
    name="httproute/default/backend/rule/0/match/0/www_example_com",
    match=route_components_pb2.RouteMatch(prefix="/example"),
    route=route_components_pb2.RouteAction(cluster="httproute/default/backend/rule/0"),
)
VIRTUAL_HOST = route_components_pb2.VirtualHost(
    name="default/eg/http/www_example_com", domains=["www.example.com"], routes=[ROUTE]
)
CLUSTER = cluster_pb2.Cluster(name="httproute/default/backend/rule/0", type=cluster_pb2.Cluster.EDS)
LOAD_ASSIGNMENT = endpoint_pb2.ClusterLoadAssignment(cluster_name=CLUSTER.name)
LOAD_ASSIGNMENT.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.port_value = 8080
ROUTE_CONFIG = route_pb2.RouteConfiguration(name="default/eg/http", virtual_hosts=[VIRTUAL_HOST])
SECRET = secret_pb2.Secret(name="default/eg-https")
POLICY_RESOURCE = api.ExtensionResource(unstructured_bytes=SEED_POLICY)

PASSTHROUGH_HOOKS: dict[str, tuple[Callable[[], Any], Callable[[Any, Any], None]]] = {
    "PostRouteModify": (
        lambda: api.PostRouteModifyRequest(
            route=ROUTE,
            post_route_context=api.PostRouteExtensionContext(
                extension_resources=[POLICY_RESOURCE], hostnames=["www.example.com"]
            ),
        ),
        lambda req, res: _same(res.route, req.route),
    ),
    "PostVirtualHostModify": (
        lambda: api.PostVirtualHostModifyRequest(virtual_host=VIRTUAL_HOST),
        lambda req, res: _same(res.virtual_host, req.virtual_host),
    ),
    "PostClusterModify": (
        lambda: api.PostClusterModifyRequest(
            cluster=CLUSTER,
            post_cluster_context=api.PostClusterExtensionContext(
                backend_extension_resources=[POLICY_RESOURCE]
            ),
        ),
        lambda req, res: _same(res.cluster, req.cluster),
    ),
    "PostEndpointsModify": (
        lambda: api.PostEndpointsModifyRequest(load_assignment=LOAD_ASSIGNMENT),
        lambda req, res: _same(res.load_assignment, req.load_assignment),
    ),
}


def _same(got: Any, sent: Any) -> None:
    assert got == sent
    assert got  # the resource came back, not "unset" (which would also mean "no change")


@pytest.mark.parametrize("method", PASSTHROUGH_HOOKS)
def test_every_other_hook_hands_its_input_back_unchanged(
    hooks: api_grpc.EnvoyGatewayExtensionStub, method: str
) -> None:
    build, check = PASSTHROUGH_HOOKS[method]
    request = build()
    check(request, getattr(hooks, method)(request, timeout=10))


def test_the_translation_hook_hands_every_resource_back_in_order_with_listeners_protected(
    hooks: api_grpc.EnvoyGatewayExtensionStub,
) -> None:
    """PostTranslateModify's answer replaces Envoy Gateway's four lists whole: clusters and
    secrets come back as sent, listeners and routes in the same order, the listeners of
    the policy's Gateway with our filter (tests/test_request_control_envoy.py runs it)."""
    request = api.PostTranslateModifyRequest(
        post_translate_context=api.PostTranslateExtensionContext(
            extension_resources=[POLICY_RESOURCE]
        ),
        clusters=[CLUSTER, cluster_pb2.Cluster(name="second")],
        secrets=[SECRET],
        listeners=[http_listener(), http_listener(name="default/eg/https")],
        routes=[ROUTE_CONFIG],
    )
    answer = hooks.PostTranslateModify(request, timeout=10)
    _same(list(answer.clusters), list(request.clusters))
    _same(list(answer.secrets), list(request.secrets))
    assert [item.name for item in answer.listeners] == ["default/eg/http", "default/eg/https"]
    for listener in answer.listeners:
        assert htpasswd(listener) == SEED_HTPASSWD
    assert [route.name for route in answer.routes] == [ROUTE_CONFIG.name]


def test_no_hook_is_unimplemented_even_with_an_empty_request(channel: grpc.Channel) -> None:
    methods = [*PASSTHROUGH_HOOKS, "PostHTTPListenerModify", "PostTranslateModify"]
    for method in methods:
        call = channel.unary_unary(f"/{SERVICE}/{method}")
        assert call(b"", timeout=10) is not None, method  # an error would raise RpcError


def test_a_request_without_a_listener_gets_no_listener_back(
    hooks: api_grpc.EnvoyGatewayExtensionStub,
) -> None:
    answer = hooks.PostHTTPListenerModify(api.PostHTTPListenerModifyRequest(), timeout=10)
    assert not answer.HasField("listener")  # unset means "no change" to Envoy Gateway


def test_a_second_server_on_a_taken_port_fails_instead_of_sharing_it() -> None:
    first = ExtensionServer(ServerSettings(host="127.0.0.1", port=0))
    try:
        with pytest.raises(StartupError, match=r"^--port: cannot listen on 127.0.0.1:"):
            ExtensionServer(ServerSettings(host="127.0.0.1", port=first.port))
    finally:
        first.stop()


# --- Health and reflection --------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_check_reports_serving(channel: grpc.Channel, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_extension_service_health_and_reflection(
    channel: grpc.Channel,
) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
    ]
    listed, described = reflection.ServerReflectionInfo(iter(ask), timeout=10)
    services = {s.name for s in listed.list_services_response.service}
    assert {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    # grpcurl and friends can describe the service from what reflection serves.
    files = described.file_descriptor_response.file_descriptor_proto
    protos = [descriptor_pb2.FileDescriptorProto.FromString(data) for data in files]
    assert any(
        p.package == "envoygateway.extension" and len(p.service[0].method) == 6 for p in protos
    )


class HeldReflection:
    """A reflection stream a client keeps open after its first answer, as long as it likes."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._more: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            self._requests(), timeout=30
        )
        self.first = next(self.call)  # raises the RpcError of a refused stream

    def _requests(self) -> Iterator[Any]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        while (request := self._more.get()) is not None:
            yield request

    def close(self) -> None:
        self._more.put(None)
        list(self.call)


def test_reflection_streams_held_open_never_take_the_hooks_threads() -> None:
    """Each reflection stream holds a worker thread while it is open. Before the cap, 16 idle
    streams (the default --workers) left every hook call waiting until its deadline: an
    error answer for Envoy Gateway, a freeze of every Gateway."""
    workers = ServerSettings().workers
    server = ExtensionServer(ServerSettings(host="127.0.0.1", port=0, shutdown_grace=1.0))
    server.start()
    target = f"127.0.0.1:{server.port}"
    channel = grpc.insecure_channel(target)
    try:
        held = [HeldReflection(channel) for _ in range(stream_limit(workers))]
        with pytest.raises(grpc.RpcError) as refused:
            HeldReflection(channel)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        hook = api_grpc.EnvoyGatewayExtensionStub(channel).PostHTTPListenerModify
        with ThreadPoolExecutor(workers) as callers:
            calls = [
                callers.submit(hook, listener_request(SEED_POLICY), timeout=5)
                for _ in range(workers)
            ]
            assert all(htpasswd(call.result().listener) == SEED_HTPASSWD for call in calls)

        held.pop().close()  # a stream that ends gives its slot back
        held.pop().call.cancel()  # and so does one its client cancels
        deadline = time.monotonic() + 10
        while not _reflection_served(channel):
            assert time.monotonic() < deadline, "a slot was not given back"
            time.sleep(0.05)
        held += [HeldReflection(channel), HeldReflection(channel)]
        assert all(stream.first.list_services_response.service for stream in held)
    finally:
        channel.close()
        server.stop()


def _reflection_served(channel: grpc.Channel) -> bool:
    try:
        HeldReflection(channel).close()
    except grpc.RpcError:
        return False
    return True


def test_reflection_needs_four_workers_and_takes_at_most_a_quarter_of_them() -> None:
    assert [stream_limit(workers) for workers in (1, 3, 4, 8, 15, 16, 64, 256)] == [
        0, 0, 1, 2, 3, 4, 4, 4,
    ]  # fmt: skip


# --- PostHTTPListenerModify: the seed's story --------------------------------------------------


def test_the_seed_policy_adds_one_basic_auth_filter_before_the_router(
    hooks: api_grpc.EnvoyGatewayExtensionStub,
) -> None:
    sent = http_listener()
    answer = hooks.PostHTTPListenerModify(listener_request(SEED_POLICY, listener=sent), timeout=10)

    (manager,) = managers(answer.listener)
    names = [f.name for f in manager.http_filters]
    assert names == [OUR_FILTER, "envoy.filters.http.router"]
    config = our_basic_auth(manager)
    assert config.users.inline_string == SEED_HTPASSWD
    assert config.forward_username_header == "X-Example-Ext"

    # Nothing else changed: take our filter out again and the manager is the one we sent.
    (original,) = managers(sent)
    del manager.http_filters[0]
    assert manager == original
    assert answer.listener.name == sent.name
    assert answer.listener.address == sent.address


def test_without_a_policy_the_listener_admits_nobody(
    hooks: api_grpc.EnvoyGatewayExtensionStub,
) -> None:
    answer = hooks.PostHTTPListenerModify(listener_request(), timeout=10)
    text = htpasswd(answer)
    assert text  # Envoy rejects an empty DataSource
    assert user_lines(text) == []


def test_a_broken_policy_and_a_configmap_do_not_stop_a_valid_policy(
    hooks: api_grpc.EnvoyGatewayExtensionStub,
) -> None:
    broken = b'{"apiVersion": "example.extensions.io/v1alpha1", "kind": "ListenerCon'
    configmap = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "envoy-gateway-config", "namespace": "envoy-gateway-system"},
            "data": {"envoy-gateway.yaml": "kind: EnvoyGateway"},
        }
    ).encode()
    answer = hooks.PostHTTPListenerModify(
        listener_request(broken, SEED_POLICY, configmap), timeout=10
    )
    assert user_lines(htpasswd(answer)) == [SEED_HTPASSWD.rstrip("\n")]


# --- The process: signals and configuration ---------------------------------------------------


def https_listener(sections: int) -> Any:
    """An HTTPS Gateway listener: one filter chain per section, `default/eg/s<k>`."""
    listener = http_listener(name="default/eg/https")
    template = listener.default_filter_chain
    listener.ClearField("default_filter_chain")
    for k in range(sections):
        chain = listener.filter_chains.add()
        chain.CopyFrom(template)
        chain.name = f"default/eg/s{k}"
    return listener


def busy_listener_call() -> api.PostHTTPListenerModifyRequest:
    """5,000 teams all claim the user `admin` on a Gateway with 100 HTTPS sections.

    One policy wins (the first by namespace/name), so the answer is small, but the
    server weighs every policy for every section: a call of over a second.
    """
    policies = [policy(f"team-{i}", "admin", f"pw-{i}") for i in range(5000)]
    return listener_request(*policies, listener=https_listener(100))


def big_listener_call(sections: int = 300, users: int = 300) -> api.PostHTTPListenerModifyRequest:
    """300 users for the whole Gateway plus one per section: 300 tables of 301 users.

    About a second and a half of compiling, and an answer of about 3.6 MB (under
    Envoy Gateway's default maxMessageSize of 4M).
    """
    policies = [policy(f"shared-{i}", f"user-{i}", f"pw-{i}") for i in range(users)]
    target = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}
    for k in range(sections):
        own = [{**target, "sectionName": f"s{k}"}]
        policies.append(policy(f"own-{k}", f"own-{k}", f"pw-own-{k}", targets=own))
    return listener_request(*policies, listener=https_listener(sections))


def sigterm_during(
    server: Any, target: str, request: Any
) -> tuple[api.PostHTTPListenerModifyResponse, list[str]]:
    """Send SIGTERM while `request` is being compiled; the answer and the server's events."""
    big = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(target, options=big) as chan:
        in_flight = api_grpc.EnvoyGatewayExtensionStub(chan).PostHTTPListenerModify.future(
            request, timeout=30
        )
        time.sleep(0.3)  # the request is on the server and being compiled
        server.send(signal.SIGTERM)
        try:
            answer = in_flight.result()
        finally:
            assert server.wait() == 0
    events = [event_of(line) for line in server.log_lines]
    # The log proves the call was still running when the signal arrived.
    assert events.index("server.signal") < events.index("hook.listener"), server.output
    return answer, events


def test_sigterm_lets_the_call_in_flight_finish_then_exits_0(served: Any) -> None:
    port = free_port()
    server = served(["--host", "127.0.0.1", "--port", str(port)], port=port)
    answer, events = sigterm_during(server, f"127.0.0.1:{port}", busy_listener_call())

    protected = managers(answer.listener)
    assert len(protected) == 100
    admin = "admin:{SHA}" + base64.b64encode(hashlib.sha1(b"pw-0").digest()).decode()
    assert all(user_lines(our_basic_auth(m).users.inline_string) == [admin] for m in protected)
    assert events.index("hook.listener") < events.index("server.stopped")


class SlowLink:
    """A TCP relay whose server-to-client direction runs at about 2 MB/s: a slow network."""

    def __init__(self, upstream: tuple[str, int], chunk: int = 16384, pause: float = 0.008):
        self.upstream, self.chunk, self.pause = upstream, chunk, pause
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            server.connect(self.upstream)
            self.sockets += [client, server]
            for source, sink, pause in ((client, server, 0.0), (server, client, self.pause)):
                pump = threading.Thread(target=self._pump, args=(source, sink, pause), daemon=True)
                pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket, pause: float) -> None:
        try:
            while data := source.recv(self.chunk):
                sink.sendall(data)
                time.sleep(pause)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def test_sigterm_lets_a_large_answer_reach_a_slow_client(served: Any) -> None:
    port = free_port()
    server = served(["--host", "127.0.0.1", "--port", str(port)], port=port)
    link = SlowLink(("127.0.0.1", port))
    try:
        answer, _ = sigterm_during(server, f"127.0.0.1:{link.port}", big_listener_call())
    finally:
        link.close()
    protected = managers(answer.listener)
    assert len(protected) == 300
    assert all(len(user_lines(our_basic_auth(m).users.inline_string)) == 301 for m in protected)


def event_of(line: str) -> str:
    return line.partition("event=")[2].split(" ")[0]


def test_sigint_exits_0(served: Any) -> None:
    port = free_port()
    server = served(["--host", "127.0.0.1", "--port", str(port)], port=port)
    assert server.stop(signal.SIGINT) == 0
    assert "signal=SIGINT" in server.output
    assert "server.stopped" in server.output


def test_environment_variables_configure_the_port_and_passthrough(served: Any) -> None:
    port = free_port()
    server = served(
        [],
        port=port,
        env={
            "EXTENSION_SERVER_HOST": "127.0.0.1",
            "EXTENSION_SERVER_PORT": str(port),
            "EXTENSION_SERVER_UNPROTECTED_LISTENERS": "passthrough",
        },
    )
    # Raw bytes in and out: a listener without a policy comes back byte for byte.
    request = api.PostHTTPListenerModifyRequest(listener=http_listener()).SerializeToString()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        answer = chan.unary_unary(f"/{SERVICE}/PostHTTPListenerModify")(request, timeout=10)
    assert answer == request
    assert server.stop() == 0
    assert "unprotected_listeners=passthrough" in server.output


def test_a_flag_wins_over_its_environment_variable(served: Any) -> None:
    env_port, flag_port = free_port(), free_port()
    served(
        ["--host", "127.0.0.1", "--port", str(flag_port), "--unprotected-listeners", "deny"],
        port=flag_port,
        env={
            "EXTENSION_SERVER_PORT": str(env_port),
            "EXTENSION_SERVER_UNPROTECTED_LISTENERS": "passthrough",
        },
    )
    with grpc.insecure_channel(f"127.0.0.1:{flag_port}") as chan:
        answer = api_grpc.EnvoyGatewayExtensionStub(chan).PostHTTPListenerModify(
            listener_request(), timeout=10
        )
    assert user_lines(htpasswd(answer)) == []  # deny, not passthrough
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", env_port)):
        pass


def test_calls_are_answered_concurrently(hooks: api_grpc.EnvoyGatewayExtensionStub) -> None:
    answers: list[str] = []

    def call() -> None:
        answer = hooks.PostHTTPListenerModify(listener_request(SEED_POLICY))
        answers.append(htpasswd(answer))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert answers == [SEED_HTPASSWD] * 8


def test_while_draining_probes_hear_not_serving_and_new_hook_calls_unavailable() -> None:
    server = ExtensionServer(ServerSettings(host="127.0.0.1", port=0, shutdown_grace=30))
    server.start()
    address = f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(address) as channel:
        slow = api_grpc.EnvoyGatewayExtensionStub(channel).PostHTTPListenerModify.future(
            busy_listener_call(), timeout=60
        )
        time.sleep(0.3)  # the slow call is in flight
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 10
        while (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        with pytest.raises(grpc.RpcError) as refused:
            api_grpc.EnvoyGatewayExtensionStub(channel).PostHTTPListenerModify(
                listener_request(), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert managers(slow.result().listener)  # the call in flight still got its answer
        stopping.join()


# --- The health port: plaintext health checks beside a TLS gRPC port ---------------------------

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(channel: grpc.Channel, service: str = "") -> Any:
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def tls_args(tmp_path: Path, authority: Authority) -> list[str]:
    cert, key = authority.issue("extension-server", server=True).write(tmp_path, "server")
    return ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]


def test_the_health_port_answers_plaintext_health_checks_and_nothing_else(
    served: Any, tmp_path: Path
) -> None:
    authority = Authority()
    port, health_port = free_port(), free_port()
    server = served(
        ["--host", "127.0.0.1", "--port", str(port), "--health-port", str(health_port),
         *tls_args(tmp_path, authority)],
        port=health_port,  # plaintext: what the kubelet's grpc probe can ask
    )  # fmt: skip
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as plain:
        assert health_of(plain) == SERVING
        assert health_of(plain, SERVICE) == SERVING
        # No hook method and no reflection on this port: UNIMPLEMENTED, not an answer.
        for method in [*PASSTHROUGH_HOOKS, "PostHTTPListenerModify"]:
            with pytest.raises(grpc.RpcError) as hook:
                plain.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=10)
            assert hook.value.code() == grpc.StatusCode.UNIMPLEMENTED, method
        ask = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        with pytest.raises(grpc.RpcError) as listed:
            list(reflection_pb2_grpc.ServerReflectionStub(plain).ServerReflectionInfo(ask))
        assert listed.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The gRPC port itself still speaks TLS only.
    credentials = grpc.ssl_channel_credentials(authority.pem)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as secure:
        assert health_of(secure) == SERVING
    with pytest.raises(grpc.RpcError), grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
        health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert server.stop() == 0
    (started,) = [line for line in server.log_lines if event_of(line) == "server.started"]
    assert f" health_port={health_port} " in started
    assert " tls=tls " in started
    # It stopped with the server.
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", health_port)),
    ):
        pass


def test_without_a_health_port_none_is_opened_and_the_log_says_off(served: Any) -> None:
    port = free_port()
    server = served(["--host", "127.0.0.1", "--port", str(port)], port=port)
    assert server.stop() == 0
    (started,) = [line for line in server.log_lines if event_of(line) == "server.started"]
    assert " health_port=off " in started


def test_after_sigterm_the_health_port_reports_not_serving_while_a_tls_call_drains(
    served: Any, tmp_path: Path
) -> None:
    authority = Authority()
    port, health_port = free_port(), free_port()
    server = served(
        ["--host", "127.0.0.1", "--port", str(port), "--health-port", str(health_port),
         *tls_args(tmp_path, authority)],
        port=health_port,
    )  # fmt: skip
    credentials = grpc.ssl_channel_credentials(authority.pem)
    big = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    heard: list[Any] = []
    with (
        grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=big) as secure,
        grpc.insecure_channel(f"127.0.0.1:{health_port}") as plain,
    ):
        assert health_of(secure) == SERVING  # the TLS connection is up before the call
        in_flight = api_grpc.EnvoyGatewayExtensionStub(secure).PostHTTPListenerModify.future(
            busy_listener_call(), timeout=30
        )
        time.sleep(0.3)  # the request is on the server and being compiled
        server.send(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not heard or heard[-1] == SERVING:
            assert time.monotonic() < deadline, heard
            heard.append(health_of(plain))  # raises if the port closed before NOT_SERVING
            time.sleep(0.02)
        # The process answered NOT_SERVING on the health port: draining, not yet exited.
        assert heard[-1] == NOT_SERVING
        answer = in_flight.result()
        assert server.wait() == 0
    assert managers(answer.listener)  # the call in flight still got its answer
    events = [event_of(line) for line in server.log_lines]
    # The call was still running when the signal arrived, and finished before the stop.
    assert events.index("server.signal") < events.index("hook.listener"), server.output
    assert events.index("hook.listener") < events.index("server.stopped")


def test_in_process_the_health_port_shares_the_health_of_the_grpc_port(
    tmp_path: Path,
) -> None:
    authority = Authority()
    cert, key = authority.issue("extension-server", server=True).write(tmp_path, "server")
    server = ExtensionServer(
        ServerSettings(
            host="127.0.0.1",
            port=0,
            health_port=0,  # any free port
            shutdown_grace=30,
            tls=TlsSettings(str(cert), str(key), None),
        )
    )
    server.start()
    assert server.health_port not in (None, 0, server.port)
    credentials = grpc.ssl_channel_credentials(authority.pem)
    with (
        grpc.secure_channel(f"127.0.0.1:{server.port}", credentials) as secure,
        grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as plain,
    ):
        assert health_of(plain) == health_of(secure) == SERVING
        slow = api_grpc.EnvoyGatewayExtensionStub(secure).PostHTTPListenerModify.future(
            busy_listener_call(), timeout=60
        )
        time.sleep(0.3)  # the slow call is in flight
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        deadline = time.monotonic() + 10
        while health_of(plain) == SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # Both ports say NOT_SERVING, for "" and for the hook service, while the call drains.
        for service in ("", SERVICE):
            assert health_of(plain, service) == NOT_SERVING
            assert health_of(secure, service) == NOT_SERVING
        assert managers(slow.result().listener)
        stopping.join()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", server.health_port)),
    ):
        pass


def test_a_taken_health_port_fails_start_up() -> None:
    taken_port = pytest.raises(StartupError, match=r"^--health-port: cannot listen")
    with socket.create_server(("127.0.0.1", 0)) as taken, taken_port:
        ExtensionServer(
            ServerSettings(host="127.0.0.1", port=0, health_port=taken.getsockname()[1])
        )


# --- Unset stays unset; findings and events ----------------------------------------------------


@pytest.mark.parametrize("method", PASSTHROUGH_HOOKS)
def test_an_empty_request_gets_an_answer_with_every_field_unset(
    hooks: api_grpc.EnvoyGatewayExtensionStub, method: str
) -> None:
    # Unset means "no change" to Envoy Gateway; a set but empty resource would replace it.
    answer = getattr(hooks, method)(getattr(api, f"{method}Request")(), timeout=10)
    assert answer.ListFields() == []
    assert answer.SerializeToString() == b""


def test_a_policy_that_applies_to_nothing_is_logged_once_not_at_every_call(served: Any) -> None:
    port = free_port()
    server = served(["--host", "127.0.0.1", "--port", str(port)], port=port)
    admin = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}]
    admin[0]["sectionName"] = "admin"  # https_listener(1) has the section s0 only
    request = listener_request(
        SEED_POLICY,
        policy("admin-only", "root", "root-pw-1", targets=admin),
        listener=https_listener(1),
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        stub = api_grpc.EnvoyGatewayExtensionStub(chan)
        for _ in range(2):  # the second answer comes from the server's memory: not logged
            assert managers(stub.PostHTTPListenerModify(request, timeout=10).listener)
    assert server.stop() == 0

    found = [line for line in server.log_lines if event_of(line) == "policy.applies_to_nothing"]
    assert len(found) == 1, server.output
    for line in found:
        assert "level=warning" in line
        assert "listener=default/eg/https" in line
        assert "policies=default/admin-only " in line
        assert "policy_count=1" in line
    assert "root-pw-1" not in server.output
    assert "{SHA}" not in server.output


LOGGED = re.compile(r"\blog\.\w+\(\s*(?:\w+,\s*)?\"([a-z_]+\.[a-z_]+)\"")
ANSWER_EVENT = re.compile(r"LogEvent\(\s*\"\w+\",\s*\"([a-z_]+\.[a-z_]+)\"")
DOCUMENTED = re.compile(r"^\| `([a-z_]+\.[a-z_]+)` \|", re.MULTILINE)


def test_every_event_the_server_logs_is_in_the_events_table_of_operations_md() -> None:
    root = Path(__file__).resolve().parents[1]
    source = "\n".join(
        path.read_text()
        for package in ("server", "backends", "compiler")
        for path in sorted((root / package).rglob("*.py"))
    )
    logged = set(LOGGED.findall(source)) | set(ANSWER_EVENT.findall(source))
    assert {"hook.listener", "policy.rejected", "hook.invalid_request"} <= logged  # still found
    documented = set(DOCUMENTED.findall((root / "docs" / "operations.md").read_text()))
    assert sorted(logged - documented) == []
