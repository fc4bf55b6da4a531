"""Hostile input, end to end: every case of tests/support/hostile_cases.py over real gRPC.

A security team's question is not "does a good policy work" but "what can a bad one do".
Each case is one PostHTTPListenerModify call to an in-process server over a socket, and
must show the same four things:

- the call succeeds (a bad policy never costs the other policies their update);
- each bad policy is reported in the server's log, by `namespace/name` and field, and
  nothing else is (objects of other kinds are logged as ignored, undecodable managers
  as such), in lines of bounded size;
- the listener stays protected: every HTTP connection manager holds our filter, with
  exactly the users that should get in (the valid neighbour policy among them), and
  nothing else of the listener changed; parts this build cannot read come back byte
  for byte;
- the real Envoy accepts the answer, or, where it rejects that listener whatever the hook
  does, rejects the answer with the very error it gives for the input. All answers are
  validated in one batch (tests/support/validate.py); those holding bytes JSON cannot
  carry are read by Envoy from a binary bootstrap, exactly as sent.

`pytest --collect-only -q tests/test_hostile_input.py` lists one test per case.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from compiler import errors
from compiler.htpasswd import parse_like_envoy
from server.api import extension_pb2_grpc as api_grpc
from server.app import ExtensionServer, ServerSettings
from server.envoy_json import register_envoy_types
from server.report import ENTRIES_NAMED
from tests.support.builders import our_filter
from tests.support.hook import listener_request
from tests.support.hostile_cases import CASES, HostileCase, Listener
from tests.support.hostile_checks import check_protected, manager_shape, network_filters
from tests.support.secrets import sha
from tests.support.validate import envoy_validate, validate_listeners, validation_bootstrap

# Families that leave a whole policy out; the others leave out single entries of one.
WHOLE_POLICY_REASONS = frozenset(
    {"malformed", "no_target", "invalid_header", "plaintext_forbidden", "tenancy", "unresolved"}
    | {"too_large", "internal"}
)
LONGEST_LOG_VALUE = 1000  # characters: a 1 MiB value must never be copied into a log line
NOT_JUDGED = "<not validated: the call failed>"


@dataclass
class Outcome:
    """What one case's call gave: the answer, the server's log events, Envoy's verdicts."""

    sent: Listener
    answer: Listener | None = None
    failure: str | None = None
    seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    envoy: str | None = NOT_JUDGED  # Envoy's error for the answer; None: accepted
    envoy_on_input: str | None = NOT_JUDGED  # for the input, where Envoy must reject both


class Events(logging.Handler):
    """The server's structured log events (structlog hands logging the event dict)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_listener: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg
        if isinstance(event, dict) and "listener" in event:
            self.by_listener[str(event["listener"])].append(dict(event))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Every case sent once to one in-process server; every answer judged by Envoy."""
    events = Events()
    logging.getLogger().addHandler(events)
    server = ExtensionServer(
        # every call logs all it found: the cases share one server and some findings
        ServerSettings(host="127.0.0.1", port=0, shutdown_grace=1.0, log_repeat_interval=0)
    )
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = api_grpc.EnvoyGatewayExtensionStub(channel)
            results = {case.id: send(stub, case) for case in CASES}
    finally:
        server.stop()
        logging.getLogger().removeHandler(events)
    for case in CASES:
        results[case.id].events = events.by_listener.get(results[case.id].sent.name, [])
    judge_with_envoy(results, tmp_path_factory.mktemp("hostile-envoy"))
    yield results


def send(stub: api_grpc.EnvoyGatewayExtensionStub, case: HostileCase) -> Outcome:
    sent = listener_pb2.Listener()
    sent.CopyFrom(case.listener)
    sent.name = f"hostile/{case.id}"  # the server's log lines name it
    request = listener_request(*case.resources, listener=sent)
    started = time.perf_counter()
    try:
        response = stub.PostHTTPListenerModify(request, timeout=60)
    except grpc.RpcError as error:
        return Outcome(sent, failure=f"{error.code()}: {error.details()}")
    if not response.HasField("listener"):
        return Outcome(sent, failure="the answer holds no listener")
    return Outcome(sent, response.listener, seconds=time.perf_counter() - started)


def judge_with_envoy(results: dict[str, Outcome], workdir: Path) -> None:
    batch: list[tuple[Outcome, str, Listener]] = []
    for case in CASES:
        outcome = results[case.id]
        if outcome.answer is None:
            continue
        judged = [("envoy", outcome.answer)]
        if case.envoy_rejects:
            judged.append(("envoy_on_input", outcome.sent))
        for verdict, listener in judged:
            if case.opaque:
                setattr(outcome, verdict, envoy_reads_exact_bytes(listener, workdir))
            else:
                batch.append((outcome, verdict, listener))
    verdicts = validate_listeners([listener for _, _, listener in batch], workdir / "batch")
    for (outcome, verdict, _), error in zip(batch, verdicts, strict=True):
        setattr(outcome, verdict, error)


_DEBUG_MARKER = re.compile(r"goo\.gle/debug\w*")


