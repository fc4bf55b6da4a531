"""The `extension-server` command: serve, compile, demo.

Every option of every command can also be set by an environment variable
EXTENSION_SERVER_<NAME> (upper case, dashes as underscores): `--log-level` is
EXTENSION_SERVER_LOG_LEVEL, `compile --listener` is EXTENSION_SERVER_LISTENER. A flag on
the command line wins over the variable.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
import yaml
from google.protobuf import json_format

from backends import CredentialResolver
from compiler.model import CompileOptions, UnprotectedMode
from compiler.pipeline import ListenerResult, compile_listener, load_policies
from compiler.users import compile_users
from server import logs
from server.app import StartupError, serve
from server.envoy_json import listener_from_dict, to_dict
from server.manifests import dump_yaml, policies_from_text, read_listeners, read_policies
from server.preflight import SettingError
from server.settings import (
    listener_setting,
    serve_options,
    server_settings,
    unprotected_setting,
    workdir_setting,
)
from server.version import DISTRIBUTION, installed_version

EXIT_REJECTED = 1  # a policy, or an entry of one, was rejected
EXIT_UNUSABLE_INPUT = 2  # as click's usage errors: the command could not run at all
# compile reads, and reports, itself; `-` is standard input
INPUT_PATH = click.Path(path_type=Path, readable=False, allow_dash=True)
STDIN = Path("-")
STDIN_SOURCE = "<stdin>"  # how messages name standard input
SHORTEST_REDACTED = 6  # shorter values are field-like words, not hashes or passwords
_YAML_KINDS = {
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(installed_version(), "--version", prog_name=DISTRIBUTION)
def main() -> None:
    """Envoy Gateway extension server: ListenerContextExample policies -> Envoy basic_auth."""


class StartupFailure(click.ClickException):
    """`serve` cannot start: one line, `error: --flag: what is wrong; how to fix it`, exit 2."""

    exit_code = EXIT_UNUSABLE_INPUT

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=True)


class OneLineErrors(click.Command):
    """A command whose usage errors (a bad value, an unknown option) are one line, like the
    other start-up errors, naming the flag: what a log collector shows in full."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.BadParameter as error:
            flag = error.param.opts[0] if error.param is not None and error.param.opts else ""
            raise StartupFailure(f"{flag}: {error.message}" if flag else error.message) from None
        except click.UsageError as error:
            raise StartupFailure(error.message) from None


@main.command(name="serve", cls=OneLineErrors)
@serve_options
def serve_command(**options: Any) -> None:
    """Serve the EnvoyGatewayExtension gRPC service (with health, reflection and metrics).

    \b
    Exit status:
      0  stopped by SIGTERM or SIGINT, after in-flight calls finished
      2  a setting cannot work, or a port or file cannot be used: one line on stderr,
         `error: --flag: what is wrong; how to fix it`
    """
    try:
        settings = server_settings(options)
    except SettingError as error:
        raise StartupFailure(str(error)) from None
    logs.configure(options["log_level"].lower(), options["log_format"])
    try:
        code = serve(settings)
    except StartupError as error:
        raise StartupFailure(str(error)) from None
    sys.exit(code)


@main.command(name="compile")
@click.argument("policies", nargs=-1, type=INPUT_PATH)
@listener_setting()
@unprotected_setting()
def compile_command(
    policies: tuple[Path, ...], listener: Path | None, unprotected_listeners: str
) -> None:
    """Print the htpasswd the POLICIES compile to (user names and hashes, never passwords).

    POLICIES are YAML files of ListenerContextExample objects; `-` reads them from
    standard input (`extension-server compile - < policy.yaml`), also next to files.

    With --listener, print that listener as the hook would return it instead, and warn
    (on stderr) about each policy that applies to none of its HTTP connection managers.

    \b
    Exit status:
      0  compiled; warnings do not change it
      1  a policy, or an entry of one, was rejected: `error: ...` lines on stderr
      2  an input file cannot be used (missing, unreadable, not UTF-8, not YAML, not a
         listener): `error: FILE: what is wrong` on stderr, nothing on stdout;
         also a usage error (no POLICIES, an unknown option, say)
    """
    if not policies:
        raise click.UsageError(
            "no policy file given: name one or more, or - to read them from standard input"
        )
    raw, sources = _read_policy_files(policies)
    listeners = _read_listener_file(listener) if listener is not None else None
    policy_set = load_policies(raw, CredentialResolver(), sources)
    options = CompileOptions(unprotected=UnprotectedMode(unprotected_listeners))
    errors: list[str] = []
    warnings: list[str] = []
    if listeners is None:
        table = compile_users(policy_set.resolved)
        click.echo(table.htpasswd, nl=False)
        errors = [str(error) for error in policy_set.malformed + table.errors]
    else:
        outputs = []
        for source, message in listeners:
            result = compile_listener(message, policy_set, options)
            outputs.append(to_dict(result.listener))
            errors.extend(str(error) for error in result.errors if str(error) not in errors)
            warnings.extend(_protecting_nothing(message.name or source, result))
        click.echo(dump_yaml(outputs), nl=False)
    for ignored in policy_set.ignored:
        click.echo(f"ignored: {ignored.kind} {ignored.api_version} {ignored.ref}", err=True)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    for error in errors:
        click.echo(f"error: {error}", err=True)
    sys.exit(EXIT_REJECTED if errors else 0)


