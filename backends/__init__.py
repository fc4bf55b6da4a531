"""Step 2 of the pipeline, resolve: where a policy's passwords come from.

The policy itself (plain text, as in the seed), HashiCorp Vault or AWS Secrets Manager,
behind one cache shared by every hook call. A credential that cannot be resolved denies
that policy's users (fail closed); see backends/resolver.py.
"""

from backends.resolver import CredentialResolver, ResolverSettings

__all__ = ["CredentialResolver", "ResolverSettings"]
