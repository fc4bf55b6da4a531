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
from compiler.model import CredentialKind

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
# {SSHA}, {CRYPT}, ... and a lower-case {sha}, which Envoy would not take for {SHA}
_LDAP_SCHEME = re.compile(r"^\{[A-Za-z0-9-]{2,16}\}")
# crypt(3) without a '$' prefix: DES (`htpasswd -d`) and BSDi. Only in htpasswd text can
# such a value be told from a password: a 13-character password looks the same.
_TRADITIONAL_CRYPT = re.compile(r"[./0-9A-Za-z]{13}|_[./0-9A-Za-z]{19}")
UNKNOWN_SCHEME = "unknown"

# What operators call each scheme (passlib's names are internal), for messages.
_LABELS = {
    "bcrypt_sha256": "bcrypt-sha256",
    "apr_md5_crypt": "apr1 ($apr1$)",
    "md5_crypt": "MD5-crypt ($1$)",
    "sha256_crypt": "SHA-256-crypt ($5$)",
    "sha512_crypt": "SHA-512-crypt ($6$)",
    "ldap_salted_sha1": "{SSHA}",
    "ldap_salted_sha256": "{SSHA256}",
    "ldap_salted_sha512": "{SSHA512}",
    "ldap_md5": "{MD5}",
    "ldap_salted_md5": "{SMD5}",
    "scram": "SCRAM",
    UNKNOWN_SCHEME: "not in any known scheme (htpasswd text holds hashes, not passwords)",
}


def scheme_label(scheme: str) -> str:
    """The scheme as an operator would name it ("apr1 ($apr1$)", not "apr_md5_crypt")."""
    return _LABELS.get(scheme, scheme)


def scheme_of(value: str, kind: CredentialKind = CredentialKind.STORED) -> str | None:
    """The hash scheme a stored value is in, or None for a plain password.

    From htpasswd text (`HASHED`) every value is a hash, so a value in no scheme Envoy
    verifies is never taken for a password.
    """
    if kind is CredentialKind.HASHED:
        return _scheme_of_hash(value)
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


def _scheme_of_hash(value: str) -> str:
    scheme = scheme_of(value)
    if scheme is not None:
        return scheme
    return "crypt" if _TRADITIONAL_CRYPT.fullmatch(value) else UNKNOWN_SCHEME
