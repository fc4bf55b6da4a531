"""The `extension-server` command: serve, compile, demo.

Every option of every command can also be set by an environment variable
EXTENSION_SERVER_<NAME> (upper case, dashes as underscores): `--log-level` is
EXTENSION_SERVER_LOG_LEVEL. A flag on the command line wins over the variable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from backends import resolve
from compiler.model import CompileOptions, UnprotectedMode
from compiler.pipeline import compile_listener, load_policies
from compiler.users import compile_users
from server import logs
from server.app import ServerSettings, serve
from server.envoy_json import listener_from_dict, to_dict
from server.manifests import dump_yaml, read_listeners, read_policies

ENV_PREFIX = "EXTENSION_SERVER_"
F = TypeVar("F", bound=Callable[..., Any])


def setting(name: str, **kwargs: Any) -> Callable[[F], F]:
    """A `--name` option that also reads EXTENSION_SERVER_NAME."""
    envvar = ENV_PREFIX + name.upper().replace("-", "_")
    return click.option(f"--{name}", envvar=envvar, show_envvar=True, show_default=True, **kwargs)


def unprotected_setting() -> Callable[[F], F]:
    return setting(
        "unprotected-listeners",
        type=click.Choice([mode.value for mode in UnprotectedMode]),
        default=UnprotectedMode.DENY.value,
        help="A listener no policy is attached to: deny every request, or pass it through.",
    )


def log_settings(function: F) -> F:
    function = setting(
        "log-format",
        type=click.Choice(logs.FORMATS),
        default="logfmt",
        help="One line per event, key=value or JSON.",
    )(function)
    return setting(
        "log-level",
        type=click.Choice(logs.LEVELS, case_sensitive=False),
        default="info",
        help="Least severe event to log.",
    )(function)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Envoy Gateway extension server: ListenerContextExample policies -> Envoy basic_auth."""


@main.command(name="serve")
@setting("host", default="0.0.0.0", help="Address to listen on.")  # noqa: S104
@setting("port", type=click.IntRange(0, 65535), default=5005, help="gRPC port (0: any free).")
@log_settings
@unprotected_setting()
@setting("workers", type=click.IntRange(1, 256), default=16, help="Concurrent hook calls.")
@setting(
    "shutdown-grace",
    type=click.FloatRange(0),
    default=15.0,
    help="Seconds in-flight calls may take to finish on SIGTERM/SIGINT.",
)
def serve_command(
    host: str,
    port: int,
    log_level: str,
    log_format: str,
    unprotected_listeners: str,
    workers: int,
    shutdown_grace: float,
) -> None:
    """Serve the EnvoyGatewayExtension gRPC service (with health and reflection)."""
    logs.configure(log_level.lower(), log_format)
    settings = ServerSettings(
        host=host,
        port=port,
        workers=workers,
        shutdown_grace=shutdown_grace,
        options=CompileOptions(unprotected=UnprotectedMode(unprotected_listeners)),
    )
    sys.exit(serve(settings))


@main.command(name="compile")
@click.argument("policies", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--listener",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Print this listener (YAML, proto3 JSON form) as the hook would return it.",
)
@unprotected_setting()
def compile_command(
    policies: tuple[Path, ...], listener: Path | None, unprotected_listeners: str
) -> None:
    """Print the htpasswd the POLICIES compile to (user names and hashes, never passwords).

    Exit status 1 when a policy, or an entry of one, is rejected; the errors go to stderr.
    """
    raw, sources = read_policies(policies)
    policy_set = load_policies(raw, resolve, sources)
    options = CompileOptions(unprotected=UnprotectedMode(unprotected_listeners))
    errors: list[str] = []
    if listener is None:
        table = compile_users(policy_set.resolved)
        click.echo(table.htpasswd, nl=False)
        errors = [str(error) for error in policy_set.malformed + table.errors]
    else:
        outputs = []
        for data in read_listeners(listener):
            result = compile_listener(listener_from_dict(data), policy_set, options)
            outputs.append(to_dict(result.listener))
            errors.extend(str(error) for error in result.errors if str(error) not in errors)
        click.echo(dump_yaml(outputs), nl=False)
    for ignored in policy_set.ignored:
        click.echo(f"ignored: {ignored.kind} {ignored.api_version} {ignored.ref}", err=True)
    for error in errors:
        click.echo(f"error: {error}", err=True)
    sys.exit(1 if errors else 0)


@main.command(name="demo")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where Envoy's files go (default: a temporary directory, removed after).",
)
def demo_command(workdir: Path | None) -> None:
    """Run the seed's Testing section on this machine with a real Envoy."""
    from server.demo.story import run_demo  # noqa: PLC0415 (only the demo needs Envoy)

    sys.exit(run_demo(workdir))
