"""TLS and mTLS on the hook port, with real certificates made in the test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc
from server.app import ExtensionServer, ServerSettings
from server.tls import TlsSettings
from tests.support.builders import http_listener
from tests.support.certs import Authority, Pem


def health(address: str, credentials: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(address, credentials) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return int(answer.status)


@pytest.fixture
def authority() -> Authority:
    return Authority()


def serve(tmp_path: Path, server_pem: Pem, client_ca: bytes | None = None) -> ExtensionServer:
    cert, key = server_pem.write(tmp_path, "server")
    ca_file = None
    if client_ca is not None:
        ca_file = tmp_path / "client-ca.crt"
        ca_file.write_bytes(client_ca)
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        tls=TlsSettings(str(cert), str(key), str(ca_file) if ca_file else None),
    )
    server = ExtensionServer(settings)
    server.start()
    return server


def serve_mtls(
    tmp_path: Path, authority: Authority, stop_after: list[ExtensionServer]
) -> tuple[Authority, str, grpc.ChannelCredentials]:
    """A server requiring client certificates of a CA of their own: that CA, the server's
    address, and the credentials of a client it issued (Envoy Gateway's)."""
    clients = Authority("envoy-gateway-clients")
    server = serve(tmp_path, authority.issue("extension-server", server=True), clients.pem)
    stop_after.append(server)
    client = clients.issue("envoy-gateway", server=False)
    credentials = grpc.ssl_channel_credentials(authority.pem, client.key, client.cert)
    return clients, f"127.0.0.1:{server.port}", credentials


@pytest.fixture
def stop_after() -> Iterator[list[ExtensionServer]]:
    servers: list[ExtensionServer] = []
    yield servers
    for server in servers:
        server.stop()


def test_a_client_that_trusts_the_ca_gets_answers_over_tls(
    tmp_path: Path, authority: Authority, stop_after: list[ExtensionServer]
) -> None:
    server = serve(tmp_path, authority.issue("extension-server", server=True))
    stop_after.append(server)
    address = f"127.0.0.1:{server.port}"
    assert (
        health(address, grpc.ssl_channel_credentials(authority.pem))
        == health_pb2.HealthCheckResponse.SERVING
    )
    with pytest.raises(grpc.RpcError), grpc.insecure_channel(address) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)


def test_with_a_client_ca_only_clients_with_its_certificates_are_served(
    tmp_path: Path, authority: Authority, stop_after: list[ExtensionServer]
) -> None:
    clients, address, credentials = serve_mtls(tmp_path, authority, stop_after)
    assert health(address, credentials) == health_pb2.HealthCheckResponse.SERVING
    stranger = Authority("other").issue("mallory", server=False)
    expired = clients.issue("envoy-gateway", server=False, expired=True)
    for credentials in (
        grpc.ssl_channel_credentials(authority.pem),
        grpc.ssl_channel_credentials(authority.pem, stranger.key, stranger.cert),
        grpc.ssl_channel_credentials(authority.pem, expired.key, expired.cert),
    ):
        with pytest.raises(grpc.RpcError):
            health(address, credentials)


def test_a_rotated_certificate_is_served_from_the_next_connection(
    tmp_path: Path, authority: Authority, stop_after: list[ExtensionServer]
) -> None:
    server = serve(tmp_path, authority.issue("extension-server", server=True))
    stop_after.append(server)
    address = f"127.0.0.1:{server.port}"
    renewed_ca = Authority("renewed-ca")
    renewed_ca.issue("extension-server", server=True).write(tmp_path, "server")
    assert (
        health(address, grpc.ssl_channel_credentials(renewed_ca.pem))
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_certificates_renewed_under_load_lose_no_call(
    tmp_path: Path, authority: Authority, stop_after: list[ExtensionServer]
) -> None:
    """cert-manager renews the Secret while Envoy Gateway is calling: every call is answered.

    Callers open a new connection every few calls, so handshakes happen before, during and
    after each renewal; the files are rewritten in place, as the kubelet updates a volume.
    """
    _, address, credentials = serve_mtls(tmp_path, authority, stop_after)
    answered, failed = [0], []
    stop = threading.Event()

    def call_until_stopped() -> None:
        while not stop.is_set():
            with grpc.secure_channel(address, credentials) as channel:
                hooks = api_grpc.EnvoyGatewayExtensionStub(channel)
                for _ in range(5):
                    try:
                        answer = hooks.PostHTTPListenerModify(
                            api.PostHTTPListenerModifyRequest(listener=http_listener()), timeout=5
                        )
                        assert answer.listener.name == http_listener().name
                        answered[0] += 1
                    except Exception as error:  # reported below, with the others
                        failed.append(error)

    callers = [threading.Thread(target=call_until_stopped) for _ in range(4)]
    for caller in callers:
        caller.start()
    for _ in range(5):  # five renewals, 0.3 s apart
        time.sleep(0.3)
        authority.issue("extension-server", server=True).write(tmp_path, "server")
    time.sleep(0.3)
    stop.set()
    for caller in callers:
        caller.join(timeout=30)
    assert failed == []
    assert answered[0] > 20


@pytest.mark.parametrize(
    "damage",
    ["empty client CA", "half-written client CA", "key of another certificate", "empty cert"],
)
def test_unusable_files_written_in_place_keep_the_last_good_ones_until_fixed(
    tmp_path: Path, authority: Authority, stop_after: list[ExtensionServer], damage: str
) -> None:
    """A rotation that leaves a file empty, half written or mismatched must not be swapped in:
    Envoy Gateway's handshakes would fail, which freezes every Gateway like a hook error."""
    clients, address, credentials = serve_mtls(tmp_path, authority, stop_after)
    if damage == "empty client CA":
        (tmp_path / "client-ca.crt").write_bytes(b"")
    elif damage == "half-written client CA":
        (tmp_path / "client-ca.crt").write_bytes(clients.pem[: len(clients.pem) // 2])
    elif damage == "key of another certificate":
        (tmp_path / "server.key").write_bytes(authority.issue("other", server=True).key)
    else:
        (tmp_path / "server.crt").write_bytes(b"")
    for _ in range(3):  # each new connection looks at the files; none takes the damage
        assert health(address, credentials) == health_pb2.HealthCheckResponse.SERVING

    renewed = authority.issue("extension-server", server=True)
    renewed.write(tmp_path, "server")
    (tmp_path / "client-ca.crt").write_bytes(clients.pem)
    assert health(address, credentials) == health_pb2.HealthCheckResponse.SERVING
