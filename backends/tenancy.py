"""The tenancy guard: a policy reads only secrets under a path derived from its namespace.

Without it, anyone allowed to create a policy in any namespace could make the server
read (and admit users from) any secret the server itself can read. The templates are
server settings with `{namespace}` in them; references are checked before any request.
"""

from __future__ import annotations

import re
import string

from compiler.model import AwsSecretRef, StoreRef, VaultRef

DEFAULT_VAULT_TEMPLATE = "secret/data/gateways/{namespace}/"
DEFAULT_AWS_TEMPLATE = "gateways/{namespace}/"

_VAULT_SEGMENT = re.compile(r"[A-Za-z0-9_@+=,.-]+")
_AWS_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]+")
_AWS_ARN = re.compile(r"arn:[a-z-]+:secretsmanager:[a-z0-9-]*:[0-9]*:secret:(?P<name>.+)")


def check_template(template: str) -> None:
    """Refuse at start-up a template that could not confine a namespace, or not render."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        fields = set()
    if fields != {"namespace"} or not template.endswith("/"):
        raise ValueError(
            f"tenancy template {template!r} must contain {{namespace}} (and no other "
            "placeholder) and end with '/'"
        )


def tenancy_problem(
    ref: StoreRef, namespace: str, vault_template: str, aws_template: str
) -> str | None:
    """Why `ref` is outside what a policy in `namespace` may read, or None."""
    if isinstance(ref, VaultRef):
        return _vault_problem(ref.path, vault_template.format(namespace=namespace))
    return _aws_problem(ref, aws_template.format(namespace=namespace))


def _vault_problem(path: str, prefix: str) -> str | None:
    segments = path.split("/")
    if any(
        segment in ("", ".", "..") or not _VAULT_SEGMENT.fullmatch(segment) for segment in segments
    ):
        return "is not a plain Vault path (empty, '.' or '..' segments, or unusual characters)"
    if not path.startswith(prefix) or path == prefix:
        return f"is outside {prefix}, the Vault paths this policy's namespace may read"
    return None


def _aws_problem(ref: AwsSecretRef, prefix: str) -> str | None:
    match = _AWS_ARN.fullmatch(ref.secret_id)
    name = match.group("name") if match else ref.secret_id
    if not _AWS_NAME.fullmatch(name):
        return "is not a valid Secrets Manager name or ARN"
    if not name.startswith(prefix) or name == prefix:
        return f"is outside {prefix}, the secret names this policy's namespace may read"
    return None
