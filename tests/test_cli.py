"""`extension-server compile`: what an operator sees before applying a policy.

Each test runs the installed command in a real subprocess on YAML files, as a user would.
"""

from __future__ import annotations

import os
import signal
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from compiler.listener import FILTER_NAME as OUR_FILTER
from server.cli import main
from server.demo.envoy import free_port
from server.demo.story import SEED_POLICY
from server.envoy_json import to_dict
from server.manifests import dump_yaml
from tests.support.builders import http_listener, https_listener
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


def compile_cli(*args: str | Path, stdin: str | bytes = b"") -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [EXTENSION_SERVER, "compile", *map(str, args)],
        capture_output=True,
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        timeout=60,
        check=False,
    )
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
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


# --- Standard input, and no input at all ---------------------------------------------------------


def test_compile_reads_the_policies_from_standard_input_given_as_dash() -> None:
    result = compile_cli("-", stdin=SEED_POLICY)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SEED_HTPASSWD


def test_standard_input_mixes_with_files_and_its_errors_name_it(
    seed_policy: Path, tmp_path: Path
) -> None:
    result = compile_cli(seed_policy, "-", stdin=COLON_POLICY_YAML)
    assert result.returncode == 1
    assert "default/colon-user: spec.username" in result.stderr
    assert result.stdout == SEED_HTPASSWD  # the file's policy still compiles

    nameless = "apiVersion: example.extensions.io/v1alpha1\nkind: ListenerContextExample\n"
    result = compile_cli(seed_policy, "-", stdin=nameless)
    assert result.returncode == 1
    assert "policy <unknown>/<stdin>#1: metadata: is missing" in result.stderr

    listener = tmp_path / "listener.yaml"
    listener.write_text(dump_yaml(to_dict(http_listener())))
    result = compile_cli("-", "--listener", listener, stdin=SEED_POLICY)
    assert result.returncode == 0, result.stderr
    (printed,) = yaml.safe_load(result.stdout)
    assert our_filter_in(printed)["users"] == {"inlineString": SEED_HTPASSWD}


def test_unusable_standard_input_is_named_like_a_file() -> None:
    result = compile_cli("-", stdin=b"\xff\xfe" + SEED_POLICY.encode("utf-16-le"))
    assert_unusable(result, Path("<stdin>"), "not UTF-8")


def test_compile_without_a_policy_file_is_a_usage_error() -> None:
    result = compile_cli()
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Usage: extension-server compile [OPTIONS] [POLICIES]...")
    assert "no policy file given: name one or more, or - to read them from standard input" in (
        result.stderr
    )


# --- Which version runs -------------------------------------------------------------------------


