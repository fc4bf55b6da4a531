"""Hypothesis strategies for exemptions and the requests that try to get past them.

`exemption_sets`: one to four usable exemptions (Exact or PathPrefix, plain paths made of
every character a path segment may hold, with or without methods). `requests_near`: paths
close to them, an exemption's value with a path trick before, inside or after it (dot
segments, '%2e', '%2F', doubled '/', '\\', ';', a query, a fragment, a NUL, non-ASCII),
and random text. `gateways`: Gateway listeners of two namespaces, with and without a
section.
"""

from __future__ import annotations

from hypothesis import strategies as st

from compiler.exemptions import METHODS, Exemption
from compiler.virtual_hosts import GatewayListener

SEGMENT_CHARS = "abz09-._~!$&'()*+,=:@"
segments = st.text(alphabet=SEGMENT_CHARS, min_size=1, max_size=5).filter(
    lambda s: s not in (".", "..")
)
values = st.lists(segments, max_size=3).map(lambda parts: "/" + "/".join(parts)) | st.lists(
    segments, min_size=1, max_size=3
).map(lambda parts: "/" + "/".join(parts) + "/")
exemption_sets = st.lists(
    st.builds(
        Exemption,
        st.sampled_from(["Exact", "PathPrefix"]),
        values,
        st.lists(st.sampled_from(METHODS), max_size=2, unique=True).map(tuple),
    ),
    min_size=1,
    max_size=4,
)
TRICKS = ["", "/", "x", "/x", "/../admin", "/./x", "//x", "/.", "/..", "%2e", "/%2e%2e/x",
          "%2F..%2Fx", "\\..\\x", ";x", ";/../x", "?q=1", "?q=/../x", "#x", "/x?y#z", "/x%00",
          "/é", "/x/..", "/...", "/ x"]  # fmt: skip
METHOD_SAMPLE = st.sampled_from([*METHODS, "get", "PROPFIND"])
gateways = st.builds(
    GatewayListener,
    st.sampled_from(["team-a", "team-b"]),
    st.sampled_from(["gw", "other"]),
    st.sampled_from([None, "http", "https"]),
)


def requests_near(exemptions: list[Exemption]) -> st.SearchStrategy[str]:
    """Paths close to an exemption (its value with a trick before, inside or after it), and
    random text."""
    anchors = st.sampled_from([e.value for e in exemptions])
    tricks = st.sampled_from(TRICKS)
    return st.one_of(
        st.builds(lambda a, t, u: a + t + u, anchors, tricks, tricks),
        st.builds(lambda t, a: t + a, tricks, anchors),
        st.builds(lambda a, t, n: a[:n] + t + a[n:], anchors, tricks, st.integers(0, 12)),
        st.text(alphabet="/.a%2eF;?#\\é", max_size=14),
        st.text(max_size=14),
    )
