"""What one team can write where the server reads: store values and policy objects, any shape.

Hypothesis strategies shared by the property test (tests/test_hook_never_fails.py), the fuzz
run (`make fuzz`, target `store-values`) and the soak's poisoned-secret phase. A team controls
the content under its own store prefix (the tenancy guard lets it through) and its own
policies; none of it may make a hook call answer an error status.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.support.vault import RawJson

SHA_LIKE = [
    "{SHA}",
    "{SHA}" + "é" * 28,
    "{SHA}" + "=" * 28,
    "{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=",
    "{sha}V7KtmQRNM3GXwMOf04I1aP+B5Io=",
    "$2y$10$" + "a" * 53,
    "$apr1$abc$" + "b" * 22,
    "abcdefghijklm",  # 13 characters: a DES crypt in htpasswd text
    "\x00",
    "\ud800",
    "a\nb",
    "a\r\nb",
]
ODD_TEXT = st.one_of(
    st.text(max_size=60),  # any Unicode: controls, surrogates, format characters
    st.sampled_from(SHA_LIKE),
    st.sampled_from(["", " ", "#", ":", "::", "\n", "{", "[", "null", "{}", "[]", '{"a":']).map(
        str
    ),
)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    ODD_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(ODD_TEXT, inner, max_size=4)
    ),
    max_leaves=16,
)


def deep_json(levels: int, opener: str = "[", closer: str = "]") -> str:
    return opener * levels + closer * levels


DEEP = st.integers(min_value=900, max_value=8_000)
HTPASSWD_LINES = st.lists(
    st.tuples(ODD_TEXT, st.sampled_from(["", ":", ":{SHA}", ": "]), ODD_TEXT).map("".join),
    max_size=6,
)
HTPASSWD_TEXT = st.tuples(
    HTPASSWD_LINES, st.sampled_from(["\n", "\r\n", "\x0b", "\u2028", "\x85"])
).map(lambda parts: parts[1].join(parts[0]))
HUGE_TEXT = st.sampled_from([4095, 4096, 4097, 40_000]).map(lambda n: "p" * n)

# One value at a key of a Vault secret (JSON of any shape, or nested past any parser's limit).
VAULT_VALUES = st.one_of(
    JSON_VALUES,
    HTPASSWD_TEXT,
    HUGE_TEXT,
    DEEP.map(lambda n: RawJson(deep_json(n))),
    DEEP.map(lambda n: RawJson(deep_json(n, '{"a":', "}").replace("}", "1}", 1))),
    st.dictionaries(ODD_TEXT, JSON_VALUES, max_size=20),
)
# A Vault KV secret's data: always an object at the top, anything below.
VAULT_DOCUMENTS = st.dictionaries(
    st.one_of(st.sampled_from(["password", "users"]), ODD_TEXT), VAULT_VALUES, max_size=5
)


def _fits_secrets_manager(text: str) -> bool:
    """What Secrets Manager stores at all: 1 to 65 536 bytes of UTF-8."""
    try:
        return 0 < len(text.encode("utf-8")) <= 65_536
    except UnicodeEncodeError:  # a lone surrogate: not text AWS would take
        return False


# An AWS SecretString: text, JSON of any shape as text, or nested past the parser's limit.
AWS_STRINGS = st.one_of(
    ODD_TEXT,
    HTPASSWD_TEXT,
    HUGE_TEXT,
    JSON_VALUES.map(json.dumps),
    st.dictionaries(ODD_TEXT, JSON_VALUES, max_size=20).map(json.dumps),
    DEEP.map(lambda n: '{"a":' * n + "1" + "}" * n),
    DEEP.map(deep_json),
).filter(_fits_secrets_manager)


@st.composite
def policy_objects(draw: st.DrawFn) -> bytes:
    """A ListenerContextExample of any shape: our kind with a spec of random fields and types,
    or random JSON, or random bytes."""
    spec = draw(
        st.dictionaries(
            st.sampled_from(
                ["targetRefs", "username", "password", "passwordFrom", "usersFrom",
                 "forwardUsernameHeader", "credentialsRevision", "other"]
            ),
            JSON_VALUES,
            max_size=6,
        )
    )  # fmt: skip
    metadata = draw(
        st.one_of(
            st.fixed_dictionaries({"name": st.just("odd"), "namespace": st.just("default")}),
            st.dictionaries(st.sampled_from(["name", "namespace", "uid"]), JSON_VALUES),
        )
    )
    document: Any = {
        "apiVersion": "example.extensions.io/v1alpha1",
        "kind": "ListenerContextExample",
        "metadata": metadata,
        "spec": spec,
    }
    shape = draw(st.sampled_from(["ours", "json", "bytes"]))
    if shape == "json":
        document = draw(JSON_VALUES)
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    return json.dumps(document).encode("utf-8", "surrogatepass")