class UnusableInput(click.ClickException):
    """An input file `compile` cannot use: `error: FILE: what is wrong`, exit status 2."""

    exit_code = EXIT_UNUSABLE_INPUT

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=True)


def _read_policy_files(paths: tuple[Path, ...]) -> tuple[list[bytes], list[str]]:
    """Every document of every file, read one file at a time so a failure names its file."""
    raw: list[bytes] = []
    sources: list[str] = []
    for path in paths:
        if path == STDIN:
            with _reading(STDIN_SOURCE):
                text = sys.stdin.buffer.read().decode("utf-8")
                more_raw, more_sources = policies_from_text(text, STDIN_SOURCE)
        else:
            with _reading(str(path)):
                more_raw, more_sources = read_policies([path])
        raw += more_raw
        sources += more_sources
    return raw, sources


def _read_listener_file(path: Path) -> list[tuple[str, Any]]:
    """Each listener of the file, decoded, with where it came from (`FILE`, `FILE#2`)."""
    with _reading(str(path)):
        documents = read_listeners(path)
    listeners = []
    for number, data in enumerate(documents, start=1):
        source = f"{path}#{number}" if len(documents) > 1 else str(path)
        if not isinstance(data, dict):
            raise UnusableInput(
                f"{source}: a listener is a YAML mapping (proto3 JSON form, as Envoy's "
                f"config_dump shows it), not {_YAML_KINDS.get(type(data), 'a scalar')}"
            )
        with _reading(source, data):
            listeners.append((source, listener_from_dict(data)))
    return listeners


@contextlib.contextmanager
def _reading(source: str, document: Any = None) -> Iterator[None]:
    """Turn what reading `source` can raise into an UnusableInput that names it.

    The messages quote no text of the file: a policy holds passwords, a listener hashes.
    """
    try:
        yield
    except OSError as error:
        why = error.strerror or type(error).__name__
        raise UnusableInput(f"{source}: cannot read it ({why}); check the path") from None
    except UnicodeDecodeError as error:
        raise UnusableInput(
            f"{source}: not UTF-8 text (an invalid byte at offset {error.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as error:
        raise UnusableInput(f"{source}: not YAML: {_yaml_problem(error)}") from None
    except TypeError as error:  # a YAML value JSON cannot carry (!!binary, !!set)
        raise UnusableInput(f"{source}: not a Kubernetes object: {error}") from None
    except json_format.ParseError as error:
        raise UnusableInput(
            f"{source}: not an Envoy Listener: {_parse_problem(error, document)}; fix that "
            "field (proto3 JSON names, as Envoy's config_dump shows them)"
        ) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without what PyYAML quotes of the text: its snippet, or the
    offending character, may be part of a password."""
    if isinstance(error, yaml.reader.ReaderError):
        return (
            f"a character YAML does not allow (a control character such as NUL) at offset "
            f"{error.position}; remove it"
        )
    if isinstance(error, yaml.MarkedYAMLError):
        problem = error.problem or error.context or "syntax error"
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{problem}{where}; fix the syntax there"
    return type(error).__name__


def _parse_problem(error: json_format.ParseError, document: Any) -> str:
    """The decoder's first line, with the file's own values blanked out.

    It quotes a bad value as it found it, and in a listener that can be a `{SHA}` hash.
    """
    message = str(error).splitlines()[0].rstrip(".")
    for value in sorted(_values(document), key=len, reverse=True):
        message = message.replace(value, "<value>")
    return message


def _values(node: Any) -> set[str]:
    """The string values of a YAML document (type URLs aside), for `_parse_problem`."""
    if isinstance(node, dict):
        return set().union(*(_values(v) for k, v in node.items() if k != "@type"))
    if isinstance(node, list):
        return set().union(*(_values(item) for item in node))
    text = str(node) if node is not None else ""
    return {text} if len(text) >= SHORTEST_REDACTED else set()


def _protecting_nothing(listener: str, result: ListenerResult) -> list[str]:
    """One warning per valid policy that governs none of the listener's HTTP managers."""
    return [
        f"policy {ref} applies to no HTTP connection manager of listener {listener}: its "
        "targetRefs match none of the listener's filter chains (named "
        "<namespace>/<gateway>/<section>); check its targetRefs (name, sectionName) and "
        "its namespace"
        for ref in result.applies_to_nothing
    ] + [
        f"policy {ref} is not applied on listener {listener}: its plain-HTTP filter chain is "
        "named after another namespace's Gateway (Gateways merged on one port), and a "
        "listener-level filter cannot tell that Gateway's routes from its own; its users are "
        "not admitted there (docs/policies.md: merged Gateways)"
        for ref in result.other_namespace
    ]


@main.command(name="demo")
@workdir_setting()
def demo_command(workdir: Path | None) -> None:
    """Show a policy at work in a real Envoy, on this machine.

    It starts this server, Envoy and an echo backend, plays Envoy Gateway's part, and
    checks what a user sees: 401 without credentials, 200 with user:p@ssw0rd once a
    policy admits that user (the backend receives X-Example-Ext: user), 401 with a wrong
    password. Every process it starts is stopped on the way out, also on SIGINT, SIGTERM
    and SIGHUP.

    \b
    Exit status:
      0    every step behaved as expected
      1    a step did not, or a piece failed to start
      2    --workdir already holds a name the demo creates (a file, a directory or a link)
      130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM, 129 by SIGHUP
    """
    from server.demo.story import run_demo  # noqa: PLC0415 (only the demo needs Envoy)

    sys.exit(run_demo(workdir))
