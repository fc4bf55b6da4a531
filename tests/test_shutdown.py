"""SIGTERM ends `extension-server serve` within --shutdown-grace, whatever clients do.

Anyone who reaches the gRPC port can open health Watch streams. Clients here open and
cancel them without pause while SIGTERM arrives, against the real server process; with
the rotation watcher on, its Lease is given up (in the Kubernetes API stand-in) too.
The health service is also driven in-process by a client that never reads.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.demo.envoy import free_port
from server.health import HealthService
from tests.support.kube import KubeStandIn
from tests.support.secrets import remember
from tests.support.vault import VaultStandIn, seed_policy_from_vault

GRACE = 3.0  # --shutdown-grace
MARGIN = 2.0  # process exit and the interpreter's own teardown; a bound, not a measurement
TOKEN = "hvs.shutdown-token"

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class WatchChurn:
    """Threads that open health Watch streams, read their first answer and cancel them,
    again and again, each on a fresh connection now and then."""

    def __init__(self, target: str, threads: int = 4, streams: int = 20) -> None:
        self.target, self.streams = target, streams
        self.opened = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> WatchChurn:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with grpc.insecure_channel(self.target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                calls = [
                    stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
                    for _ in range(self.streams)
                ]
                for call in calls:
                    try:
                        next(call)
                        self.opened += 1
                    except (grpc.RpcError, StopIteration):
                        pass
                for call in calls:
                    call.cancel()


def stop_during_churn(server: Any, port: int) -> float:
    """SIGTERM while Watch streams open and close; the seconds until the process exited."""
    with WatchChurn(f"127.0.0.1:{port}") as churn:
        deadline = time.monotonic() + 15
        while churn.opened < 20:  # streams come and go
            assert time.monotonic() < deadline, "Watch streams did not open"
            time.sleep(0.05)
        started = time.monotonic()
        server.send(signal.SIGTERM)
        try:
            code = server.wait(timeout=GRACE + MARGIN + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {GRACE + MARGIN + 10:g}s after SIGTERM:\n{server.output}")
        seconds = time.monotonic() - started
    assert code == 0, server.output
    assert "server.stopped" in server.output
    return seconds


def test_sigterm_ends_within_the_grace_while_watch_streams_open_and_close(served: Any) -> None:
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--shutdown-grace", f"{GRACE:g}s"]
    server = served(args, port=port)
    seconds = stop_during_churn(server, port)
    print(
        f"\nSIGTERM under health Watch churn (4 clients, 20 streams each, opened and "
        f"cancelled without pause): exited 0 after {seconds:.2f}s (--shutdown-grace {GRACE:g}s)"
    )
    assert seconds < GRACE + MARGIN


@pytest.fixture
def rotation_cluster(tmp_path: Path) -> Iterator[tuple[VaultStandIn, KubeStandIn, Path]]:
    remember(TOKEN, "pw-shutdown-lease")
    token_file = tmp_path / "vault-token"
    token_file.write_text(TOKEN)
    with VaultStandIn() as vault, KubeStandIn() as kube:
        vault.add_token(TOKEN)
        vault.put_v2("gateways/default/eg", {"password": "pw-shutdown-lease"})
        kube.put_policy(seed_policy_from_vault("secret/data/gateways/default/eg"))
        yield vault, kube, token_file


def test_sigterm_under_watch_churn_gives_the_lease_up_first(
    served: Any, rotation_cluster: tuple[VaultStandIn, KubeStandIn, Path], tmp_path: Path
) -> None:
    """The watcher holds the Lease; SIGTERM under churn: the Lease is released, in time."""
    vault, kube, token_file = rotation_cluster
    port = free_port()
    args = [
        "--host", "127.0.0.1", "--port", str(port), "--shutdown-grace", f"{GRACE:g}s",
        "--vault-addr", vault.url, "--vault-token-file", str(token_file),
        "--rotation-poll-interval", "0.2s", "--rotation-lease-namespace", "default",
    ]  # fmt: skip
    env = {
        "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
        "EXTENSION_SERVER_ROTATION_WATCHER": "on",
    }
    server = served(args, port=port, env=env)
    server.wait_for_log("rotation.leader")
    seconds = stop_during_churn(server, port)
    lease = kube.get("Lease", "default", "extension-server-rotation")
    assert lease is not None and lease["spec"]["holderIdentity"] == "", server.output
    assert "rotation.released" in server.output
    lines = server.output.splitlines()
    released = next(i for i, line in enumerate(lines) if "rotation.released" in line)
    stopped = next(i for i, line in enumerate(lines) if "server.stopped" in line)
    assert released < stopped
    print(f"\nwith the watcher leading: Lease released, exited 0 after {seconds:.2f}s")
    assert seconds < GRACE + MARGIN


# --- The health service in-process: a client that never reads --------------------------


class FakeContext:
    """What the health service uses of a servicer context: the end-of-stream callbacks."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")

    def end(self) -> None:
        for callback in self.callbacks:
            callback()


