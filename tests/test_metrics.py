"""The metrics endpoint: what operators can graph, and that no label can carry a secret.

Vault is the stand-in that follows Vault's documented API (tests/support/vault.py),
read through the real hvac client by the server running in-process.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from backends import ResolverSettings
from backends.vault import VaultSettings
from compiler import errors
from server.app import ExtensionServer, ServerSettings
from server.demo.gateway import GatewayStandIn
from server.demo.story import seed_policy
from tests.support.builders import http_listener
from tests.support.secrets import remember
from tests.support.vault import VaultStandIn

TOKEN = "hvs.metrics-token"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ExtensionServer, VaultStandIn]]:
    remember(TOKEN, "metrics-password")
    with VaultStandIn() as vault:
        vault.add_token(TOKEN)
        vault.put_v2("gateways/default/eg", {"password": "metrics-password"})
        settings = ServerSettings(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            vault=VaultSettings(addr=vault.url),
            resolver=ResolverSettings(cache_ttl=60),
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("VAULT_TOKEN", TOKEN)
            server = ExtensionServer(settings)
        server.start()
        yield server, vault
        server.stop()


def scrape(server: ExtensionServer) -> str:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5
    ) as answer:
        return str(answer.read().decode())


def test_metrics_count_backend_requests_cache_use_denials_and_hook_latency(
    served: tuple[ExtensionServer, VaultStandIn],
) -> None:
    server, _ = served
    vaulted = seed_policy()
    del vaulted["spec"]["password"]
    vaulted["spec"]["passwordFrom"] = {
        "vault": {"path": "secret/data/gateways/default/eg", "key": "password"}
    }
    missing = json.loads(json.dumps(vaulted))
    missing["metadata"]["name"] = "missing"
    missing["spec"]["username"] = "ghost"
    missing["spec"]["passwordFrom"]["vault"]["path"] = "secret/data/gateways/default/missing"
    gateway = GatewayStandIn(f"127.0.0.1:{server.port}")
    for _ in range(3):
        gateway.translate(http_listener(), [vaulted, missing])
    gateway.close()

    text = scrape(server)
    assert re.search(
        r'extension_server_backend_requests_total\{outcome="ok",store="vault"\} [1-9]', text
    )
    assert re.search(
        r'extension_server_backend_requests_total\{outcome="not_found",store="vault"\} [1-9]', text
    )
    assert re.search(r'extension_server_secret_cache_hits_total\{store="vault"\} [1-9]', text)
    assert re.search(r'extension_server_unresolved_denials_total\{store="vault"\} [1-9]', text)
    assert re.search(
        r'extension_server_hook_duration_seconds_count\{method="PostHTTPListenerModify"\} [1-9]',
        text,
    )


# Rejection reasons (one fixed word per PolicyError family) and gRPC status codes.
REASONS = {
    cls.reason
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.PolicyError)
}
CODES = {code.name for code in grpc.StatusCode}
# The Events' and audit trail's fixed words: observer, why dropped, write result, change.
OBSERVER_WORDS = {
    "events", "audit", "queue_full", "cache_full", "refused", "write_failed", "disk_full",
    "closing", "created", "updated", "failed", "snapshot", "granted", "revoked", "changed",
    "rotated",
}  # fmt: skip


def test_no_label_holds_a_path_a_name_or_a_value(
    served: tuple[ExtensionServer, VaultStandIn],
) -> None:
    server, _ = served
    labels = re.findall(r"^extension_server_\w+\{([^}]*)\}", scrape(server), re.MULTILINE)
    values = {value for label in labels for value in re.findall(r'="([^"]*)"', label)}
    assert values <= {
        "vault",
        "aws",
        "ok",
        "not_found",
        "forbidden",
        "unavailable",
        "timeout",
        "invalid",
        "not_configured",
        "error",
        "PostHTTPListenerModify",
        "PostTranslateModify",
    } | REASONS | CODES | OBSERVER_WORDS | {
        value for value in values if re.fullmatch(r"[0-9.e+]+|\+Inf", value)
    }
