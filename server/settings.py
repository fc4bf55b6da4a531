"""Server settings from flags, EXTENSION_SERVER_<NAME> variables or a config file.

Precedence, highest first: a flag on the command line, its environment variable
(EXTENSION_SERVER_<NAME>, upper case, dashes as underscores; for a few settings also the
store's own variable such as VAULT_ADDR), the `--config` YAML file (keys are the flag
names), the default. Settings never come from a policy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import yaml

from backends import ResolverSettings
from backends.aws import AwsSettings
from backends.registry import DEFAULT_LIMIT
from backends.resolver import DEFAULT_MAX_USERS_PER_POLICY
from backends.tenancy import DEFAULT_AWS_TEMPLATE, DEFAULT_VAULT_TEMPLATE, check_template
from backends.vault import AUTH_METHODS, SERVICE_ACCOUNT_TOKEN, VaultAuth, VaultSettings
from compiler.model import CompileOptions, UnprotectedMode
from server import audit, events, logs, preflight
from server.app import WATCHER_MODES, RotationSettings, ServerSettings
from server.preflight import SettingError
from server.service import CallLimits
from server.tls import TlsSettings

ENV_PREFIX = "EXTENSION_SERVER_"
F = TypeVar("F", bound=Callable[..., Any])
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(kib|mib|gib|ki|mi|gi|k|m|g|b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip


class Duration(click.ParamType[float]):
    """`30s`, `5m`, `1h`, `250ms` or plain seconds, as a float of seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.fullmatch(str(value))
        if not match:
            self.fail(f"{value!r} is not a duration such as 30s, 5m or 10", param, ctx)
        return float(match.group(1)) * _UNITS[match.group(2)]


class ByteSize(click.ParamType[int]):
    """`4MiB`, `512KiB`, `4M` (Kubernetes' decimal units, as Envoy Gateway's maxMessageSize)
    or plain bytes, as an int of bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.fullmatch(str(value))
        if not match:
            self.fail(f"{value!r} is not a size such as 4MiB, 512KiB, 4M or 4194304", param, ctx)
        return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


class OnOff(click.Choice[str]):
    """A choice that also takes YAML's booleans (`on`, `off`, `yes`, `no` in a --config file
    are true and false there): true is `on`, false `off`."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, bool):
            value = "on" if value else "off"
        return str(super().convert(value, param, ctx))


class AuditDestination(click.ParamType[str]):
    """`stdout`, `off`, or a file path; YAML's false (`off` in a --config file) is `off`,
    and true `stdout`, not a file named "False" or "True"."""

    name = "stdout|off|FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, bool):
            return audit.STDOUT if value else audit.OFF
        if not isinstance(value, str):
            self.fail(f"{value!r} is not stdout, off or a file path", param, ctx)
        return value


def setting(name: str, *also: str, **kwargs: Any) -> Callable[[F], F]:
    """A `--name` option that also reads EXTENSION_SERVER_NAME (and the variables `also`)."""
    envvar = [ENV_PREFIX + name.upper().replace("-", "_"), *also]
    return click.option(
        f"--{name}",
        envvar=envvar if also else envvar[0],
        show_envvar=True,
        show_default=True,
        **kwargs,
    )


MAX_CONFIG_BYTES = 1024 * 1024  # a settings file is a few lines


class ConfigFileError(click.BadParameter):
    """A `--config` file the server cannot use: one line, `error: --config: ...`, status 2."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: --config: {self.message}", file=file, err=True)


class _PlainLoader(yaml.SafeLoader):
    """YAML without anchors and aliases (`&name`, `*name`): a settings file needs none, and
    aliases of aliases let a few hundred bytes expand to gigabytes ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (& and *) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)


