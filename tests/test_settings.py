"""Server settings as an operator writes them: flags, EXTENSION_SERVER_* variables, a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from server.cli import StartupFailure, main
from server.preflight import SettingError
from server.settings import Duration, server_settings


def settings(*args: str) -> Any:
    command = main.commands["serve"]
    with command.make_context("serve", list(args)) as context:
        return server_settings(context.params)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("EXTENSION_SERVER_", "VAULT_", "AWS_")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("10", 10), ("1.5", 1.5)],
)
def test_durations_read_as_operators_write_them(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


def test_a_bad_duration_names_the_setting() -> None:
    with pytest.raises(StartupFailure, match=r"^--secret-cache-ttl: .*not a duration"):
        settings("--secret-cache-ttl", "5 minutes")


def test_defaults_are_the_documented_ones() -> None:
    defaults = settings()
    assert (defaults.host, defaults.port, defaults.metrics_port) == ("0.0.0.0", 5005, 9090)
    assert (
        defaults.resolver.cache_ttl,
        defaults.resolver.max_stale,
        defaults.resolver.timeout,
    ) == (60, 900, 2)
    assert defaults.resolver.forbid_plaintext is False
    assert defaults.resolver.vault_path_template == "secret/data/gateways/{namespace}/"
    assert defaults.resolver.aws_secret_template == "gateways/{namespace}/"
    assert defaults.vault is None


def test_a_flag_beats_its_variable_which_beats_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(
        "secret-cache-ttl: 2m\nsecret_max_stale: 1h\nbackend-timeout: 5s\nforbid-plaintext: true\n"
    )
    monkeypatch.setenv("EXTENSION_SERVER_SECRET_MAX_STALE", "30m")
    monkeypatch.setenv("EXTENSION_SERVER_CONFIG", str(config))
    chosen = settings("--backend-timeout", "3s")
    assert chosen.resolver.cache_ttl == 120  # from the file
    assert chosen.resolver.max_stale == 1800  # the variable beats the file
    assert chosen.resolver.timeout == 3  # the flag beats both
    assert chosen.resolver.forbid_plaintext is True


def test_an_unknown_key_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("secret-cache-tll: 2m\n")
    with pytest.raises(StartupFailure, match=r"^--config: .*unknown setting 'secret-cache-tll'"):
        settings("--config", str(config))


def test_vault_and_aws_settings_from_flags_and_the_stores_own_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "https://vault.example:8200")
    monkeypatch.setenv("VAULT_NAMESPACE", "platform")
    chosen = settings(
        "--vault-auth", "kubernetes", "--vault-role", "extension-server",
        "--aws-region", "eu-west-1", "--aws-role-arn", "arn:aws:iam::123456789012:role/reader",
    )  # fmt: skip
    assert chosen.vault is not None
    assert (chosen.vault.addr, chosen.vault.namespace) == ("https://vault.example:8200", "platform")
    assert (chosen.vault.auth, chosen.vault.role, chosen.vault.timeout) == (
        "kubernetes",
        "extension-server",
        2,
    )
    assert (chosen.aws.region, chosen.aws.role_arn) == (
        "eu-west-1",
        "arn:aws:iam::123456789012:role/reader",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--vault-addr", "http://v", "--vault-auth", "kubernetes"],
            "--vault-role: is required with --vault-auth=kubernetes",
        ),
        (
            ["--vault-addr", "http://v", "--vault-auth", "approle"],
            "--vault-approle-role-id: is required",
        ),
        (
            ["--vault-path-template", "secret/data/gateways/"],
            "--vault-path-template: .*{namespace}",
        ),
        (
            ["--aws-secret-template", "gateways/{namespace}/{team}/"],
            "--aws-secret-template: .*no other",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_at_start_up(args: list[str], message: str) -> None:
    pattern = "^" + message.replace("{", r"\{").replace("}", r"\}")
    with pytest.raises(SettingError, match=pattern):
        settings(*args)


def test_the_health_port_is_off_by_default_and_set_by_flag_or_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings().health_port is None  # 0, the default: no health port
    assert settings("--health-port", "5006").health_port == 5006
    monkeypatch.setenv("EXTENSION_SERVER_HEALTH_PORT", "8086")
    assert settings().health_port == 8086
    assert settings("--health-port", "0").health_port is None  # the flag wins, and turns it off
    with pytest.raises(StartupFailure, match=r"^--health-port: .*65536"):
        settings("--health-port", "65536")
