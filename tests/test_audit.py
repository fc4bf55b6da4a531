"""The audit trail a security team ships to its SIEM: one JSON line per change of who is
admitted where, to standard output or a file that logrotate may rotate.

The replay: a listener's baseline, a user added, one removed, a rotation (the same users
from a new version of the secret), a revocation (the secret is gone), a swap; each line
is checked whole. The file lives under pytest's temporary directory as a *.log, so the
suite's secret scan reads it too.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends import CredentialResolver, ResolverSettings
from compiler import errors
from compiler.model import PolicyRef
from compiler.pipeline import compile_listener, load_policies
from server.audit import MAX_NAMES, AuditFile, AuditTrail, StdoutSink, audit_lines
from server.changes import REVOKED, AccessChange, Place
from server.outcomes import Admission, ListenerOutcome, PolicyIdentity, Rejection, Source
from tests.support.builders import http_listener, policy, router
from tests.support.commands import EXTENSION_SERVER
from tests.support.secrets import leaks

LISTENER = "default/eg/https"
WEB = PolicyIdentity("team-a", "web", "2b0f6c1e-web")
V3 = Source("vault", "secret/data/gateways/team-a/web", "3")
V4 = Source("vault", "secret/data/gateways/team-a/web", "4")
KEYS = [
    "ts", "level", "logger", "event", "server", "listener", "gateway", "section", "policy",
    "policy_uid", "users", "added", "removed", "source", "previous_source", "cause",
]  # fmt: skip


def admits(*users: str, source: Source | None = V3, who: PolicyIdentity = WEB) -> Admission:
    return Admission(LISTENER, "default/eg", "https", who, frozenset(users), source)


def outcome(*admissions: Admission, rejections: tuple[Rejection, ...] = ()) -> ListenerOutcome:
    return ListenerOutcome(LISTENER, admissions, rejections)


@pytest.fixture
def trail_file(tmp_path: Path) -> Iterator[tuple[AuditTrail, Path]]:
    path = tmp_path / "audit.log"
    trail = AuditTrail(AuditFile(str(path)))
    trail.start()
    yield trail, path
    trail.close(5.0)


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def secret_gone() -> Rejection:
    """What the hook reports when the secret was deleted: a real UnresolvedCredentialError."""
    error = errors.UnresolvedCredentialError(
        PolicyRef("team-a", "web"), "spec.passwordFrom.vault.path", "no such secret",
        "create the secret or correct the reference",
    )  # fmt: skip
    return Rejection.of(error, uid=WEB.uid, whole_policy=True, outcome="not_found")


def test_replay_add_remove_rotate_revoke_and_swap(trail_file: tuple[AuditTrail, Path]) -> None:
    trail, path = trail_file
    gone = secret_gone()
    for step in [
        outcome(admits("alice", "bob")),  # the baseline
        outcome(admits("alice", "bob")),  # nothing new: no line
        outcome(admits("alice", "bob", "carol")),  # add
        outcome(admits("alice", "carol")),  # remove
        outcome(admits("alice", "carol", source=V4)),  # rotate
        outcome(rejections=(gone,)),  # revoke: the secret is gone
        outcome(admits("alice", "carol", source=V4)),  # back
        outcome(admits("alice", "dave", source=V4)),  # swap
    ]:
        trail.observe(step)
    trail.rotated(WEB, V4)  # the watcher's word alone writes nothing
    assert trail.settled(10)
    lines = lines_of(path)
    assert [list(line) for line in lines] == [KEYS] * 7
    common = {
        "level": "info", "logger": "audit", "server": lines[0]["server"], "listener": LISTENER,
        "gateway": "default/eg", "section": "https", "policy": "team-a/web",
        "policy_uid": WEB.uid,
    }  # fmt: skip
    v3 = {"store": "vault", "secret": "secret/data/gateways/team-a/web", "version": "3"}
    v4 = {**v3, "version": "4"}
    expected = [
        ("access.snapshot", 2, ["alice", "bob"], [], v3, None, None),
        ("access.granted", 3, ["carol"], [], v3, None, None),
        ("access.revoked", 2, [], ["bob"], v3, None, None),
        ("access.rotated", 2, [], [], v4, v3, None),
        ("access.revoked", 0, [], ["alice", "carol"], None, v4,
         {"reason": "unresolved", "field": gone.field, "message": gone.message}),
        ("access.granted", 2, ["alice", "carol"], [], v4, None, None),
        ("access.changed", 2, ["dave"], ["carol"], v4, None, None),
    ]  # fmt: skip
    for line, (event, users, added, removed, source, previous, cause) in zip(
        lines, expected, strict=True
    ):
        assert {k: line[k] for k in common} == common
        assert (line["event"], line["users"], line["added"], line["removed"]) == (
            event, users, added, removed,
        )  # fmt: skip
        assert (line["source"], line["previous_source"], line["cause"]) == (source, previous, cause)
        assert line["ts"].endswith("Z")
    assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)


def test_a_listener_seen_first_is_a_snapshot_and_one_not_sent_again_removes_nothing(
    trail_file: tuple[AuditTrail, Path],
) -> None:
    trail, path = trail_file
    trail.observe(outcome(admits("alice")))
    other = ListenerOutcome(
        "default/eg/http",
        (Admission("default/eg/http", None, None, WEB, frozenset({"alice"}), None),),
        (),
    )
    trail.observe(other)  # another listener: its own baseline
    trail.observe(other)
    assert trail.settled(10)
    lines = lines_of(path)
    assert [(line["event"], line["listener"], line["gateway"]) for line in lines] == [
        ("access.snapshot", LISTENER, "default/eg"),
        ("access.snapshot", "default/eg/http", None),
    ]
    assert lines[1]["source"] is None  # spec.password


def test_a_change_naming_many_users_is_split_into_parts() -> None:
    names = tuple(f"user-{n:05d}" for n in range(2 * MAX_NAMES + 5))
    place = Place("default/eg", "https", LISTENER)
    change = AccessChange(REVOKED, place, WEB, (), names, frozenset(), V3, None, None)
    lines = [json.loads(line) for line in audit_lines(change, _now(), "replica")]
    assert [(line["part"], line["parts"]) for line in lines] == [(1, 3), (2, 3), (3, 3)]
    assert [len(line["removed"]) for line in lines] == [MAX_NAMES, MAX_NAMES, 5]
    assert [name for line in lines for name in line["removed"]] == list(names)


def _now() -> Any:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.now(UTC)


# --- the file: owner-only, appended, rotated ------------------------------------------------


def test_the_file_is_owner_only_and_follows_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = AuditFile(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sink.write('{"n": 1}\n')
    # logrotate's default: rename, then the writer creates a new file at the path
    path.rename(tmp_path / "audit.log.1")
    sink.write('{"n": 2}\n')
    assert (tmp_path / "audit.log.1").read_text() == '{"n": 1}\n'
    assert path.read_text() == '{"n": 2}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # copytruncate: copied, then cut to zero; appending starts the file again, no NULs
    (tmp_path / "audit.log.2").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    sink.write('{"n": 3}\n')
    assert path.read_bytes() == b'{"n": 3}\n'
    # deleted: a new one
    path.unlink()
    sink.write('{"n": 4}\n')
    assert path.read_text() == '{"n": 4}\n'
    sink.close()


def test_stdout_carries_the_audit_lines_and_nothing_else(
    capsys: pytest.CaptureFixture[str],
) -> None:
    trail = AuditTrail(StdoutSink())
    trail.start()
    trail.observe(outcome(admits("alice")))
    trail.observe(outcome(admits("alice", "bob")))
    trail.close(5.0)
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["logger"], line["event"]) for line in lines] == [
        ("audit", "access.snapshot"),
        ("audit", "access.granted"),
    ]
    assert '"logger": "audit"' not in err


def test_no_password_or_hash_reaches_an_audit_line(trail_file: tuple[AuditTrail, Path]) -> None:
    """Real rejections of real policies, passwords remembered by the builders: none is in
    the file (and the suite's scan reads it again at the end)."""
    raws = [policy("web", "a:b", "pw-audit-secret-1", "team-a"), policy("ok", "erin", "pw-audit-2")]
    resolver = CredentialResolver(ResolverSettings(), {})
    listener = http_listener(router(), name="any-namespace")  # every namespace applies
    result = compile_listener(listener, load_policies(raws, resolver))
    rejections = tuple(Rejection.of(e, uid="u", whole_policy=True) for e in result.errors)
    trail, path = trail_file
    web = PolicyIdentity("team-a", "web", "u")
    trail.observe(outcome(admits("erin", source=None, who=web)))
    trail.observe(outcome(rejections=rejections))
    assert trail.settled(10)
    text = path.read_text()
    assert "access.revoked" in text and "a:b" in text  # the message names the user
    assert leaks([("audit", text)]) == []


# --- the setting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--audit-log", "/nonexistent-dir/audit.log"],
            "error: --audit-log: /nonexistent-dir does not exist",
        ),
        (["--audit-log", "/"], "error: --audit-log: / is a directory"),
        (
            ["--kubernetes-events-interval", "0"],
            "error: --kubernetes-events-interval: 0s is too short",
        ),
        (["--kubernetes-events", "on"], "error: --kubernetes-events: no Kubernetes configuration"),
        (["--kubernetes-events", "sometimes"], "error: --kubernetes-events: "),
    ],
    ids=["no-dir", "a-dir", "interval-0", "events-on-no-kubernetes", "bad-mode"],
)
def test_a_setting_that_cannot_work_stops_the_start_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    clean = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("EXTENSION_SERVER_", "KUBERNETES_", "KUBECONFIG"))
    }  # fmt: skip
    env = {**clean, "HOME": str(tmp_path), "EXTENSION_SERVER_METRICS_PORT": "0"}
    done = subprocess.run(
        [EXTENSION_SERVER, "serve", "--port", "0", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(message), line
    assert "Traceback" not in done.stderr


def test_an_audit_file_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    unopenable = tmp_path / ("a" * 300 + ".log")  # a name longer than the file system takes
    done = subprocess.run(
        [EXTENSION_SERVER, "serve", "--port", "0", "--metrics-port", "0",
         "--audit-log", str(unopenable)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: --audit-log: cannot open {unopenable} for appending")
    assert "File name too long" in done.stderr and len(done.stderr.splitlines()) == 1


def test_off_in_a_config_file_is_off_not_a_file_named_false(tmp_path: Path) -> None:
    """YAML reads `off` as false: the settings read it as `off`, as an operator means it."""
    from server.cli import main  # noqa: PLC0415
    from server.settings import server_settings  # noqa: PLC0415

    config = tmp_path / "server.yaml"
    config.write_text("audit-log: off\nkubernetes-events: off\n")
    command = main.commands["serve"]
    with command.make_context("serve", ["--config", str(config)]) as context:
        settings = server_settings(context.params)
    assert settings.audit.destination == "off" and settings.events.mode == "off"
    config.write_text("audit-log: on\nkubernetes-events: on\n")
    with command.make_context("serve", ["--config", str(config)]) as context:
        settings = server_settings(context.params)
    assert settings.audit.destination == "stdout" and settings.events.mode == "on"
