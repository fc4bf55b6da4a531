"""A setting that cannot work stops `extension-server serve` at start, in one line naming it.

Found only at the first hook call, such a setting would fail every call that needs it, and
with Envoy Gateway's `failOpen: false` one failed call freezes every Gateway. Through the
real command, as an operator (or a pod's log) sees it: exit status 2 and exactly one line
on stderr, `error: --flag: what is wrong; how to fix it`, never a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import Authority
from tests.support.commands import EXTENSION_SERVER


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXTENSION_SERVER_", "VAULT_", "AWS_", "GRPC_"))
    }
    return subprocess.run(
        [EXTENSION_SERVER, "serve", "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "EXTENSION_SERVER_METRICS_PORT": "0", **(env or {})},
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], setting: str, *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith(f"error: {setting}: "), line
    for word in words:
        assert word in line, line
    assert result.stdout == ""


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        yield taken.getsockname()[1]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    authority, other = Authority(), Authority("other-ca")
    cert, key = authority.issue("localhost", server=True).write(directory, "server")
    _, other_key = other.issue("localhost", server=True).write(directory, "other")
    (directory / "ca.crt").write_bytes(authority.pem)
    (directory / "empty").write_bytes(b"")
    (directory / "garbage").write_text("not a certificate\n")
    half = authority.pem[: len(authority.pem) // 2]
    (directory / "half.crt").write_bytes(half)
    return {
        "cert": cert,
        "key": key,
        "other_key": other_key,
        "ca": directory / "ca.crt",
        "empty": directory / "empty",
        "garbage": directory / "garbage",
        "half": directory / "half.crt",
        "missing": directory / "missing.pem",
    }


@pytest.mark.parametrize(
    ("args", "setting", "words"),
    [
        (["--vault-addr", "vault:8200"], "--vault-addr", ["http:// or https://"]),
        (["--vault-addr", "ftp://vault.example"], "--vault-addr", ["http:// or https://"]),
        (["--vault-addr", "https://vault.example:99999"], "--vault-addr", ["port"]),
        (["--vault-addr", "https://v", "--vault-ca-cert", "/nonexistent.pem"], "--vault-ca-cert", []),
        (["--vault-addr", "https://v", "--vault-auth", "kubernetes"], "--vault-role", ["required"]),
        (["--aws-region", "us east 1"], "--aws-region", ["region"]),
        (["--aws-endpoint-url", "secretsmanager.example"], "--aws-endpoint-url", ["https://"]),
        (["--aws-role-arn", "reader"], "--aws-role-arn", ["arn:aws:iam::"]),
        (["--backend-timeout", "10s"], "--backend-timeout", ["--call-timeout"]),
        (["--max-message-size", "4K"], "--max-message-size", ["maxMessageSize"]),
        (["--port", "five"], "--port", ["five"]),
        (["--shutdown-grace", "soon"], "--shutdown-grace", ["duration"]),
        (["--unix-socket", "/nonexistent/dir/hook.sock"], "--unix-socket", ["directory"]),
        (["--health-port", "9999", "--metrics-port", "9999"], "--health-port", ["9999"]),
        (["--vault-path-template", "secret/data/"], "--vault-path-template", ["{namespace}"]),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)  # fmt: skip
def test_a_setting_that_cannot_work_is_named_in_one_line(
    args: list[str], setting: str, words: list[str]
) -> None:
    assert_refused(serve(*args), setting, *words)


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_a_region_from_the_environment_is_checked_too(variable: str) -> None:
    assert_refused(serve(env={variable: "eu west"}), variable, "region")


def test_a_config_file_key_that_is_no_setting_is_named(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("secret-cache-tll: 2m\n")
    assert_refused(serve("--config", str(config)), "--config", "secret-cache-tll")


def test_a_port_in_use_is_named(taken_port: int) -> None:
    result = serve("--port", str(taken_port))
    assert_refused(result, "--port", f"127.0.0.1:{taken_port}", "in use")


def test_a_metrics_port_in_use_is_named(taken_port: int) -> None:
    result = serve(env={"EXTENSION_SERVER_METRICS_PORT": str(taken_port)})
    assert_refused(result, "--metrics-port", str(taken_port))


def test_a_health_port_in_use_is_named(taken_port: int) -> None:
    assert_refused(serve("--health-port", str(taken_port)), "--health-port", str(taken_port))


@pytest.mark.parametrize(
    ("cert", "key", "ca", "setting", "words"),
    [
        ("missing", "key", None, "--tls-cert-file", ["cannot be read"]),
        ("empty", "key", None, "--tls-cert-file", ["no PEM certificate"]),
        ("garbage", "key", None, "--tls-cert-file", ["no PEM certificate"]),
        ("half", "key", None, "--tls-cert-file", ["no PEM certificate"]),
        ("cert", "missing", None, "--tls-key-file", ["cannot be read"]),
        ("cert", "garbage", None, "--tls-key-file", ["no PEM private key"]),
        ("cert", "other_key", None, "--tls-key-file", ["not the private key"]),
        ("cert", "key", "empty", "--tls-client-ca-file", ["no PEM certificate"]),
        ("cert", "key", "half", "--tls-client-ca-file", ["no PEM certificate"]),
    ],
)
def test_an_unusable_tls_file_is_named_as_such(
    tls_files: dict[str, Path],
    cert: str,
    key: str,
    ca: str | None,
    setting: str,
    words: list[str],
) -> None:
    args = ["--tls-cert-file", str(tls_files[cert]), "--tls-key-file", str(tls_files[key])]
    if ca is not None:
        args += ["--tls-client-ca-file", str(tls_files[ca])]
    assert_refused(serve(*args), setting, *words)


def test_tls_without_a_key_names_the_missing_flag(tls_files: dict[str, Path]) -> None:
    result = serve("--tls-cert-file", str(tls_files["cert"]))
    assert_refused(result, "--tls-key-file", "required")