def test_version_prints_the_installed_version() -> None:
    result = subprocess.run(
        [EXTENSION_SERVER, "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout == f"extension-server, version {metadata.version('extension-server')}\n"


def test_the_started_line_names_the_version(served: Any) -> None:
    port = free_port()
    server = served(["--host", "127.0.0.1", "--port", str(port)], port=port)
    server.stop(signal.SIGTERM)
    (started,) = [line for line in server.log_lines if "server.started" in line]
    assert f"version={metadata.version('extension-server')}" in started.split()


# --- Input files that cannot be used: one line naming the file, exit status 2 ------------------

SHA_OF_SEED = "{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io="


def assert_unusable(result: subprocess.CompletedProcess[str], path: Path, problem: str) -> None:
    """Exit 2, nothing on stdout, and one `error: FILE: ...` line: no traceback, no secret."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert SHA_OF_SEED not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: "), line
    assert problem in line


WITH_NUL = SEED_POLICY.encode().replace(b"user\n", b"us\0er\n", 1)
UNUSABLE_POLICY_FILES = {
    "yaml-syntax": (b"spec:\n  username: user\n  password: p@ssw0rd: x\n", "not YAML"),
    "nul-byte": (WITH_NUL, f"at offset {WITH_NUL.index(0)};"),
    "not-utf-8": (b"\xff\xfe" + SEED_POLICY.encode("utf-16-le"), "not UTF-8"),
    "binary-value": (b"spec: !!binary cDBzc3cwcmQ=\n", "not a Kubernetes object"),
}


@pytest.mark.parametrize("case", UNUSABLE_POLICY_FILES)
def test_a_policy_file_that_is_not_yaml_text_is_named_without_a_traceback(
    tmp_path: Path, seed_policy: Path, case: str
) -> None:
    content, problem = UNUSABLE_POLICY_FILES[case]
    bad = tmp_path / f"{case}.yaml"
    bad.write_bytes(content)
    assert_unusable(compile_cli(seed_policy, bad), bad, problem)


def test_a_missing_or_unreadable_policy_file_is_named(tmp_path: Path, seed_policy: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert_unusable(compile_cli(seed_policy, missing), missing, "No such file or directory")
    assert_unusable(compile_cli(tmp_path), tmp_path, "Is a directory")
    # A file that exists and fails on read, even for root: a process's memory at offset 0.
    unreadable = Path("/proc/self/mem")
    if unreadable.exists():
        assert_unusable(compile_cli(unreadable), unreadable, "cannot read it")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file without read permission")
def test_a_policy_file_without_read_permission_is_named(tmp_path: Path, seed_policy: Path) -> None:
    seed_policy.chmod(0)
    assert_unusable(compile_cli(seed_policy), seed_policy, "Permission denied")


UNUSABLE_LISTENERS = {
    "unknown-field": ("name: l\nbogus: 1\n", 'no field named "bogus"'),
    "wrong-type": ("name: [1, 2]\n", "Failed to parse name field"),
    # The bad value is a hash here: the message names the field, never the value.
    "hash-as-number": (f"name: l\nperConnectionBufferLimitBytes: '{SHA_OF_SEED}'\n", "<value>"),
    "not-a-mapping": ("- just a string\n", "a listener is a YAML mapping"),
    "yaml-syntax": ("name: l\n  address: x\n", "not YAML"),
}


@pytest.mark.parametrize("case", UNUSABLE_LISTENERS)
def test_a_listener_file_that_is_no_listener_is_named_without_a_traceback(
    tmp_path: Path, seed_policy: Path, case: str
) -> None:
    content, problem = UNUSABLE_LISTENERS[case]
    bad = tmp_path / f"{case}.yaml"
    bad.write_text(content)
    assert_unusable(compile_cli(seed_policy, "--listener", bad), bad, problem)
    missing = tmp_path / "missing.yaml"
    assert_unusable(
        compile_cli(seed_policy, "--listener", missing), missing, "No such file or directory"
    )


def test_compile_help_documents_the_exit_statuses() -> None:
    result = subprocess.run(
        [EXTENSION_SERVER, "compile", "--help"], capture_output=True, text=True, check=True
    )
    for status in ("0  compiled", "1  a policy", "2  an input file cannot be used"):
        assert status in result.stdout


# --- A policy that protects nothing on the listener --------------------------------------------


def test_a_policy_matching_no_filter_chain_is_a_warning_not_an_error(
    seed_policy: Path, tmp_path: Path
) -> None:
    listener = tmp_path / "listener.yaml"
    listener.write_text(
        dump_yaml(to_dict(https_listener("https", gateway="envoy-gateway/gateway-1")))
    )

    result = compile_cli(seed_policy, "--listener", listener)

    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "warning: policy default/listeneruser applies to no HTTP connection manager of "
        "listener envoy-gateway/gateway-1/https: "
    )
    assert "targetRefs" in line


def test_a_policy_that_applies_gets_no_warning(seed_policy: Path, tmp_path: Path) -> None:
    listener = tmp_path / "listener.yaml"
    listener.write_text(dump_yaml(to_dict(https_listener("https"))))
    result = compile_cli(seed_policy, "--listener", listener)
    assert result.returncode == 0
    assert result.stderr == ""


# --- Every option of every command has its EXTENSION_SERVER_<NAME> variable ---------------------


def test_every_option_of_every_command_has_its_environment_variable() -> None:
    for command in main.commands.values():
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            name = param.opts[0].removeprefix("--")
            declared = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            assert declared[:1] == [f"EXTENSION_SERVER_{name.upper().replace('-', '_')}"], (
                f"{command.name} --{name}"
            )


def test_the_listener_can_come_from_its_environment_variable(
    seed_policy: Path, tmp_path: Path
) -> None:
    listener = tmp_path / "listener.yaml"
    listener.write_text(dump_yaml(to_dict(http_listener())))
    result = subprocess.run(
        [EXTENSION_SERVER, "compile", str(seed_policy)],
        capture_output=True,
        text=True,
        env={**os.environ, "EXTENSION_SERVER_LISTENER": str(listener)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (printed,) = yaml.safe_load(result.stdout)
    assert our_filter_in(printed)["users"] == {"inlineString": SEED_HTPASSWD}
