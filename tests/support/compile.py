"""One hook call in this process, through the real pipeline, and the users Envoy would admit.

For stories of the form "given these policies (and these stores), Envoy lets these users
in": `hook` parses, resolves and compiles the resources onto a listener exactly as the
server does for PostHTTPListenerModify, without gRPC; the readers take the listener that
comes back (or anything holding it as `.listener`: a ListenerResult, a gRPC answer,
`Answered`) and read our filter's table in each HTTP connection manager with Envoy's own
rules (`compiler.htpasswd.parse_like_envoy`). tests/support/hook.py makes the same call
over real gRPC and reads its answers with these readers.
"""

from __future__ import annotations

from typing import Any

from backends import CredentialResolver
from compiler.htpasswd import parse_like_envoy
from compiler.model import CompileOptions, UnprotectedMode
from compiler.pipeline import ListenerResult, Resolver, compile_listener, load_policies
from tests.support.builders import http_listener, managers, our_filter

Listener = Any  # envoy.config.listener.v3.Listener
ANY_NAMESPACE = "any-namespace"  # a chain name of no Gateway: every namespace's policy applies


def hook(
    *resources: bytes,
    listener: Listener | None = None,
    resolver: Resolver | None = None,
    mode: UnprotectedMode = UnprotectedMode.DENY,
) -> ListenerResult:
    """The hook applied to `listener` with these resources.

    By default a plain-HTTP listener whose chain is named after no Gateway, so that the
    policies of every namespace apply there (compiler/scope.py). Without a `resolver`, a
    new one that knows no store (plain-text policies only): nothing is reused from an
    earlier call.
    """
    policies = load_policies(resources, resolver or CredentialResolver())
    return compile_listener(
        http_listener(name=ANY_NAMESPACE) if listener is None else listener,
        policies,
        CompileOptions(unprotected=mode),
    )


def tables(answer: Any) -> list[dict[str, str]]:
    """The users (name -> {SHA} hash) of each HTTP connection manager, as Envoy reads them
    (asserts each manager holds exactly one filter of ours)."""
    return [parse_like_envoy(htpasswd_of(hcm)) for hcm in managers(_listener(answer))]


def users_of(answer: Any) -> dict[str, str]:
    """The users (name -> {SHA} hash) of the listener's one HTTP connection manager."""
    (table,) = tables(answer)
    return table


def admitted(answer: Any) -> set[str]:
    """The user names every HTTP connection manager admits (asserts there is one)."""
    found = tables(answer)
    assert found, "no HTTP connection manager in the answer"
    return set.intersection(*(set(table) for table in found))


def htpasswd(answer: Any) -> str:
    """Our filter's htpasswd text, as sent, in the listener's one HTTP connection manager."""
    (hcm,) = managers(_listener(answer))
    return htpasswd_of(hcm)


def htpasswd_of(hcm: Any) -> str:
    return str(our_filter(hcm).users.inline_string)


def _listener(answer: Any) -> Listener:
    """The listener itself, or the one a result or an answer holds."""
    return answer.listener if hasattr(answer, "listener") else answer