def envoy_reads_exact_bytes(listener: Listener, workdir: Path) -> str | None:
    """Envoy's verdict on the listener as serialized, from a binary bootstrap.

    Unknown fields are allowed, as Envoy allows them in a listener it gets over LDS.
    """
    register_envoy_types()
    bootstrap = bootstrap_pb2.Bootstrap()
    json_format.ParseDict(validation_bootstrap([]), bootstrap)
    bootstrap.static_resources.listeners.append(listener)
    path = workdir / f"exact-{len(list(workdir.glob('exact-*')))}.pb"
    path.write_bytes(bootstrap.SerializeToString())
    error = envoy_validate(path, "--allow-unknown-static-fields")
    if error is None:
        return None
    # protobuf's debug dump of the offending message varies its marker and spacing by run.
    return " ".join(_DEBUG_MARKER.sub("goo.gle/debug", error).split())


# --- What a protected listener looks like --------------------------------------------------


def decoded_managers(listener: Listener) -> list[Any]:
    """Every HTTP connection manager in typed form that decodes (the undecodable are skipped)."""
    found = []
    for network in network_filters(listener):
        hcm = hcm_pb2.HttpConnectionManager()
        try:
            if network.typed_config.Unpack(hcm):
                found.append(hcm)
        except DecodeError:
            continue
    return found


def struct_managers(listener: Listener) -> list[Any]:
    """Every HTTP connection manager written as a TypedStruct."""
    return [network for network in network_filters(listener) if manager_shape(network) == "struct"]


def reason_of(error_class: str) -> str:
    """The `reason` word the server logs and counts for a PolicyError subclass."""
    return str(getattr(errors, error_class).reason)


def events_named(outcome: Outcome, name: str) -> list[dict[str, Any]]:
    return [event for event in outcome.events if event.get("event") == name]


# --- The test ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_call_succeeds_reports_each_bad_policy_and_the_listener_stays_protected(
    case: HostileCase, outcomes: dict[str, Outcome]
) -> None:
    """Hostile input costs the bad policy itself, never the call, the neighbours or the auth."""
    outcome = outcomes[case.id]
    assert outcome.failure is None, f"the call failed: {outcome.failure}"
    assert outcome.answer is not None
    # Well inside the server's 10 s call deadline (10 000 policies: about 1.5 s, cold).
    assert outcome.seconds < 8.0, f"the call took {outcome.seconds:.1f} s"
    answer, sent = outcome.answer, outcome.sent

    # Protected: every manager holds our filter, with exactly the users that should get in.
    table = {user: sha(password) for user, password in case.admitted.items()}
    managers = decoded_managers(answer)
    assert len(managers) == len(decoded_managers(sent))
    for hcm in managers:
        assert parse_like_envoy(our_filter(hcm).users.inline_string) == table
    check_protected(
        sent, answer
    )  # placed by rank, nothing else changed (tests/support/hostile_checks.py)
    if case.check is not None:
        case.check(answer)
    if case.unchanged is not None:
        assert case.unchanged(answer) == case.unchanged(sent), "not passed through byte for byte"

    # Reported: each bad policy by namespace/name and field, and nothing else: a policy left
    # out whole in a line of its own, a policy's rejected entries summarised in one line.
    expected = [(r.policy, r.field, reason_of(r.reason)) for r in case.rejected]
    rejected = events_named(outcome, "policy.rejected")
    assert sorted((e["policy"], e["field"], e["reason"]) for e in rejected) == sorted(
        entry for entry in expected if entry[2] in WHOLE_POLICY_REASONS
    )
    for event in rejected:
        assert event["error"].startswith(f"policy {event['policy']}: {event['field']}: ")
    entries = [entry for entry in expected if entry[2] not in WHOLE_POLICY_REASONS]
    summaries = events_named(outcome, "policy.entries_rejected")
    assert sorted(e["policy"] for e in summaries) == sorted({ref for ref, _, _ in entries})
    for event in summaries:
        mine = [entry for entry in entries if entry[0] == event["policy"]]
        assert event["entries"] == len(mine)
        reasons = Counter(reason for _, _, reason in mine)
        assert event["reasons"] == ",".join(f"{r}={n}" for r, n in sorted(reasons.items()))
        named = event["errors"].split(" | ")
        assert len(named) == min(len(mine), ENTRIES_NAMED)
        assert event["not_shown"] == len(mine) - len(named)
        for error in named:
            assert any(error.startswith(f"policy {ref}: {field}: ") for ref, field, _ in mine)
    ignored = events_named(outcome, "policy.ignored")
    assert sorted(e["resource"] for e in ignored) == sorted(case.ignored)
    undecodable = events_named(outcome, "listener.undecodable_manager")
    assert [e["filter_chain"] for e in undecodable] == list(case.undecodable)
    (summary,) = events_named(outcome, "hook.listener")
    assert summary["rejected_policies"] + summary["rejected_entries"] == len(case.rejected)
    assert summary["managers_protected"] == len(managers) + len(struct_managers(sent))
    assert summary["managers_unchanged"] == 0
    longest = max(len(str(value)) for event in outcome.events for value in event.values())
    assert longest < LONGEST_LOG_VALUE, "a hostile value was copied into a log line"

    # Envoy takes the answer, or rejects it exactly as it rejects what was sent.
    if case.envoy_rejects is None:
        assert outcome.envoy is None, f"Envoy rejects the answer: {outcome.envoy}"
    else:
        assert outcome.envoy is not None and case.envoy_rejects in outcome.envoy, outcome.envoy
        assert outcome.envoy == outcome.envoy_on_input
