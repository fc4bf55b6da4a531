"""Which Gateway listener a virtual host belongs to, read the same way on both sides.

With `mergeGateways`, the Gateways of one GatewayClass share a plain-HTTP filter chain,
so a listener-level filter cannot tell their routes apart; the route configuration can.
Envoy Gateway (v1.6 and later, `internal/xds/translator/metadata.go`) puts filter
metadata on every virtual host naming the Gateway listener it was built for:

    metadata: {filter_metadata: {envoy-gateway: {resources: [
        {kind: Gateway, namespace: ..., name: ..., sectionName: ..., annotations: ...}]}}}

Two readers of that one fact are kept here, side by side, so they cannot disagree:

- `gateway_of` reads it in Python, for the Translation hook's per-virtual-host users
  (compiler/routes.py);
- `on_virtual_host_of` makes Envoy read it per request, as a matcher predicate (CEL over
  the `xds.virtual_host_metadata` attribute, Envoy 1.33 and later), so that an exemption
  or the credential removal of one Gateway applies on that Gateway's virtual hosts only.

Both look at the first resource only (Envoy Gateway puts the one origin resource there).
A virtual host without the metadata belongs to no Gateway: the CEL expression fails to
evaluate there, which matches nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from compiler.matching import CelBuilder, any_of, cel
from compiler.model import GatewayListener

METADATA_NAMESPACE = "envoy-gateway"
RESOURCES = "resources"
GATEWAY_KIND = "Gateway"


def gateway_of(virtual_host: Any) -> GatewayListener | None:
    """The Gateway listener named by a virtual host's Envoy Gateway metadata, if any."""
    if METADATA_NAMESPACE not in virtual_host.metadata.filter_metadata:
        return None
    fields = virtual_host.metadata.filter_metadata[METADATA_NAMESPACE].fields
    if RESOURCES not in fields or fields[RESOURCES].WhichOneof("kind") != "list_value":
        return None
    resources = fields[RESOURCES].list_value.values
    if not resources or resources[0].WhichOneof("kind") != "struct_value":
        return None
    origin = {
        key: value.string_value
        for key, value in resources[0].struct_value.fields.items()
        if value.WhichOneof("kind") == "string_value"
    }
    if origin.get("kind") != GATEWAY_KIND or "namespace" not in origin or "name" not in origin:
        return None
    return GatewayListener(origin["namespace"], origin["name"], origin.get("sectionName"))


def on_virtual_host_of(listeners: Collection[GatewayListener]) -> Any:
    """A predicate: the request's virtual host belongs to one of `listeners` (a listener
    whose section is None stands for every listener of its Gateway)."""
    return any_of(
        [
            cel(_belongs_to(listener))
            for listener in sorted(set(listeners), key=GatewayListener.sort_key)
        ]
    )


def _belongs_to(listener: GatewayListener) -> Any:
    """CEL: `xds.virtual_host_metadata.filter_metadata['envoy-gateway'].resources[0]`
    has kind Gateway, this namespace and name (and section, when given)."""
    build = CelBuilder()

    def origin_field(field: str) -> Any:
        metadata = build.select(build.ident("xds"), "virtual_host_metadata")
        namespaced = build.index(
            build.select(metadata, "filter_metadata"), build.string(METADATA_NAMESPACE)
        )
        origin = build.index(build.select(namespaced, RESOURCES), build.integer(0))
        return build.select(origin, field)

    wanted = {"kind": GATEWAY_KIND, "namespace": listener.namespace, "name": listener.name}
    if listener.section is not None:
        wanted["sectionName"] = listener.section
    return build.all_of(
        *(build.equals(origin_field(field), build.string(value)) for field, value in wanted.items())
    )