def _load_config(ctx: click.Context, _param: click.Parameter, path: str | None) -> None:
    if not path:
        return
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            limit = f"{MAX_CONFIG_BYTES // 1024} KiB"
            raise ConfigFileError(f"{path}: larger than {limit}; a settings file is a few lines")
        data = yaml.load(raw, Loader=_PlainLoader) or {}  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1})" if mark else ""
        problem = error.problem or error.context or "not YAML"
        aliases = isinstance(error, yaml.composer.ComposerError) and "alias" in problem
        fix = "write each value out in full" if aliases else "fix the YAML there"
        raise ConfigFileError(f"{path}: {problem}{where}; {fix}") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else type(error).__name__
        raise ConfigFileError(f"cannot read {path}: {why}") from None
    if not isinstance(data, Mapping):
        raise ConfigFileError(f"{path} must be a YAML mapping of setting names to values")
    known = {param.name for param in ctx.command.params}
    defaults = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known or name == "config":
            raise ConfigFileError(f"{path}: unknown setting {key!r}")
        defaults[name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def unprotected_setting() -> Callable[[F], F]:
    return setting(
        "unprotected-listeners",
        type=click.Choice([mode.value for mode in UnprotectedMode]),
        default=UnprotectedMode.DENY.value,
        help="A listener no policy is attached to: deny every request, or pass it through.",
    )


def listener_setting() -> Callable[[F], F]:
    """`compile --listener`, through `setting()` so that EXTENSION_SERVER_LISTENER sets it too.

    Not checked for existence here: `compile` reads the file itself and reports every
    unusable file in one form (`error: FILE: ...`, exit status 2).
    """
    return setting(
        "listener",
        type=click.Path(path_type=Path, readable=False),
        default=None,
        help="Print this listener (YAML, proto3 JSON form) as the hook would return it.",
    )


def workdir_setting() -> Callable[[F], F]:
    """`demo --workdir`, through `setting()` so that EXTENSION_SERVER_WORKDIR sets it too."""
    return setting(
        "workdir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the demo's files go; kept after (default: a temporary directory, removed).",
    )


SERVE_OPTIONS: list[Callable[[F], F]] = [
    setting("config", type=click.Path(exists=True, dir_okay=False), is_eager=True,
            expose_value=False, callback=_load_config,
            help="YAML file of settings (keys are these option names)."),
    setting("host", default="0.0.0.0", help="Address to listen on."),  # noqa: S104
    setting("port", type=click.IntRange(0, 65535), default=5005, help="gRPC port (0: any)."),
    setting("log-level", type=click.Choice(logs.LEVELS, case_sensitive=False), default="info",
            help="Least severe event to log."),
    setting("log-format", type=click.Choice(logs.FORMATS), default="logfmt",
            help="One line per event, key=value or JSON."),
    setting("log-repeat-interval", type=Duration(), default="5m",
            help="How long before the same rejected policy (or other finding about a hook "
                 "call) is logged again (0: at every call)."),
    unprotected_setting(),
    setting("workers", type=click.IntRange(1, 256), default=16, help="Concurrent hook calls."),
    setting("shutdown-grace", type=Duration(), default="15s",
            help="How long in-flight calls may take to finish on SIGTERM/SIGINT."),
    setting("metrics-port", type=click.IntRange(0, 65535), default=9090,
            help="Prometheus metrics port (0: no metrics endpoint)."),
    setting("health-port", type=click.IntRange(0, 65535), default=0,
            help="Plaintext port serving only the gRPC health service, for probes when "
                 "the gRPC port uses TLS (0: none)."),
    setting("tls-cert-file", help="Serve gRPC over TLS with this certificate (PEM)."),
    setting("tls-key-file", help="The private key of --tls-cert-file (PEM)."),
    setting("tls-client-ca-file",
            help="Require client certificates signed by this CA (mTLS)."),
    setting("unix-socket",
            help="Listen on this Unix domain socket instead of --host/--port."),
    setting("max-message-size", type=ByteSize(), default="4MiB",
            help="Largest request or answer; beyond it a call gets RESOURCE_EXHAUSTED."),
    setting("max-concurrent-calls", type=click.IntRange(0, 100_000), default=64,
            help="Calls served at once; more get RESOURCE_EXHAUSTED (0: no limit)."),
    setting("call-timeout", type=Duration(), default="10s",
            help="A hook call not answered by then gets DEADLINE_EXCEEDED (0: none)."),
    setting("max-users-per-policy", type=click.IntRange(1, 10_000_000),
            default=DEFAULT_MAX_USERS_PER_POLICY,
            help="Users one policy may bring from a store; a policy with more is left out "
                 "(its users denied) and reported."),
    setting("forbid-plaintext", is_flag=True, default=False,
            help="Reject policies with spec.password: passwords only from a store."),
    setting("secret-cache-ttl", type=Duration(), default="60s",
            help="How long a fetched secret is used before it is fetched again."),
    setting("secret-max-stale", type=Duration(), default="15m",
            help="How long past its TTL a secret keeps serving while its store fails."),
    setting("backend-timeout", type=Duration(), default="2s",
            help="Timeout of one request to a secret store."),
    setting("vault-addr", "VAULT_ADDR", help="Vault's address; unset: no Vault."),
    setting("vault-namespace", "VAULT_NAMESPACE", help="Vault Enterprise namespace."),
    setting("vault-ca-cert", "VAULT_CACERT", help="CA bundle to verify Vault's certificate."),
    setting("vault-auth", type=click.Choice(AUTH_METHODS), default="token",
            help="How the server logs in to Vault."),
    setting("vault-role", help="Vault role for --vault-auth=kubernetes."),
    setting("vault-token-file", help="File holding the Vault token (default: VAULT_TOKEN)."),
    setting("vault-kubernetes-jwt-file", default=SERVICE_ACCOUNT_TOKEN,
            help="Service-account JWT for --vault-auth=kubernetes."),
    setting("vault-auth-mount", help="Mount of the auth method (default: its own name)."),
    setting("vault-approle-role-id", help="AppRole role_id for --vault-auth=approle."),
    setting("vault-approle-secret-id-file", help="File holding the AppRole secret_id."),
    setting("vault-path-template", default=DEFAULT_VAULT_TEMPLATE,
            help="Vault paths a policy may read; {namespace} is its namespace."),
    setting("rotation-poll-interval", type=Duration(), default="30s",
            help="How often the rotation watcher asks stores for new versions (0: off)."),
    setting("rotation-lease-namespace",
            help="Namespace of the watcher's Lease (default: the pod's own)."),
    setting("rotation-lease-name", default="extension-server-rotation",
            help="Name of the Lease that lets one replica patch policies at a time."),
    setting("rotation-watcher", type=click.Choice(WATCHER_MODES), default="auto",
            help="Run the rotation watcher: auto runs it only inside a Kubernetes pod, so "
                 "that a local run never acts on the cluster of the current kubeconfig "
                 "context; on runs it there too."),
    setting("rotation-max-policies", type=click.IntRange(1, 1_000_000), default=DEFAULT_LIMIT,
            help="Policies the rotation watcher watches at most (so at most as many store "
                 "requests per poll); the others wait for their next translation."),
    setting("kubernetes-events", type=OnOff(events.MODES), default="auto",
            help="Kubernetes Events on each policy (rejections, users applied or removed, "
                 "rotations): auto writes them when Kubernetes can be reached (in a pod, or "
                 "KUBECONFIG set); on also where auto would not, and a start without a "
                 "Kubernetes configuration fails; off."),
    setting("kubernetes-events-interval", type=Duration(), default="5m",
            help="How often an Event that keeps happening is written again (its count); "
                 "its first occurrence is written at once."),
    setting("audit-log", type=AuditDestination(), default=audit.STDOUT,
            help="The audit trail, one JSON line per change of who is admitted where: "
                 "stdout, off, or a file (appended to, created owner-only, reopened when "
                 "rotated)."),
    setting("aws-region", help="AWS region (default: boto3's, e.g. AWS_REGION)."),
    setting("aws-endpoint-url", help="Secrets Manager endpoint (default: boto3's)."),
    setting("aws-role-arn", help="Role to assume for Secrets Manager."),
    setting("aws-secret-template", default=DEFAULT_AWS_TEMPLATE,
            help="Secret names a policy may read; {namespace} is its namespace."),
]  # fmt: skip


def serve_options(function: F) -> F:
    for option in reversed(SERVE_OPTIONS):
        function = option(function)
    return function


def server_settings(options: Mapping[str, Any]) -> ServerSettings:
    """ServerSettings from the parsed options, every one checked (server/preflight.py).

    Raises SettingError, naming the flag, for anything that cannot work.
    """
    for flag, name in (
        ("--vault-path-template", "vault_path_template"),
        ("--aws-secret-template", "aws_secret_template"),
    ):
        try:
            check_template(options[name])
        except ValueError as error:
            raise SettingError(flag, str(error)) from None
    vault = None
    if options["vault_addr"]:
        mount = options["vault_auth_mount"]
        vault = VaultSettings(
            addr=options["vault_addr"],
            namespace=options["vault_namespace"],
            ca_cert=options["vault_ca_cert"],
            auth=VaultAuth(options["vault_auth"]),
            role=options["vault_role"],
            token_file=options["vault_token_file"],
            kubernetes_jwt_file=options["vault_kubernetes_jwt_file"],
            kubernetes_mount=mount or "kubernetes",
            approle_role_id=options["vault_approle_role_id"],
            approle_secret_id_file=options["vault_approle_secret_id_file"],
            approle_mount=mount or "approle",
            timeout=options["backend_timeout"],
        )
    tls = None
    if options["tls_cert_file"] or options["tls_key_file"] or options["tls_client_ca_file"]:
        for flag in ("tls_cert_file", "tls_key_file"):
            if not options[flag]:
                raise SettingError(
                    "--" + flag.replace("_", "-"),
                    "is required for TLS (with --tls-cert-file, --tls-key-file and "
                    "--tls-client-ca-file, the first two are needed)",
                )
        tls = TlsSettings(
            options["tls_cert_file"], options["tls_key_file"], options["tls_client_ca_file"]
        )
    aws = AwsSettings(
        region=options["aws_region"],
        endpoint_url=options["aws_endpoint_url"],
        role_arn=options["aws_role_arn"],
        timeout=options["backend_timeout"],
    )
    preflight.check_vault(vault)
    preflight.check_aws(aws)
    preflight.check_tls(tls)
    preflight.check_limits(
        options["max_message_size"], options["call_timeout"], options["backend_timeout"]
    )
    unix_socket = options["unix_socket"] or None
    preflight.check_unix_socket(unix_socket)
    check_observers(options["kubernetes_events_interval"], options["audit_log"])
    preflight.check_ports(
        [
            ("--port", None if unix_socket else options["port"]),
            ("--metrics-port", options["metrics_port"]),
            ("--health-port", options["health_port"]),
        ]
    )
    return ServerSettings(
        host=options["host"],
        port=options["port"],
        workers=options["workers"],
        shutdown_grace=options["shutdown_grace"],
        options=CompileOptions(unprotected=UnprotectedMode(options["unprotected_listeners"])),
        resolver=ResolverSettings(
            cache_ttl=options["secret_cache_ttl"],
            max_stale=options["secret_max_stale"],
            timeout=options["backend_timeout"],
            forbid_plaintext=options["forbid_plaintext"],
            vault_path_template=options["vault_path_template"],
            aws_secret_template=options["aws_secret_template"],
            max_users_per_policy=options["max_users_per_policy"],
        ),
        vault=vault,
        aws=aws,
        metrics_port=options["metrics_port"] or None,
        health_port=options["health_port"] or None,
        tls=tls,
        rotation=RotationSettings(
            interval=options["rotation_poll_interval"],
            lease_namespace=options["rotation_lease_namespace"] or None,
            lease_name=options["rotation_lease_name"],
            watcher=options["rotation_watcher"],
            max_policies=options["rotation_max_policies"],
        ),
        unix_socket=unix_socket,
        log_repeat_interval=options["log_repeat_interval"],
        events=events.EventSettings(
            mode=options["kubernetes_events"], interval=options["kubernetes_events_interval"]
        ),
        audit=audit.AuditSettings(destination=options["audit_log"]),
        limits=CallLimits(
            max_message_size=options["max_message_size"],
            max_concurrent_calls=options["max_concurrent_calls"] or None,
            call_timeout=options["call_timeout"],
        ),
    )


def check_observers(interval: float, audit_log: str) -> None:
    """The Event interval and the audit destination, before anything is opened."""
    if interval < 1:
        raise SettingError(
            "--kubernetes-events-interval",
            f"{interval:g}s is too short; at least 1s (the default 5m writes a repeating "
            "Event once every five minutes)",
        )
    if audit_log in (audit.STDOUT, audit.OFF):
        return
    path = Path(audit_log)
    if not audit_log.strip():
        raise SettingError("--audit-log", "is empty; give stdout, off or a file path")
    if os.path.isdir(path):
        raise SettingError("--audit-log", f"{audit_log} is a directory; name a file in it")
    if not os.path.isdir(path.parent):
        raise SettingError(
            "--audit-log", f"{path.parent} does not exist; create it or choose another file"
        )
