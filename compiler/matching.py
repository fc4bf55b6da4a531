"""Envoy's generic matching API: the few matcher shapes this project emits, as protobuf.

Envoy skips an HTTP filter for the requests a matcher selects when the filter's config is
wrapped in `envoy.extensions.common.matching.v3.ExtensionWithMatcher` whose `xds_matcher`
maps a predicate to the `SkipFilter` action. Everything is decided by Envoy, from its
config: no ext_authz service, no Lua, no Wasm. Facts this module relies on, checked
against Envoy 1.36 to 1.40 (tests/test_request_control_envoy.py):

- The wrapper evaluates the predicate when the request headers reach the filter, after
  the HTTP connection manager normalised the path: a header input on `:path` sees the
  path (with its query) exactly as the router will.
- Without any matcher the wrapper skips the filter for every request, so `skip_when` never
  wraps without a predicate.
- The wrapped filter keeps its name: per-route config (`typed_per_filter_config`) keyed by
  that name still reaches it, and Envoy Gateway's ranking (compiler/filters.py, which
  falls back to the name when the type is not an HTTP filter's) still places it.

Predicates are `xds.type.matcher.v3.Matcher.MatcherList.Predicate` messages; `all_of`
and `any_of` leave out the and/or level for a single predicate (Envoy requires two or
more there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cel.expr import syntax_pb2  # type: ignore[import-untyped]  # xds-protos ships no stubs
from envoy.config.core.v3 import extension_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.common.matcher.action.v3 import skip_action_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.type.matcher.v3 import http_inputs_pb2
from xds.type.matcher.v3 import cel_pb2, matcher_pb2, string_pb2
from xds.type.matcher.v3 import http_inputs_pb2 as xds_http_inputs_pb2

Predicate = matcher_pb2.Matcher.MatcherList.Predicate
WRAPPER_TYPE = extension_matcher_pb2.ExtensionWithMatcher.DESCRIPTOR.full_name


def header_is(
    name: str, *, exact: str | None = None, prefix: str | None = None, regex: str | None = None
) -> Any:
    """The request header `name` (`:path`, `:method`, `authorization`...) matches one of:
    `exact`, `prefix` (both case-sensitive) or `regex` (RE2, which must match the whole
    value). A missing header matches nothing."""
    given = {"exact": exact, "prefix": prefix, "regex": regex}
    chosen = [key for key, value in given.items() if value is not None]
    if len(chosen) != 1:
        raise ValueError(f"give exactly one of exact, prefix, regex, not {chosen}")
    value_match = string_pb2.StringMatcher()
    if exact is not None:
        value_match.exact = exact
    elif prefix is not None:
        value_match.prefix = prefix
    else:
        value_match.safe_regex.google_re2.SetInParent()
        value_match.safe_regex.regex = str(regex)
    predicate = Predicate()
    single = predicate.single_predicate
    single.input.name = "request-header"
    single.input.typed_config.Pack(
        http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=name), deterministic=True
    )
    single.value_match.CopyFrom(value_match)
    return predicate


def cel(expression: Any) -> Any:
    """A CEL expression (a parsed `cel.expr.Expr`) over the request's attributes is true.

    An expression that fails to evaluate (an attribute that is absent) matches nothing.
    """
    predicate = Predicate()
    single = predicate.single_predicate
    single.input.name = "request-attributes"
    single.input.typed_config.Pack(
        xds_http_inputs_pb2.HttpAttributesCelMatchInput(), deterministic=True
    )
    matcher = cel_pb2.CelMatcher()
    matcher.expr_match.cel_expr_parsed.expr.CopyFrom(expression)
    single.custom_match.name = "cel"
    single.custom_match.typed_config.Pack(matcher, deterministic=True)
    return predicate


def all_of(predicates: Sequence[Any]) -> Any:
    """True when every predicate is (one predicate is returned as it is)."""
    return _combine(predicates, "and_matcher")


def any_of(predicates: Sequence[Any]) -> Any:
    """True when one of the predicates is (one predicate is returned as it is)."""
    return _combine(predicates, "or_matcher")


def negate(predicate: Any) -> Any:
    result = Predicate()
    result.not_matcher.CopyFrom(predicate)
    return result


def skip_when(http_filter: Any, predicate: Any | None) -> Any:
    """`http_filter` wrapped so that Envoy skips it for requests `predicate` selects.

    With no predicate the filter is returned as it is (a copy): a wrapper without a
    matcher would skip the filter for every request.
    """
    result = http_connection_manager_pb2.HttpFilter()
    result.CopyFrom(http_filter)
    if predicate is None:
        return result
    wrapper = extension_matcher_pb2.ExtensionWithMatcher()
    wrapper.extension_config.CopyFrom(
        extension_pb2.TypedExtensionConfig(
            name=http_filter.name, typed_config=http_filter.typed_config
        )
    )
    field_matcher = wrapper.xds_matcher.matcher_list.matchers.add()
    field_matcher.predicate.CopyFrom(predicate)
    action = field_matcher.on_match.action
    action.name = "skip"
    action.typed_config.Pack(skip_action_pb2.SkipFilter(), deterministic=True)
    result.typed_config.Pack(wrapper, deterministic=True)
    return result


def unwrap(http_filter: Any) -> tuple[Any, Any | None]:
    """The filter `skip_when` wrapped and its predicate; an unwrapped filter and None."""
    if http_filter.typed_config.type_url.rpartition("/")[2] != WRAPPER_TYPE:
        return http_filter, None
    wrapper = extension_matcher_pb2.ExtensionWithMatcher()
    http_filter.typed_config.Unpack(wrapper)
    inner = http_connection_manager_pb2.HttpFilter(name=http_filter.name)
    inner.typed_config.CopyFrom(wrapper.extension_config.typed_config)
    matchers = wrapper.xds_matcher.matcher_list.matchers
    return inner, (matchers[0].predicate if len(matchers) == 1 else None)


def _combine(predicates: Sequence[Any], kind: str) -> Any:
    if not predicates:
        raise ValueError("no predicate to combine")
    if len(predicates) == 1:
        return predicates[0]
    result = Predicate()
    getattr(result, kind).predicate.extend(predicates)
    return result


class CelBuilder:
    """Builds parsed CEL expressions (`cel.expr.Expr`) node by node, with unique ids.

    Envoy 1.36 to 1.40 evaluate a parsed expression in `cel_expr_parsed`; none of them
    accepts the expression as text (`cel_expr_string`).
    """

    def __init__(self) -> None:
        self._next_id = 0

    def _expr(self) -> Any:
        self._next_id += 1
        return syntax_pb2.Expr(id=self._next_id)

    def ident(self, name: str) -> Any:
        expr = self._expr()
        expr.ident_expr.name = name
        return expr

    def select(self, operand: Any, field: str) -> Any:
        expr = self._expr()
        expr.select_expr.operand.CopyFrom(operand)
        expr.select_expr.field = field
        return expr

    def string(self, value: str) -> Any:
        expr = self._expr()
        expr.const_expr.string_value = value
        return expr

    def integer(self, value: int) -> Any:
        expr = self._expr()
        expr.const_expr.int64_value = value
        return expr

    def call(self, function: str, *args: Any) -> Any:
        expr = self._expr()
        expr.call_expr.function = function
        expr.call_expr.args.extend(args)
        return expr

    def index(self, operand: Any, key: Any) -> Any:
        return self.call("_[_]", operand, key)

    def equals(self, left: Any, right: Any) -> Any:
        return self.call("_==_", left, right)

    def all_of(self, *operands: Any) -> Any:
        result = operands[0]
        for operand in operands[1:]:
            result = self.call("_&&_", result, operand)
        return result
