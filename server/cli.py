"""The `extension-server` command: serve, compile, demo.

Every option of every command can also be set by an environment variable
EXTENSION_SERVER_<NAME> (upper case, dashes as underscores): `--log-level` is
EXTENSION_SERVER_LOG_LEVEL. A flag on the command line wins over the variable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from backends import CredentialResolver
from compiler.model import CompileOptions, UnprotectedMode
from compiler.pipeline import compile_listener, load_policies
from compiler.users import compile_users
from server import logs
from server.app import serve
from server.envoy_json import listener_from_dict, to_dict
from server.manifests import dump_yaml, read_listeners, read_policies
from server.settings import serve_options, server_settings, unprotected_setting


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Envoy Gateway extension server: ListenerContextExample policies -> Envoy basic_auth."""


@main.command(name="serve")
@serve_options
def serve_command(**options: Any) -> None:
    """Serve the EnvoyGatewayExtension gRPC service (with health, reflection and metrics)."""
    settings = server_settings(options)
    logs.configure(options["log_level"].lower(), options["log_format"])
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
    policy_set = load_policies(raw, CredentialResolver(), sources)
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
