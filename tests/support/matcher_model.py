"""A Python model of how Envoy evaluates the matchers the compiler emits, and the meaning
they must have.

`skips(http_filter, request)` answers what Envoy answers for a filter wrapped by
compiler/matching.py `skip_when`: is the filter skipped for this request? It evaluates the
emitted protobuf itself (header inputs with exact/prefix/whole-value RE2 matches, and/or/
not, and the CEL predicates over the virtual host's metadata), so it models what is
emitted, not what was meant. Tests check it against the real Envoy on samples, then use
it on many more examples than Envoy could be asked.

`gateway_api_match` and `canonical` are the meaning, written independently of the
compiler: Gateway API's path match, and the path a backend would make of a request path
(percent-decoding, '\\' as '/', ';' parameters dropped, slashes merged, dot segments
resolved).
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.type.matcher.v3 import http_inputs_pb2
from xds.type.matcher.v3 import cel_pb2, string_pb2

from compiler.exemptions import Exemption
from compiler.matching import unwrap
from compiler.virtual_hosts import GatewayListener


@dataclass(frozen=True)
class Request:
    """What the filter sees: `:path` after the connection manager, the method, other
    headers (lower-case names), and the Gateway listener of the virtual host it routes to."""

    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    virtual_host_of: GatewayListener | None = None

    def header(self, name: str) -> str | None:
        if name == ":path":
            return self.path
        if name == ":method":
            return self.method
        return self.headers.get(name)


class _NoValue(Exception):
    """CEL evaluation failed (an absent attribute): Envoy's CEL matcher answers no match."""


def skips(http_filter: Any, request: Request) -> bool:
    """Whether Envoy skips `http_filter` (wrapped or not) for `request`."""
    _inner, predicate = unwrap(http_filter)
    return predicate is not None and matches(predicate, request)


def matches(predicate: Any, request: Request) -> bool:
    kind = predicate.WhichOneof("match_type")
    if kind == "or_matcher":
        return any(matches(p, request) for p in predicate.or_matcher.predicate)
    if kind == "and_matcher":
        return all(matches(p, request) for p in predicate.and_matcher.predicate)
    if kind == "not_matcher":
        return not matches(predicate.not_matcher, request)
    single = predicate.single_predicate
    if single.HasField("custom_match"):
        matcher = cel_pb2.CelMatcher()
        assert single.custom_match.typed_config.Unpack(matcher)
        try:
            return _cel(matcher.expr_match.cel_expr_parsed.expr, _activation(request)) is True
        except _NoValue:
            return False
    header_input = http_inputs_pb2.HttpRequestHeaderMatchInput()
    assert single.input.typed_config.Unpack(header_input), single.input.typed_config.type_url
    value = request.header(header_input.header_name)
    return value is not None and _string_matches(single.value_match, value)


def _string_matches(matcher: Any, value: str) -> bool:
    assert isinstance(matcher, string_pb2.StringMatcher) and not matcher.ignore_case
    kind = matcher.WhichOneof("match_pattern")
    if kind == "exact":
        return value == matcher.exact
    if kind == "prefix":
        return value.startswith(matcher.prefix)
    if kind == "safe_regex":
        return re.fullmatch(matcher.safe_regex.regex, value) is not None
    raise AssertionError(f"the compiler emits no {kind} matcher")


def _activation(request: Request) -> dict[str, Any]:
    """The attributes our CEL reads: `xds.virtual_host_metadata` as Envoy Gateway sets it."""
    host: dict[str, Any] = {}
    listener = request.virtual_host_of
    if listener is not None:
        origin = {"kind": "Gateway", "namespace": listener.namespace, "name": listener.name}
        if listener.section is not None:
            origin["sectionName"] = listener.section
        host = {"filter_metadata": {"envoy-gateway": {"resources": [origin]}}}
    return {"xds": {"virtual_host_metadata": host}}


def _cel(expr: Any, activation: dict[str, Any]) -> Any:
    kind = expr.WhichOneof("expr_kind")
    if kind == "ident_expr":
        return _lookup(activation, expr.ident_expr.name)
    if kind == "select_expr":
        return _lookup(_cel(expr.select_expr.operand, activation), expr.select_expr.field)
    if kind == "const_expr":
        constant = expr.const_expr
        return getattr(constant, constant.WhichOneof("constant_kind"))
    assert kind == "call_expr", kind
    function, args = expr.call_expr.function, expr.call_expr.args
    if function == "_&&_":
        return all(_cel(arg, activation) is True for arg in args)
    left, right = (_cel(arg, activation) for arg in args)
    if function == "_==_":
        return left == right
    assert function == "_[_]", function
    return _lookup(left, right)


def _lookup(container: Any, key: Any) -> Any:
    try:
        return container[key]
    except (KeyError, IndexError, TypeError):
        raise _NoValue(key) from None


# -- the meaning ---------------------------------------------------------------------------


def gateway_api_match(exemption: Exemption, path: str) -> bool:
    """Gateway API's HTTPPathMatch on a path without its query, and the methods."""
    if exemption.path_type == "Exact":
        return path == exemption.value
    prefix = exemption.value.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or (not prefix and path.startswith("/"))


def admits(exemption: Exemption, path: str, method: str) -> bool:
    return gateway_api_match(exemption, path) and (
        not exemption.methods or method in exemption.methods
    )


def canonical(path: str) -> str:
    """What a lenient backend makes of a request path (no query): it decodes
    percent-encoding, reads '\\' as '/', drops ';' parameters, merges slashes and resolves
    dot segments. A path that is its own canonical form means the same to every reader."""
    decoded = urllib.parse.unquote(path, errors="replace").replace("\\", "/")
    segments = [segment.partition(";")[0] for segment in decoded.split("/")]
    merged = re.sub("/+", "/", "/".join(segments))
    resolved = posixpath.normpath(merged) if merged else "/"
    if resolved.startswith("//"):
        resolved = "/" + resolved.lstrip("/")
    if merged.endswith(("/", "/.", "/..")) and resolved != "/":
        resolved += "/"
    return resolved


def promise_holds(exemptions: Sequence[Exemption], path: str, method: str) -> bool:
    """What an exempt request must be: its path before any query is its own canonical form,
    holds no '%', and one exemption admits it with this method."""
    plain = path.partition("?")[0]
    return (
        "%" not in plain
        and canonical(plain) == plain
        and any(admits(e, plain, method) for e in exemptions)
    )
