"""Exemptions: requests that need no credentials, decided by Envoy from its own config.

A policy lists exemptions as Gateway API path matches (`Exact`, `PathPrefix`), each for
every method or for some. Our basic_auth filter is wrapped (compiler/matching.py
`skip_when`) so that Envoy skips it for a request that one exemption matches; the
predicate is built here.

The promise: an exemption never admits a request whose path, as the router and the
backend see it, is outside the exemption's match, whatever the connection manager's
normalisation settings. How it is kept:

- The predicate reads the `:path` header when the request reaches our filter: after the
  connection manager applied `normalize_path`, `merge_slashes` and
  `path_with_escaped_slashes_action`, so it sees what the router sees. (Envoy Gateway
  turns all three on, with UNESCAPE_AND_REDIRECT, unless a ClientTrafficPolicy says
  otherwise.)
- It admits only plain paths (`PLAIN_REQUEST_PATH`): every segment non-empty and made of
  RFC 3986 path characters other than '%' and ';', and no segment '.' or '..'; then an
  optional query, which is not part of the match. A path a backend could still
  normalise into something else (dot segments, doubled '/', '\\', percent-encoding, ';'
  parameters) is therefore never exempt: when Envoy did not normalise it, it needs
  credentials. A plain path is its own normal form, for Envoy and for any backend.
- Only then does it compare the path (before any '?') with each exemption, exactly and
  case-sensitively: `Exact /a` is `/a` alone; `PathPrefix /a` is `/a` and whatever
  continues with `/a/` (a trailing '/' in the value is ignored, as in Gateway API), never
  `/ab`. These are `exact`/`prefix` string matches, so the one regular expression is the
  same for every policy and stays far under RE2's program-size limit (52 of 100).

The matcher Envoy runs, for exemptions E1..En (`n` = 1 leaves out the `or`):

    and(:path ~ PLAIN_REQUEST_PATH,
        or(E1, ..., En))
    Ei = and(or(:path == v, :path starts with "v?", [PathPrefix:] :path starts with "v/"),
             [methods:] or(:method == m1, ...))

Per Gateway (the Translation hook, where Gateways share a filter chain), each Gateway's
exemptions are also conditioned on the request's virtual host belonging to it
(compiler/virtual_hosts.py); elsewhere they apply to the whole filter chain, the union of
the exemptions of the policies applied there.

`read_exemptions` checks a policy's `spec.exemptions` for the parser; the CRD states the
same rules (`CRD_SCHEMA`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiler.matching import all_of, any_of, header_is
from compiler.model import PATH_TYPES, Exemption, GatewayListener
from compiler.virtual_hosts import on_virtual_host_of

# Gateway API's HTTPMethod values, the only spelling accepted (upper case).
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
MAX_EXEMPTIONS = 16
MAX_PATH_LENGTH = 1024  # Gateway API's HTTPPathMatch.value limit

# RFC 3986 pchar without '%' (percent-encoding) and ';' (path parameters, which some
# backends strip before routing); '.' is allowed inside a segment but not as the whole
# segment '.' or '..'.
_FIRST = r"[A-Za-z0-9_~!$&'()*+,=:@-]"
_CHAR = r"[A-Za-z0-9_~!$&'()*+,=:@.-]"
_SEGMENT = rf"(?:\.?{_FIRST}|\.\.{_CHAR}){_CHAR}*"
PLAIN_PATH = rf"(?:/{_SEGMENT})+/?|/"
# What an exempt request's `:path` must be, in full (Envoy's regex matchers match the
# whole value): a plain path, then optionally '?' and a query. Clients cannot send '#'.
PLAIN_REQUEST_PATH = rf"(?:{PLAIN_PATH})(?:\?[^#]*)?"
_PLAIN_PATH = re.compile(PLAIN_PATH)

# The same rules as the CRD's schema for `spec.exemptions` (the API server reads `pattern`
# with RE2, and prunes unknown fields). `x-kubernetes-list-type: set` refuses a method
# named twice.
CRD_SCHEMA: dict[str, Any] = {
    "type": "array",
    "maxItems": MAX_EXEMPTIONS,
    "items": {
        "type": "object",
        "required": ["path"],
        "properties": {
            "path": {
                "type": "object",
                "required": ["type", "value"],
                "properties": {
                    "type": {"type": "string", "enum": list(PATH_TYPES)},
                    "value": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_PATH_LENGTH,
                        "pattern": f"^(?:{PLAIN_PATH})$",
                    },
                },
            },
            "methods": {
                "type": "array",
                "minItems": 1,
                "maxItems": len(METHODS),
                "x-kubernetes-list-type": "set",
                "items": {"type": "string", "enum": list(METHODS)},
            },
        },
    },
}


@dataclass(frozen=True)
class Problem:
    """What is wrong with one field of `spec.exemptions`, and what to do about it."""

    field: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}; {self.fix}"


def read_exemptions(
    value: object, field: str = "spec.exemptions"
) -> tuple[tuple[Exemption, ...], list[Problem]]:
    """`spec.exemptions` as Exemption values, and every problem found.

    A policy with any problem should be rejected whole, as the CRD would: leaving out
    only the bad entry would quietly demand credentials where its author expected none.
    """
    if value is None:
        return (), []
    if not isinstance(value, list):
        return (), [Problem(field, "is not a list", "list exemptions as {path: {type, value}}")]
    problems: list[Problem] = []
    if len(value) > MAX_EXEMPTIONS:
        problems.append(
            Problem(field, f"lists {len(value)} exemptions", f"list at most {MAX_EXEMPTIONS}")
        )
    exemptions = []
    for index, entry in enumerate(value[:MAX_EXEMPTIONS]):
        exemption, found = _read_entry(entry, f"{field}[{index}]")
        problems += found
        if exemption is not None and not found:
            exemptions.append(exemption)
    return tuple(exemptions), problems


def exemption_problems(exemption: Exemption, field: str = "exemption") -> list[Problem]:
    """What is wrong with one exemption's path and methods (empty when it can be used)."""
    problems = []
    if exemption.path_type not in PATH_TYPES:
        problems.append(
            Problem(f"{field}.path.type", "is not Exact or PathPrefix", "use one of them")
        )
    problem = path_problem(exemption.value)
    if problem is not None:
        problems.append(Problem(f"{field}.path.value", *problem))
    problems += _method_problems(exemption.methods, f"{field}.methods")
    return problems


