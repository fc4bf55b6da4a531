"""The metrics endpoint is bounded: idle connections are closed after a timeout, beyond a
cap they are closed at once, and /metrics keeps answering (a real `serve` process)."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

from server.demo.envoy import free_port
from server.metrics_http import CONNECTION_TIMEOUT, MAX_CONNECTIONS

MARGIN = 3.0  # a bound on the waits, not a measurement


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `seconds`."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def metrics(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return int(response.status)


def test_idle_metrics_connections_are_closed_and_metrics_still_answer(served: Any) -> None:
    port, metrics_port = free_port(), free_port()
    served(
        ["--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port)],
        port=port,
        env={"EXTENSION_SERVER_METRICS_PORT": str(metrics_port)},
    )
    assert metrics(metrics_port) == 200
    idle = [
        socket.create_connection(("127.0.0.1", metrics_port)) for _ in range(MAX_CONNECTIONS + 8)
    ]
    try:
        started = time.monotonic()
        time.sleep(0.5)  # the server has accepted them all
        # Beyond the cap: closed at once, without a thread.
        beyond = [sock for sock in idle if closed_within(sock, 0.05)]
        assert len(beyond) >= 8
        # The others: closed once they stayed silent for the timeout.
        rest = [sock for sock in idle if sock not in beyond]
        for sock in rest:
            left = CONNECTION_TIMEOUT + MARGIN - (time.monotonic() - started)
            assert closed_within(sock, max(left, 0.1)), "an idle connection was kept open"
        assert metrics(metrics_port) == 200
    finally:
        for sock in idle:
            sock.close()
