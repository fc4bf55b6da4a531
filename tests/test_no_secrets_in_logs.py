"""No password and no hash of one ever reaches the server's output, at any log level.

A real `extension-server serve --log-level debug` gets the calls an operator's mistakes
produce: a valid policy, two policies fighting over one user, a password with a control
character, a user name with ':', a bad header, a misspelt field holding a password, JSON
cut off in the middle of a password, and a request that is not protobuf at all. Then
everything it printed is searched for every password and every `{SHA}` hash of one, and
every line must be one structured event naming the listener and the policy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import grpc
import pytest

from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc
from server.demo.envoy import free_port
from tests.support.builders import http_listener, policy
from tests.support.hook import listener_request

SERVICE = "envoygateway.extension.EnvoyGatewayExtension"

PASSWORDS = {
    "seed": "p@ssw0rd",
    "older": "Older-Wins-9f2c",
    "newer": "Newer-Loses-7d1e",
    "control": "Bell-Ctl-4b8a\x07",
    "colon": "Colon-User-5e3f",
    "header": "Bad-Header-1c9d",
    "typo": "Typo-Field-2a7b",
    "truncated": "Trunc-Json-8e6f",
    "long": "Long-Pw-3d5c" * 400,
    "translate": "Translate-Hook-6a0b",
}


def misspelt_password_policy() -> bytes:
    obj = json.loads(policy("typo", "tom", "placeholder", namespace="team-a"))
    obj["spec"]["passwrod"] = PASSWORDS["typo"]  # the real password went into a typo
    return json.dumps(obj).encode()


POLICIES = [
    policy("listeneruser", "user", PASSWORDS["seed"]),
    policy("alice-old", "alice", PASSWORDS["older"], "team-a", "2024-01-01T00:00:00Z"),
    policy("alice-new", "alice", PASSWORDS["newer"], "team-a", "2024-03-01T00:00:00Z"),
    policy("bell", "bell", PASSWORDS["control"], namespace="team-a"),
    policy("colon", "a:b", PASSWORDS["colon"], namespace="team-a"),
    policy("header", "hal", PASSWORDS["header"], namespace="team-a", header="X Bad"),
    policy("long", "lou", PASSWORDS["long"], namespace="team-a"),
    misspelt_password_policy(),
    b'{"kind": "ListenerContextExample", "spec": {"username": "eve", "password": "'
    + PASSWORDS["truncated"].encode(),
]
REJECTED = ["team-a/alice-new", "team-a/bell", "team-a/colon", "team-a/header", "team-a/long"]

LOGFMT_PAIR = r'[^\s="]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
LOGFMT_LINE = re.compile(rf"{LOGFMT_PAIR}(?: {LOGFMT_PAIR})*")
LOGFMT_FIELD = re.compile(r'([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def sha_hash(password: str) -> str:
    return base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def parse_line(line: str, fmt: str) -> dict[str, Any]:
    """One log line as a dict; fails the test if it is not one structured event."""
    if fmt == "json":
        event = json.loads(line)
        assert isinstance(event, dict), line
    else:
        assert LOGFMT_LINE.fullmatch(line), f"not logfmt: {line!r}"
        event = {
            key: json.loads(value) if value.startswith('"') else value
            for key, value in LOGFMT_FIELD.findall(line)
        }
    assert {"ts", "level", "event"} <= event.keys(), line
    return event


def send_every_kind_of_mistake(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        hooks = api_grpc.EnvoyGatewayExtensionStub(channel)
        # Chains named after no Gateway: the policies of both namespaces apply there.
        for listener_name, policies in (("shared-http", POLICIES), ("shared-open", [])):
            answer = hooks.PostHTTPListenerModify(
                listener_request(*policies, listener=http_listener(name=listener_name)),
                timeout=10,
            )
            assert answer.listener.name == listener_name
        translated = policy("translate", "tina", PASSWORDS["translate"])
        hooks.PostTranslateModify(
            api.PostTranslateModifyRequest(
                post_translate_context=api.PostTranslateExtensionContext(
                    extension_resources=[api.ExtensionResource(unstructured_bytes=translated)]
                ),
                listeners=[http_listener()],
            ),
            timeout=10,
        )
        # Not protobuf at all: refused, and logged without its content.
        not_protobuf = channel.unary_unary(f"/{SERVICE}/PostHTTPListenerModify")
        with pytest.raises(grpc.RpcError) as refused:
            not_protobuf(b"\xff\xff\xff not protobuf " + PASSWORDS["seed"].encode(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_debug_logs_are_structured_name_policies_and_never_hold_a_secret(
    served: Any, fmt: str
) -> None:
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "debug"]
    server = served([*args, "--log-format", fmt], port=port)

    send_every_kind_of_mistake(f"127.0.0.1:{port}")

    assert server.stop() == 0
    output = server.output
    for name, password in PASSWORDS.items():
        marker = password.rstrip("\x07")[:15]
        assert marker not in output, f"the {name} password is in the server's output"
        assert sha_hash(password) not in output, f"the hash of the {name} password is logged"

    # The log is stderr; stdout holds the audit trail, JSON whatever the log format.
    logged = server.stderr_path.read_text().splitlines()
    events = [parse_line(line, fmt) for line in logged if line.strip()]
    audit = [json.loads(line) for line in server.stdout_path.read_text().splitlines()]
    assert {line["logger"] for line in audit} == {"audit"}
    assert {(line["policy"], tuple(line["added"])) for line in audit} >= {
        ("default/listeneruser", ("user",))
    }
    hooks = {e["listener"]: e for e in events if e["event"] == "hook.listener"}
    assert hooks.keys() == {"shared-http", "shared-open"}
    assert "default/listeneruser" in hooks["shared-http"]["policies"]
    rejected = {
        e["policy"] for e in events if e["event"] in ("policy.rejected", "policy.entries_rejected")
    }
    assert set(REJECTED) <= rejected
    assert "team-a/typo" in rejected
    assert any(e["event"] == "hook.invalid_request" for e in events)  # not protobuf
