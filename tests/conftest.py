"""Suite-wide fixtures, and the map of the suite: where each part of the product is tested.

Fixtures here: `vault` (the Vault stand-in with ROOT_TOKEN valid in it), `served` (a real
`extension-server serve` process), and the no-secrets-in-logs check: every log the suite
produces, from servers run in-process (sent to one file by `_logs_hold_no_secret`) and from
subprocesses (their `*.log`, `*.stdout`, `*.stderr` files under pytest's temporary
directory), is read at the end of the session, and a test password, token or any `{SHA}`
hash in any of them fails the run.

Where each part of the product is tested
----------------------------------------
A product module, and the test modules that hold its tests (what in them, where it is not
all of it). tests/test_suite_layout.py fails when a module, a test module or a helper is
missing here.

compiler/errors.py         test_compiler.py (each family's policy, field and message),
                           test_no_secrets_in_logs.py (no message quotes a password)
compiler/exemptions.py     test_exemptions.py (the parser's checks, the CRD schema, the
                           predicate; hypothesis: an exempt request is inside an
                           exemption), test_request_control_envoy.py (the real Envoy)
compiler/filters.py        test_compiler.py ("Where the filter goes", custom filter order)
compiler/headers.py        test_request_headers.py, test_request_control_envoy.py (what the
                           backend receives)
compiler/htpasswd.py       test_compiler.py ("Envoy's htpasswd rules", libpass's bytes),
                           test_envoy_accepts.py (the real Envoy reads every table)
compiler/listener.py       test_compiler.py (managers, chains, upgrades, undecodable),
                           test_fuzz_regressions.py (TypedStruct managers),
                           test_hostile_input.py, test_conformance.py (Envoy Gateway's
                           listeners, every Envoy)
compiler/matching.py       test_exemptions.py, test_request_control_envoy.py (every Envoy
                           takes the wrapper, and refuses a broken matcher)
compiler/memo.py           test_compiler.py (reuse by value), test_backends.py (what a
                           superseded key built is let go)
compiler/model.py          values only; ValueKey in test_compiler.py and test_backends.py
compiler/parse.py          test_compiler.py (malformed policies, by field), test_backends.py
                           ("The policy API"), test_chart.py (the parser agrees with the
                           CRD), test_fuzz_regressions.py (JSON nested too deep)
compiler/pipeline.py       test_compiler.py, test_properties.py, test_limits.py (the policy
                           that makes an answer too large is left out)
compiler/routes.py         test_routes.py, test_request_control_envoy.py (merged Gateways),
                           test_route_corpus.py (Envoy Gateway's routes, every Envoy)
compiler/schemes.py        test_backends.py ("What a stored value may be")
compiler/scope.py          test_compiler.py ("Which policies apply where")
compiler/translation.py    test_routes.py (which policies where, both hooks, the size limit),
                           test_request_control_envoy.py (through gRPC, every Envoy),
                           test_route_corpus.py (Envoy Gateway's routes, every Envoy),
                           test_server.py (every list handed back)
compiler/users.py          test_compiler.py (conflicts, stored columns), test_backends.py
                           (stored values), test_properties.py (the column fast path and
                           the per-user checks agree)
compiler/virtual_hosts.py  test_routes.py, test_exemptions.py (per Gateway),
                           test_route_corpus.py (the metadata as Envoy Gateway writes it)

backends/aws.py            test_backend_aws.py
backends/cache.py          test_backends.py ("The cache"), test_backend_vault.py and
                           test_backend_aws.py (single flight, stale-if-error)
backends/metrics.py        test_metrics.py, test_backend_aws.py
backends/registry.py       test_rotation.py (what is watched), test_rotation_trust.py
backends/resolver.py       test_backends.py, test_backend_vault.py, test_backend_aws.py,
                           test_store_isolation.py (one deadline for all of a call's lookups)
backends/stores.py         test_backends.py, test_backend_aws.py, test_rotation.py
backends/tenancy.py        test_backends.py ("The tenancy guard"), test_chart.py (the docs'
                           policies pass it)
backends/values.py         test_backends.py ("What a stored value may be")
backends/vault.py          test_backend_vault.py

server/__main__.py         no logic: `python -m server` runs server/cli.py
server/answers.py          test_answers.py
server/audit.py            test_audit.py (the replay of add, remove, rotate, revoke; files
                           rotated), test_hook_tells_owners.py
server/changes.py          test_audit.py, test_events.py (what changed per policy and place)
server/events.py           test_events.py (every failure family, folding, a hung API
                           server), test_events_chart.py (the RBAC allows each request),
                           test_hook_tells_owners.py (through the hook)
server/outcomes.py         test_events.py, test_audit.py (queues, drops, close)
server/api/                test_api_stubs.py (the stubs match the proto and Envoy Gateway's)
server/app.py              test_server.py, test_tls.py, test_limits.py
server/cli.py              test_cli.py (compile, --version), test_settings.py,
                           test_startup_errors.py
server/drain.py            test_server.py (SIGTERM lets calls finish), test_shutdown.py
server/envoy_json.py       test_cli.py, test_examples.py
server/health.py           test_server.py (health, the health port), test_shutdown.py (Watch)
server/kube.py             test_rotation.py (the Lease and the patch),
                           test_rotation_end_to_end.py, test_local_runs.py, test_shutdown.py
server/logs.py             test_no_secrets_in_logs.py, test_backend_aws.py ("logs")
server/manifests.py        test_cli.py, test_examples.py
server/metrics_http.py     test_metrics_endpoint.py, test_metrics.py
server/preflight.py        test_startup_errors.py, test_settings.py
server/reflection.py       test_server.py (reflection streams never take the hook's threads)
server/report.py           test_answers.py (logged once), test_server.py, test_hostile_input.py,
                           test_hook_tells_owners.py (what an answer tells the observers)
server/rotation.py         test_rotation.py, test_rotation_trust.py,
                           test_rotation_end_to_end.py, test_local_runs.py
server/service.py          test_server.py, test_limits.py, test_hook_never_fails.py,
                           test_answers.py
server/settings.py         test_settings.py, test_config_file.py, test_startup_errors.py
server/tls.py              test_tls.py, test_server.py (the health port beside TLS)
server/version.py          test_cli.py ("Which version runs")

server/demo/echo.py        test_harness.py
server/demo/envoy.py       test_harness.py, test_demo.py
server/demo/files.py       test_demo_isolation.py
server/demo/gateway.py     test_end_to_end.py, test_conformance.py, test_rotation_trust.py
server/demo/listeners.py   test_harness.py
server/demo/stack.py       test_end_to_end.py, test_end_to_end_stores.py,
                           test_rotation_end_to_end.py
server/demo/story.py       test_demo.py, test_end_to_end.py

charts/extension-server/   test_chart.py (metadata, CRD, values schema), test_chart_render.py
                           (manifests, lint, the Deployment starts the server),
                           test_chart_hostile_values.py, test_chart_alerts.py,
                           test_gateway_helm.py (Envoy Gateway's own chart enables the hook)
Dockerfile                 test_image.py (and .dockerignore, requirements.lock)
Makefile                   test_make.py
scripts/generate_api.py    test_api_stubs.py
bench/                     test_bench_report.py (the page's arithmetic; `make bench` runs it)
reliability/               `make fuzz` and `make soak` run it, not `make test`; what the fuzz
                           run found stays fixed in test_fuzz_regressions.py
README.md                  test_make.py, test_chart.py (its policy passes the CRD)
docs/backends.md           test_chart.py (every policy of the docs passes the CRD, the
                           parser and the tenancy guard)
docs/chart.md              test_chart_render.py (its helm commands)
docs/compatibility.md      test_envoy_matrix.py
docs/design.md             prose; its claims are the tests above
docs/examples/             test_examples.py, test_gateway_helm.py
docs/guide.md              test_chart_render.py, test_gateway_helm.py, test_chart.py
docs/operations.md         test_chart_alerts.py, test_grpcurl_doc.py, test_server.py (every
                           event the server logs)
docs/performance.md        test_bench_report.py
docs/policies.md           prose
docs/reliability.md        prose; `make fuzz` and `make soak` write it
docs/rotation.md           test_chart.py (its policies)
docs/security.md           prose

The suite and its stand-ins: test_harness.py (Envoy and the echo backend),
test_vault_standin.py, test_kube_standin.py, test_kube_standin_events.py (its Events API),
test_secret_scan.py (the log check above finds
what it should), test_suite_layout.py (this map). End to end, several modules at once:
test_end_to_end.py, test_end_to_end_stores.py, test_rotation_end_to_end.py,
test_hook_never_fails.py, test_envoy_matrix.py, test_properties.py.

Helpers under tests/support/ (a test module never imports another test module)
---------------------------------------------------------------------------
support/aws.py             AWS Secrets Manager, STS and IAM: moto in HTTP server mode
support/builders.py        what Envoy Gateway sends: policies (JSON), listeners (protobuf),
                           and readers of our filter in them
support/certs.py           real X.509 certificates: a CA and its leaves
support/charts.py          Helm renders as objects, values merged as Helm merges them
support/commands.py        the installed `extension-server` command
support/describe.py        `kubectl describe`-style lines from a policy's Events
support/compile.py         one hook call in this process (`hook`), and what each HTTP
                           connection manager admits, read as Envoy reads it (`tables`,
                           `users_of`, `admitted`, `htpasswd`)
support/corpus.py          Envoy Gateway's listeners in ../shared/ (skip, or fail in CI)
support/envoys.py          every Envoy a supported Envoy Gateway runs (`every_envoy`)
support/exemption_strategies.py  exemption sets and the request paths that try to get
                           past them (hypothesis strategies)
support/hook.py            one server in this process called over gRPC (`HookServer`,
                           `Answered`, `listener_request`)
support/hostile_cases.py   the hostile-input corpus: hook calls and what must come back
support/hostile_checks.py  what a protected answer is (`check_protected`)
support/hostile_names.py   user names Envoy or RFC 7617 cannot take
support/kube.py            the Kubernetes API server (stand-in, for lightkube)
support/logged.py          the structured lines pytest's caplog holds (`events`)
support/matcher_model.py   how Envoy evaluates the matchers we emit (`skips`), and what an
                           exemption means (`admits`, `canonical`, `promise_holds`)
support/poison.py          what one team can write where the server reads (strategies)
support/request_control.py  Envoy Gateway's listener with routes inline, protected as the
                           hook will (`protect`), and raw HTTP requests (`send`)
support/secrets.py         every secret handed to the product, for the log check
support/standin.py         what the HTTP stand-ins share
support/stores.py          the server's stores over the stand-ins (`both_stores`)
support/validate.py        `envoy --mode validate` over many listeners at once
support/vault.py           HashiCorp Vault's HTTP API (stand-in, for hvac)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from server import logs
from tests.support.commands import EXTENSION_SERVER
from tests.support.kube import KubeStandIn
from tests.support.secrets import leaks, log_files, remember
from tests.support.vault import ROOT_TOKEN, VaultStandIn


def wait_until_serving(target: str, timeout: float = 15.0) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


# Test-side libraries running in this process that log the test data they are given
# (moto's request bodies, cel-python's activations): not the product's logs.
TEST_LIBRARY_LOGGERS = ("moto", "werkzeug", "celpy")


@pytest.fixture(scope="session", autouse=True)
def _logs_hold_no_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.getbasetemp()
    with (root / "in-process.log").open("w") as in_process:
        logs.configure("debug", "logfmt", stream=in_process)
        for name in TEST_LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        yield
    found = leaks(
        (str(path.relative_to(root)), path.read_text(errors="replace")) for path in log_files(root)
    )
    if found:
        pytest.fail("secrets in logs:\n" + "\n".join(sorted(set(found))), pytrace=False)


class ServedProcess:
    """A real `extension-server serve` process; its stdout and stderr go to files."""

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("EXTENSION_SERVER_")}
        self.stdout_path, self.stderr_path = tmp / "server.stdout", tmp / "server.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [EXTENSION_SERVER, "serve", *args],
                stdout=out,
                stderr=err,
                # no metrics endpoint unless a test asks: several servers run at once
                env={**clean, "EXTENSION_SERVER_METRICS_PORT": "0", **(env or {})},
            )

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `signum` once and return the exit status."""
        self.send(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = 20.0) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    @property
    def log_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.strip()]

    def wait_for_log(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"server exited early:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} in the log:\n{self.output}"
            time.sleep(0.02)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """Start `extension-server serve ARGS` (with ENV) and wait until it answers on PORT."""
    started: list[ServedProcess] = []

    def start(args: list[str], port: int, env: dict[str, str] | None = None) -> ServedProcess:
        workdir = tmp_path / f"server-{len(started)}"
        workdir.mkdir()
        process = ServedProcess(workdir, args, env)
        started.append(process)
        process.wait_for_log("server.started")
        wait_until_serving(f"127.0.0.1:{port}")
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


@pytest.fixture
def vault() -> Iterator[VaultStandIn]:
    """The Vault stand-in, holding no secret yet; ROOT_TOKEN is valid in it for every path.

    A test that needs other tokens (narrow policies, a namespace, a TTL) adds them with
    `vault.add_token`.
    """
    remember(ROOT_TOKEN)
    with VaultStandIn() as standin:
        standin.add_token(ROOT_TOKEN)
        yield standin


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeStandIn]:
    """The Kubernetes API stand-in. The Events written to it end up in a *.log of the test,
    for the suite's secret scan, and are checked for secrets here too."""
    with KubeStandIn() as standin:
        yield standin
        written = standin.items("Event")
    (tmp_path / "kube-events.log").write_text("".join(json.dumps(e) + "\n" for e in written))
    assert leaks([("events", json.dumps(written))]) == []