def path_problem(value: str) -> tuple[str, str] | None:
    """(problem, fix) for an exemption path that could never be matched, or None."""
    fix = "write an absolute path as clients send it after normalisation, e.g. /healthz"
    if not value:
        return "is empty", fix
    if len(value) > MAX_PATH_LENGTH:
        return f"is {len(value)} characters long", f"use at most {MAX_PATH_LENGTH}"
    if not value.startswith("/"):
        return "is not an absolute path (it must start with '/')", fix
    if "?" in value:
        return "holds a query ('?'), which a path match never sees", "leave the query out"
    if "#" in value:
        return "holds a fragment ('#'), which clients never send", "leave the fragment out"
    if "%" in value:
        return (
            "holds a percent-encoded character: a path with one always needs credentials",
            "exempt a path without '%'",
        )
    if "//" in value:
        return "holds an empty segment ('//')", fix
    if any(segment in (".", "..") for segment in value.split("/")):
        return "holds a '.' or '..' segment", fix
    if not _PLAIN_PATH.fullmatch(value):
        odd = sorted({c for c in value if not re.fullmatch(_CHAR, c) and c != "/"})[:5]
        return (
            f"holds {', '.join(ascii(c) for c in odd)}: such a path always needs credentials",
            "use letters, digits and - . _ ~ ! $ & ' ( ) * + , = : @ between the '/'",
        )
    return None


def filters_see_the_forwarded_path(manager: Any) -> bool:
    """Whether an HTTP connection manager's filters see the path it forwards upstream.

    `path_normalization_options.http_filter_transformation` makes Envoy normalise the path
    for filters only: a request could then be exempt by a path the backend never
    receives. Envoy Gateway never sets it; where it is set, apply no exemption (the filter
    unwrapped: everything needs credentials).
    """
    return not manager.path_normalization_options.http_filter_transformation.operations


