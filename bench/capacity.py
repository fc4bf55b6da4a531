"""Section 6: how many users fit in one answer of Envoy Gateway's default message size.

Envoy Gateway refuses an answer larger than its `maxMessageSize`. Left unset, gRPC's own
receive limit applies: 4 MiB. Every HTTP connection manager of a listener carries its own
copy of the htpasswd table, so the answer grows by (bytes per user) x (managers) per user.
Measured in process on the real answer message (`PostHTTPListenerModifyResponse`), for
plain user names and for the longest a policy may use; then the computed count is
compiled to check that it fits and that one more user per manager would not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends import CredentialResolver, ResolverSettings
from bench.context import Context
from bench.fixtures import store_policy
from bench.results import Row, Section, size
from bench.scaling import NAMESPACE, PATH, MemoryStore
from compiler.htpasswd import MAX_USERNAME_BYTES
from compiler.pipeline import compile_listener, load_policies
from server.api import extension_pb2 as api
from tests.support.builders import http_listener, https_listener
from tests.support.secrets import sha

TITLE = "6. Users per answer within Envoy Gateway's default 4 MiB message (in process)"
DEFAULT_LIMIT = 4 * 2**20  # gRPC's default receive limit, which Envoy Gateway keeps when unset
PROBES = (1_000, 2_000)  # two table sizes: the difference gives the bytes per user
NAMES = {
    "plain names (11 bytes, `user-000001`)": lambda index: f"user-{index:06d}",
    f"longest names ({MAX_USERNAME_BYTES} bytes)": lambda index: f"{index:06d}".rjust(
        MAX_USERNAME_BYTES, "u"
    ),
}


@dataclass(frozen=True)
class Fit:
    """Users of one kind of name that fit in the limit, on a listener with `managers`."""

    names: str
    managers: int
    per_user: int  # answer bytes each user adds (all its managers' copies)
    base: int  # answer bytes with no user
    users: int  # the most that fit
    checked: int  # the answer's size with exactly `users` users, compiled


def answer_size(listener: Any, users: dict[str, str]) -> int:
    """Bytes of the hook's answer for `listener` with one `usersFrom` policy of `users`."""
    resolver = CredentialResolver(ResolverSettings(), {"vault": MemoryStore(users)})
    raw = [store_policy("capacity", NAMESPACE, "eg", "usersFrom", {"vault": {"path": PATH}})]
    result = compile_listener(listener, load_policies(raw, resolver))
    assert result.users == len(users), result.errors
    return int(api.PostHTTPListenerModifyResponse(listener=result.listener).ByteSize())


def users_with(name: Any, count: int) -> dict[str, str]:
    """`count` users named by `name(index)`, each with a ready `{SHA}` hash."""
    return {name(index): sha(f"password-{index}") for index in range(count)}


def fit(names: str, name: Any, listener: Any, managers: int, limit: int) -> Fit:
    small, large = (answer_size(listener, users_with(name, count)) for count in PROBES)
    per_user = (large - small) // (PROBES[1] - PROBES[0])
    base = small - per_user * PROBES[0]
    users = (limit - base) // per_user
    checked = answer_size(listener, users_with(name, users))
    assert checked <= limit < checked + per_user, (names, managers, checked, per_user)
    return Fit(names, managers, per_user, base, users, checked)


def run(context: Context) -> Section:
    section = Section(TITLE)
    listeners = {1: http_listener(), 3: https_listener("a", "b", "c")}
    fits = [
        fit(names, name, listener, managers, DEFAULT_LIMIT)
        for names, name in NAMES.items()
        for managers, listener in listeners.items()
    ]
    for item in fits:
        manager_word = "manager" if item.managers == 1 else "managers"
        section.rows += [
            Row(
                TITLE,
                f"bytes per user, {item.names}, {item.managers} HTTP connection {manager_word}",
                f"{item.per_user:,} B",
                note=f"with no user the answer is {size(item.base)}",
            ),
            Row(
                TITLE,
                f"users in 4 MiB, {item.names}, {item.managers} {manager_word}",
                f"{item.users:,}",
                note="checked: each count compiled, the answer at most 4 MiB and one more "
                "user over it",
            ),
        ]
    plain = {item.managers: item.users for item in fits if item.names.startswith("plain")}
    longest = {item.managers: item.users for item in fits if item.names.startswith("longest")}
    context.decisions.append(
        (
            "Users that fit in Envoy Gateway's default message size (4 MiB, while "
            "`maxMessageSize` is unset)",
            f"{plain[1]:,} with 11-byte names, {longest[1]:,} with {MAX_USERNAME_BYTES}-byte "
            "names, on a listener with one HTTP connection manager (plain HTTP). Each "
            "manager carries its own copy of the table: an HTTPS listener has one per "
            f"section, so with 3 sections {plain[3]:,} and {longest[3]:,}. Beyond that, "
            "raise `maxMessageSize` and `--max-message-size` together.",
            "section 6",
        )
    )
    section.notes.append(
        "One `usersFrom` policy whose users are ready `{SHA}` hashes, served from memory; "
        "listeners `tests.support.builders.http_listener()` (one default chain) and "
        "`https_listener('a', 'b', 'c')` (three chains). An htpasswd line is the name plus "
        "35 bytes (`:{SHA}`, 28 characters of base64, a newline). The request Envoy "
        "Gateway sends is far smaller here: a `usersFrom` policy is a reference; with "
        "plain `password` policies every user is a whole Kubernetes object in the request."
    )
    return section
