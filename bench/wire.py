"""Section 5: one corpus listener decoded, modified and encoded with two sets of Envoy types.

xds-protos (protobuf, what the server uses) against envoy-data-plane (betterproto2). The
modification is the hook's own kind of work: in every HTTP connection manager, unpack it,
insert a basic_auth filter before the router, and pack it again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from importlib import metadata

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from bench.context import Context
from bench.fixtures import HCM_URL
from bench.results import Row, Section, median, ratio, us

TITLE = "5. Wire types: decode, modify, encode one listener"
FILTER = "envoy.filters.http.basic_auth/bench"
USERS = "".join(f"user-{index}:{{SHA}}{'A' * 27}=\n" for index in range(10))


def with_protobuf(data: bytes) -> bytes:
    listener = listener_pb2.Listener.FromString(data)
    for chain in listener.filter_chains:
        for network in chain.filters:
            if network.typed_config.type_url != HCM_URL:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            network.typed_config.Unpack(hcm)
            added = hcm_pb2.HttpFilter(name=FILTER)
            added.typed_config.Pack(
                basic_auth_pb2.BasicAuth(users={"inline_string": USERS})  # type: ignore[arg-type]
            )
            hcm.http_filters.insert(len(hcm.http_filters) - 1, added)
            network.typed_config.Pack(hcm)
    return bytes(listener.SerializeToString())


def canonical(data: bytes) -> bytes:
    """The listener re-encoded by protobuf, managers unpacked and repacked deterministically.

    Two encoders may order or frame the bytes inside an Any differently for the same message.
    """
    listener = listener_pb2.Listener.FromString(data)
    for chain in listener.filter_chains:
        for network in chain.filters:
            if network.typed_config.type_url == HCM_URL:
                hcm = hcm_pb2.HttpConnectionManager()
                network.typed_config.Unpack(hcm)
                network.typed_config.value = hcm.SerializeToString(deterministic=True)
    return bytes(listener.SerializeToString(deterministic=True))


def with_betterproto() -> Callable[[bytes], bytes]:
    """envoy-data-plane's round trip (imported here: it is an optional dependency)."""
    from envoy_data_plane.envoy.config.core.v3 import DataSource  # noqa: PLC0415
    from envoy_data_plane.envoy.config.listener.v3 import Listener  # noqa: PLC0415
    from envoy_data_plane.envoy.extensions.filters.http.basic_auth.v3 import (  # noqa: PLC0415
        BasicAuth,
    )
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: PLC0415
        HttpConnectionManager,
        HttpFilter,
    )
    from envoy_data_plane.google.protobuf import Any  # noqa: PLC0415

    def round_trip(data: bytes) -> bytes:
        listener = Listener.parse(data)
        for chain in listener.filter_chains:
            for network in chain.filters:
                if network.typed_config is None or network.typed_config.type_url != HCM_URL:
                    continue
                hcm = HttpConnectionManager.parse(network.typed_config.value)
                added = HttpFilter(
                    name=FILTER,
                    typed_config=Any.pack(BasicAuth(users=DataSource(inline_string=USERS))),
                )
                hcm.http_filters.insert(len(hcm.http_filters) - 1, added)
                network.typed_config = Any.pack(hcm)
        return bytes(listener)

    return round_trip


def per_call(action: Callable[[bytes], bytes], data: bytes, calls: int) -> float:
    """Median seconds per call over 5 batches of `calls // 5`."""
    batch = max(1, calls // 5)
    times = []
    for _ in range(5):
        gc.collect()
        started = time.perf_counter()
        for _ in range(batch):
            action(data)
        times.append((time.perf_counter() - started) / batch)
    return median(times)


def run(context: Context) -> Section:
    section = Section(TITLE)
    if context.corpus is None:
        section.skipped = f"skipped: {context.corpus_problem}"
        return section
    try:
        betterproto = with_betterproto()
    except ImportError as error:
        section.skipped = (
            f"skipped: envoy-data-plane is not installed ({error}); pip install -e '.[bench]'"
        )
        return section
    data = context.corpus.https.SerializeToString()
    ours_out, theirs_out = with_protobuf(data), betterproto(data)
    identical = ours_out == theirs_out
    same = canonical(ours_out) == canonical(theirs_out)
    protobuf_time = per_call(with_protobuf, data, context.scale(5000, 500))
    betterproto_time = per_call(betterproto, data, context.scale(500, 50))
    section.rows += [
        Row(
            TITLE,
            "xds-protos (protobuf), per round trip",
            us(protobuf_time),
            us(betterproto_time),
            ratio(protobuf_time, betterproto_time),
            note="baseline: envoy-data-plane",
        ),
        Row(
            TITLE,
            "envoy-data-plane (betterproto2), per round trip",
            us(betterproto_time),
            us(protobuf_time),
            ratio(betterproto_time, protobuf_time),
            note="baseline: xds-protos",
        ),
    ]
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("protobuf", "xds-protos", "envoy-data-plane", "betterproto2")
    )
    section.notes.append(
        f"Listener `{context.corpus.https_id}` ({len(data):,} B, 3 HTTP connection managers): "
        "decode, unpack each manager, insert a basic_auth filter (10 users) before the "
        f"router, repack, encode. {versions}. The two results are byte-identical: "
        f"{'yes' if identical else 'no'}; equal once decoded (managers unpacked): "
        f"{'yes' if same else 'NO'}."
    )
    return section
