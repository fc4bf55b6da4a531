"""What the bench sends: corpus listeners, policies, requests, and the callers that send them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc
from tests.support.builders import policy
from tests.support.validate import load_corpus_listeners

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "conformance" / "eg-listeners"
HCM_URL = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
MAX_MESSAGE = 256 * 2**20  # what the bench's channels accept (gRPC's default is 4 MiB)
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


class CorpusMissing(Exception):
    """The shared corpus of Envoy Gateway listeners is not there (or lacks a listener)."""


@dataclass(frozen=True)
class CorpusListeners:
    https: Any  # an HTTPS listener with exactly three filter chains
    https_id: str
    http3: Any  # an HTTP/3 (QUIC) listener: udp_listener_config
    http3_id: str

    @property
    def namespace(self) -> str:
        """Namespace of the Gateway these listeners belong to (from the chain names)."""
        return str(self.https.filter_chains[0].name.split("/")[0])

    @property
    def gateway(self) -> str:
        return str(self.https.filter_chains[0].name.split("/")[1])


def load_corpus(directory: Path) -> CorpusListeners:
    if not directory.is_dir():
        raise CorpusMissing(f"the listener corpus {directory} is absent")
    https: tuple[str, Any] | None = None
    http3: tuple[str, Any] | None = None
    for ident, listener in load_corpus_listeners(directory):
        if isinstance(listener, str):
            continue
        quic = listener.HasField("udp_listener_config")
        if quic and http3 is None and _hcm_count(listener):
            http3 = (ident, listener)
        elif not quic and https is None and _https_with_three_chains(listener):
            https = (ident, listener)
    if https is None or http3 is None:
        raise CorpusMissing(
            f"{directory} has no HTTPS listener with 3 filter chains, or no HTTP/3 listener"
        )
    return CorpusListeners(https[1], https[0], http3[1], http3[0])


def _https_with_three_chains(listener: Any) -> bool:
    chains = listener.filter_chains
    tls = all(chain.HasField("transport_socket") for chain in chains)
    return tls and len(chains) == 3 and _hcm_count(listener) == 3


def _hcm_count(listener: Any) -> int:
    return sum(
        1
        for chain in listener.filter_chains
        for network in chain.filters
        if network.typed_config.type_url == HCM_URL
    )


def gateway_target(gateway: str) -> list[dict[str, str]]:
    return [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway}]


def plaintext_policies(namespace: str, gateway: str, count: int = 10) -> list[bytes]:
    """`count` policies with a user each, all on the Gateway (so on every filter chain)."""
    return [
        policy(
            name=f"bench-{index}",
            username=f"bench-user-{index}",
            password=f"bench-password-{index:04d}",
            namespace=namespace,
            created=f"2024-01-01T00:00:{index:02d}Z",
            targets=gateway_target(gateway),
        )
        for index in range(count)
    ]


def store_policy(
    name: str, namespace: str, gateway: str, source: str, reference: dict[str, Any]
) -> bytes:
    """A policy whose credentials come from a store: `source` is passwordFrom or usersFrom."""
    spec: dict[str, Any] = {"targetRefs": gateway_target(gateway), source: reference}
    if source == "passwordFrom":
        spec["username"] = f"{name}-user"
    return json.dumps(
        {
            "apiVersion": "example.extensions.io/v1alpha1",
            "kind": "ListenerContextExample",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    ).encode()


def hook_request(listener: Any, policies: Sequence[bytes]) -> Any:
    """A PostHTTPListenerModifyRequest as Envoy Gateway sends it."""
    request = api.PostHTTPListenerModifyRequest(listener=listener)
    for raw in policies:
        request.post_listener_context.extension_resources.add(unstructured_bytes=raw)
    return request


class Caller:
    """One caller: a channel of its own and a stub on it."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = api_grpc.EnvoyGatewayExtensionStub(self.channel)  # type: ignore[no-untyped-call]
        grpc.channel_ready_future(self.channel).result(timeout=10)

    def call(self, request: Any, timeout: float = 30) -> Any:
        return self.stub.PostHTTPListenerModify(request, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def sequential(caller: Caller, requests: Sequence[Any], calls: int) -> list[float]:
    """`calls` calls one after another, cycling through `requests`; each one's latency."""
    latencies = []
    clock = time.perf_counter
    for index in range(calls):
        request = requests[index % len(requests)]
        started = clock()
        caller.call(request)
        latencies.append(clock() - started)
    return latencies


@dataclass(frozen=True)
class Concurrent:
    calls: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds


def concurrent(
    address: str,
    requests: Sequence[Any],
    callers: int,
    *,
    seconds: float | None = None,
    calls: int | None = None,
) -> Concurrent:
    """`callers` threads, each with its own channel, calling for `seconds` or `calls` in all.

    They start together (a barrier); the clock runs from the start to the last answer.
    """
    assert (seconds is None) != (calls is None), "give seconds or calls"
    channels = [Caller(address) for _ in range(callers)]
    barrier = threading.Barrier(callers + 1)
    lock = threading.Lock()
    latencies: list[float] = []
    remaining = [calls or 0]
    deadline = [0.0]
    failures: list[BaseException] = []

    def take() -> bool:
        if calls is None:
            return time.perf_counter() < deadline[0]
        with lock:
            remaining[0] -= 1
            return remaining[0] >= 0

    def run(caller: Caller, offset: int) -> None:
        mine: list[float] = []
        index = offset
        barrier.wait()
        try:
            while take():
                request = requests[index % len(requests)]
                index += 1
                started = time.perf_counter()
                caller.call(request)
                mine.append(time.perf_counter() - started)
        except BaseException as error:  # reported after the run
            failures.append(error)
        with lock:
            latencies.extend(mine)

    threads = [
        threading.Thread(target=run, args=(channel, offset), daemon=True)
        for offset, channel in enumerate(channels)
    ]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + (seconds or 0.0)
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for channel in channels:
        channel.close()
    if failures:
        raise failures[0]
    return Concurrent(len(latencies), elapsed, latencies)
