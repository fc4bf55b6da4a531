"""Which hash scheme a stored value is in: a ready `{SHA}` hash, another hash, or a password.

A store may hold a hash instead of the password, so that a team keeps even the password
out of the gateway's reach. Envoy verifies `{SHA}` only: any other recognised scheme
(bcrypt, apr1, crypt, salted LDAP schemes, ...) is named in an error instead of being
hashed again as if it were a password.
"""

from __future__ import annotations

import re

from passlib import hash as passlib_hash

from compiler.htpasswd import SHA_PREFIX, SHA_SCHEME

# Schemes libpass recognises with certainty; a value of one of them is a hash, not a password.
_KNOWN_SCHEMES = (
    "bcrypt",
    "bcrypt_sha256",
    "apr_md5_crypt",
    "md5_crypt",
    "sha256_crypt",
    "sha512_crypt",
    "ldap_salted_sha1",
    "ldap_salted_sha256",
    "ldap_salted_sha512",
    "ldap_md5",
    "ldap_salted_md5",
    "argon2",
    "scram",
)
_MODULAR_CRYPT = re.compile(r"^\$[0-9a-z-]{1,16}\$")  # $id$..., the crypt(3) family
_LDAP_SCHEME = re.compile(r"^\{[A-Z0-9-]{2,16}\}")  # {SSHA}, {CRYPT}, ...


def scheme_of(value: str) -> str | None:
    """The hash scheme a stored value is in, or None for a plain password."""
    if not value or value[0] not in "${":
        return None  # every hash format starts with '$' or '{': the common case is fast
    if value.startswith(SHA_PREFIX):
        return SHA_SCHEME
    for name in _KNOWN_SCHEMES:
        if getattr(passlib_hash, name).identify(value):
            return name
    if _MODULAR_CRYPT.match(value):
        return "crypt"
    match = _LDAP_SCHEME.match(value)
    return f"LDAP {match.group(0)}" if match else None