def exempt_predicate(
    exemptions: Sequence[Exemption] = (),
    per_gateway: Mapping[GatewayListener, Sequence[Exemption]] | None = None,
) -> Any | None:
    """The predicate of requests that need no credentials, or None when nothing is exempt.

    `exemptions` apply on the whole filter chain; `per_gateway` ones only on virtual hosts
    of that Gateway listener (a listener whose section is None: every listener of that
    Gateway). Deterministic: the same exemptions in any order give the same predicate.
    """
    scopes: list[Any | None] = []
    if exemptions:
        scopes.append(_any_exemption(exemptions))
    for listener in sorted(per_gateway or {}, key=GatewayListener.sort_key):
        its_own = (per_gateway or {})[listener]
        if its_own:
            on_its_hosts = on_virtual_host_of([listener])
            matched = _any_exemption(its_own)
            scopes.append(on_its_hosts if matched is None else all_of([on_its_hosts, matched]))
    if not scopes:
        return None
    plain = header_is(":path", regex=PLAIN_REQUEST_PATH)
    if any(scope is None for scope in scopes):  # some exemption is every path, everywhere
        return plain
    return all_of([plain, any_of(scopes)])


def _any_exemption(exemptions: Sequence[Exemption]) -> Any | None:
    """One exemption of the set matches (None: every plain request does)."""
    alternatives = [_one_exemption(exemption) for exemption in sorted(set(exemptions))]
    if any(alternative is None for alternative in alternatives):
        return None
    return any_of(alternatives)


def _one_exemption(exemption: Exemption) -> Any | None:
    parts = []
    value = exemption.value
    if exemption.path_type == "Exact":
        parts.append(
            any_of([header_is(":path", exact=value), header_is(":path", prefix=value + "?")])
        )
    elif value.rstrip("/"):  # PathPrefix: a trailing '/' is ignored; '/' is every path
        base = value.rstrip("/")
        parts.append(
            any_of(
                [
                    header_is(":path", exact=base),
                    header_is(":path", prefix=base + "?"),
                    header_is(":path", prefix=base + "/"),
                ]
            )
        )
    if exemption.methods:
        methods = sorted(set(exemption.methods))
        parts.append(any_of([header_is(":method", exact=method) for method in methods]))
    return all_of(parts) if parts else None


def _read_entry(entry: object, field: str) -> tuple[Exemption | None, list[Problem]]:
    shape = "write {path: {type: Exact|PathPrefix, value: /...}, methods: [GET, ...]}"
    if not isinstance(entry, dict):
        return None, [Problem(field, "is not an object", shape)]
    unknown = sorted(str(key) for key in set(entry) - {"path", "methods"})
    if unknown:
        named = ", ".join(ascii(key[:40]) for key in unknown[:3])
        return None, [Problem(field, f"has unknown fields ({named})", shape)]
    path = entry.get("path")
    if not isinstance(path, dict) or set(path) - {"type", "value"}:
        return None, [Problem(f"{field}.path", "is not {type, value}", shape)]
    path_type, value = path.get("type"), path.get("value")
    if not isinstance(value, str):
        return None, [Problem(f"{field}.path.value", "is not a string", "write an absolute path")]
    if path_type not in PATH_TYPES:
        return None, [
            Problem(f"{field}.path.type", "is not Exact or PathPrefix", "use one of them")
        ]
    methods = entry.get("methods")
    if methods is not None and (
        not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)
    ):
        return None, [Problem(f"{field}.methods", "is not a list of strings", shape)]
    exemption = Exemption(path_type, value, tuple(methods or ()))
    found = exemption_problems(exemption, field)
    if methods == []:
        found.append(
            Problem(
                f"{field}.methods",
                "is empty",
                "list methods, or leave the field out for every method",
            )
        )
    return exemption, found


def _method_problems(methods: Sequence[str], field: str) -> list[Problem]:
    problems = []
    for method in methods:
        if method.upper() in METHODS and method not in METHODS:
            problem = f"holds {method!r}: methods are upper case"
            problems.append(Problem(field, problem, f"write {method.upper()}"))
        elif method not in METHODS:
            problems.append(Problem(field, "holds an unknown method", f"use {', '.join(METHODS)}"))
    if len(set(methods)) != len(methods):
        problems.append(Problem(field, "names a method twice", "name each method once"))
    return problems