def test_status_changes_never_wait_for_a_watch_client_that_does_not_read() -> None:
    """A stream write that never completes (a client that stopped reading, with flow
    control closed) holds up neither the shutdown's NOT_SERVING nor Check."""
    service = HealthService()
    stuck = threading.Event()
    never = threading.Event()
    sent: list[int] = []

    def blocked_write(response: Any) -> None:
        sent.append(response.status)
        stuck.set()
        never.wait(30)  # the write that never completes

    stuck_context = FakeContext()
    service.Watch(health_pb2.HealthCheckRequest(), stuck_context, blocked_write)
    assert stuck.wait(5)  # the sender thread is now stuck in that write
    started = time.monotonic()
    service.set("", SERVING)
    service.enter_graceful_shutdown()
    assert time.monotonic() - started < 1  # returned at once
    check = service.Check(health_pb2.HealthCheckRequest(), FakeContext())
    assert check.status == NOT_SERVING
    stuck_context.end()  # the stream ends (the server cancels it on stop)
    assert service.watches == 0
    never.set()


def test_a_watch_stream_gets_the_newest_status_and_ends_cleanly() -> None:
    service = HealthService()
    received: list[int] = []
    arrived = threading.Event()

    def write(response: Any) -> None:
        received.append(response.status)
        if response.status == NOT_SERVING:
            arrived.set()

    context = FakeContext()
    service.Watch(health_pb2.HealthCheckRequest(), context, write)
    service.enter_graceful_shutdown()
    assert arrived.wait(5)
    assert received[-1] == NOT_SERVING and set(received) <= {SERVING, NOT_SERVING}
    service.set("", SERVING)  # ignored from now on
    assert service.Check(health_pb2.HealthCheckRequest(), FakeContext()).status == NOT_SERVING
    context.end()
    assert service.watches == 0
    listed = service.List(health_pb2.HealthListRequest(), FakeContext())
    assert json.loads(json.dumps({k: v.status for k, v in listed.statuses.items()})) == {
        "": NOT_SERVING
    }


def test_watch_streams_beyond_the_cap_are_refused() -> None:
    service = HealthService(max_watches=2)
    for _ in range(2):
        service.Watch(health_pb2.HealthCheckRequest(), FakeContext(), lambda _: None)
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        service.Watch(health_pb2.HealthCheckRequest(), FakeContext(), lambda _: None)
    assert service.watches == 2


class Recording:
    """A Watch stream's writes, as statuses (None: the stream's end)."""

    def __init__(self) -> None:
        self.written: list[int | None] = []
        self.ended = threading.Event()

    def __call__(self, response: Any) -> None:
        self.written.append(None if response is None else response.status)
        if response is None:
            self.ended.set()


def test_at_the_end_of_the_drain_watch_streams_get_not_serving_then_their_end() -> None:
    """So that the gRPC server's own graceful stop does not wait for them; a Watch that
    arrives after that gets one answer and its end too."""
    service = HealthService()
    early, late = Recording(), Recording()
    service.Watch(health_pb2.HealthCheckRequest(), FakeContext(), early)
    service.enter_graceful_shutdown()
    service.end_watches()
    assert early.ended.wait(5)
    assert early.written[-2:] == [NOT_SERVING, None]
    service.Watch(health_pb2.HealthCheckRequest(), FakeContext(), late)
    assert late.ended.wait(5) and late.written == [NOT_SERVING, None]
