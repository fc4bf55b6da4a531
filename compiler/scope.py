"""Which policies apply to which filter chain.

Envoy Gateway merges the policies of every Gateway listener that shares an Envoy
listener. On HTTPS (and HTTP/3) each Gateway listener keeps a filter chain of its own,
named `<namespace>/<gateway>/<section>`: there a policy whose targetRef names a section
applies to that section's chain only, so one section's users are not admitted on
another. Plain HTTP sections share the default filter chain, named after the first
Gateway listener on the port: every policy of that Gateway's namespace applies there.
A policy of another namespace reaches that chain only when Gateways are merged
(EnvoyProxy `mergeGateways`): it is not applied there, since a listener-level filter
cannot tell the other Gateway's routes from this one's (docs/policies.md). A chain whose
name is not of that form gets every policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.model import Policy


@dataclass(frozen=True)
class ChainName:
    namespace: str
    gateway: str
    section: str

    @classmethod
    def parse(cls, name: str | None) -> ChainName | None:
        parts = (name or "").split("/")
        if len(parts) != 3 or not all(parts):
            return None
        return cls(*parts)


def applies_to_chain(policy: Policy, chain_name: str | None, is_default: bool) -> bool:
    """Whether `policy` governs the filter chain called `chain_name`."""
    chain = ChainName.parse(chain_name)
    if chain is None:
        return True
    if policy.ref.namespace != chain.namespace:
        return False
    if is_default:
        return True
    return any(
        target.kind == "Gateway"
        and target.name == chain.gateway
        and target.section_name in (None, chain.section)
        for target in policy.targets
    )


def of_another_namespace(policy: Policy, chain_name: str | None, is_default: bool) -> bool:
    """Whether `policy` reaches a shared default chain named after another namespace's
    Gateway: Gateways merged on one plain-HTTP port, where it is not applied."""
    chain = ChainName.parse(chain_name)
    return is_default and chain is not None and policy.ref.namespace != chain.namespace
