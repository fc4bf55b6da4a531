"""`extension-server compile`: what an operator sees before applying a policy.

Each test runs the installed command in a real subprocess on YAML files, as a user would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler.listener import FILTER_NAME as OUR_FILTER
from server.demo.story import SEED_POLICY
from server.envoy_json import to_dict
from server.manifests import dump_yaml
from tests.builders import http_listener
from tests.support.commands import EXTENSION_SERVER

SEED_HTPASSWD = "user:{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=\n"
SEED_PASSWORD = "p@ssw0rd"
BAD_PASSWORD = "c0lon-user-s3cret"

COLON_POLICY_YAML = f"""\
apiVersion: example.extensions.io/v1alpha1
kind: ListenerContextExample
metadata:
  name: colon-user
spec:
  targetRefs:
  - kind: Gateway
    name: eg
    group: gateway.networking.k8s.io
  username: "a:b"
  password: {BAD_PASSWORD}
"""


def compile_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [EXTENSION_SERVER, "compile", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for secret in (SEED_PASSWORD, BAD_PASSWORD):
        assert secret not in result.stdout
        assert secret not in result.stderr
    return result


@pytest.fixture
def seed_policy(tmp_path: Path) -> Path:
    path = tmp_path / "listeneruser.yaml"
    path.write_text(SEED_POLICY)
    return path


def test_compile_prints_the_htpasswd_line_of_the_seed_policy(seed_policy: Path) -> None:
    result = compile_cli(seed_policy)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SEED_HTPASSWD
    assert result.stderr == ""


def test_a_user_name_with_a_colon_is_rejected_and_named(seed_policy: Path, tmp_path: Path) -> None:
    colon = tmp_path / "colon-user.yaml"
    colon.write_text(COLON_POLICY_YAML)

    result = compile_cli(seed_policy, colon)

    assert result.returncode == 1
    assert "default/colon-user" in result.stderr
    assert "spec.username" in result.stderr
    assert result.stdout == SEED_HTPASSWD  # the good policy still compiles


def our_filter_in(listener: dict[str, Any]) -> dict[str, Any]:
    (chain_filter,) = listener["defaultFilterChain"]["filters"]
    http_filters = chain_filter["typedConfig"]["httpFilters"]
    assert [f["name"] for f in http_filters] == [OUR_FILTER, "envoy.filters.http.router"]
    return dict(http_filters[0]["typedConfig"])


def test_compile_with_a_listener_prints_it_with_the_basic_auth_filter(
    seed_policy: Path, tmp_path: Path
) -> None:
    listener = tmp_path / "listener.yaml"
    listener.write_text(dump_yaml(to_dict(http_listener())))

    result = compile_cli(seed_policy, "--listener", listener)

    assert result.returncode == 0, result.stderr
    (printed,) = yaml.safe_load(result.stdout)
    assert printed["name"] == "default/eg/http"
    assert our_filter_in(printed) == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
        "users": {"inlineString": SEED_HTPASSWD},
        "forwardUsernameHeader": "X-Example-Ext",
    }
