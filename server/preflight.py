"""Settings checked before the server serves: a wrong one stops it at start, naming itself.

A setting that is only found wrong at the first hook call would fail every call that needs
it, and with Envoy Gateway's `failOpen: false` one failed call freezes every Gateway. So
whatever can be checked without a store's answer is checked here, and the process ends with
exit status 2 and one line: `error: --flag: what is wrong; how to fix it`.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import botocore.exceptions
import botocore.utils

from backends.aws import AwsSettings
from backends.vault import VaultSettingError, VaultSettings
from server.tls import TlsFileError, TlsSettings, check_files

MIN_MESSAGE_SIZE = 64 * 1024  # below this not even a listener without users fits
MAX_MESSAGE_SIZE = 2**31 - 1  # gRPC's own limit (a signed 32-bit length)
DEADLINE_MARGIN = 1.0  # seconds the resolver waits past --backend-timeout
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")


class SettingError(ValueError):
    """A setting that cannot work: `setting` is the flag, the message says what and how."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(problem)
        self.setting = setting

    def __str__(self) -> str:
        return f"{self.setting}: {self.args[0]}"


def check_vault(vault: VaultSettings | None) -> None:
    if vault is None:
        return
    _check_url("--vault-addr", vault.addr, "https://vault.example.com:8200")
    if vault.ca_cert:
        try:
            ssl.create_default_context(cafile=vault.ca_cert)
        except (OSError, ssl.SSLError, ValueError):
            raise SettingError(
                "--vault-ca-cert",
                f"{vault.ca_cert} cannot be read as a PEM CA bundle; give the file holding "
                "the CA certificate that signed Vault's certificate",
            ) from None
    try:
        vault.check()
    except VaultSettingError as error:
        raise SettingError(error.setting, error.problem) from None


def check_aws(aws: AwsSettings) -> None:
    """The region, endpoint and role the AWS store would use, wherever they come from."""
    for setting, region in (
        ("--aws-region", aws.region),
        ("AWS_REGION", None if aws.region else os.environ.get("AWS_REGION")),
        ("AWS_DEFAULT_REGION", None if aws.region else os.environ.get("AWS_DEFAULT_REGION")),
    ):
        if region is None:
            continue
        try:
            botocore.utils.validate_region_name(region)
        except botocore.exceptions.InvalidRegionError:
            raise SettingError(
                setting, f"{region!r} is not an AWS region name; use one such as eu-west-1"
            ) from None
    for setting, url in (
        ("--aws-endpoint-url", aws.endpoint_url),
        ("AWS_ENDPOINT_URL", os.environ.get("AWS_ENDPOINT_URL")),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", os.environ.get("AWS_ENDPOINT_URL_SECRETS_MANAGER")),
    ):
        if url:
            _check_url(setting, url, "https://secretsmanager.eu-west-1.amazonaws.com")
    if aws.role_arn and not _ROLE_ARN.fullmatch(aws.role_arn):
        raise SettingError(
            "--aws-role-arn",
            f"{aws.role_arn!r} is not an IAM role ARN; use arn:aws:iam::<account>:role/<name>",
        )


def check_tls(tls: TlsSettings | None) -> None:
    if tls is None:
        return
    try:
        check_files(tls)
    except TlsFileError as error:
        raise SettingError(error.setting, f"{error}; give a PEM file that holds it") from None


def check_limits(message_size: int, call_timeout: float, backend_timeout: float) -> None:
    if not MIN_MESSAGE_SIZE <= message_size <= MAX_MESSAGE_SIZE:
        raise SettingError(
            "--max-message-size",
            f"{message_size} bytes is outside {MIN_MESSAGE_SIZE} to {MAX_MESSAGE_SIZE}; use "
            "the maxMessageSize of Envoy Gateway's extensionManager (4MiB by default)",
        )
    if call_timeout > 0 and backend_timeout + DEADLINE_MARGIN >= call_timeout:
        raise SettingError(
            "--backend-timeout",
            f"{backend_timeout:g}s leaves no time to answer within --call-timeout "
            f"{call_timeout:g}s (a call waits up to the backend timeout and {DEADLINE_MARGIN:g}s "
            "more for its stores); keep it below the call timeout by more than that",
        )


def check_ports(ports: Sequence[tuple[str, int | None]]) -> None:
    """Each port in use once: two listeners on one port would refuse to start, one way or
    another, with a less useful message."""
    seen: dict[int, str] = {}
    for setting, port in ports:
        if not port:
            continue
        if port in seen:
            raise SettingError(
                setting, f"{port} is already the port of {seen[port]}; choose another"
            )
        seen[port] = setting


def check_unix_socket(path: str | None) -> None:
    if path and not Path(path).parent.is_dir():
        raise SettingError(
            "--unix-socket", f"the directory of {path} does not exist; create it or fix the path"
        )


def _check_url(setting: str, url: str, example: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingError(
            setting,
            f"{url!r} is not an http:// or https:// URL with a host; use one such as {example}",
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port in (-1, 0):
        raise SettingError(setting, f"{url!r} has no valid port; use one such as {example}")
