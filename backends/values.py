"""What a stored secret holds, turned into credentials (pure; no I/O).

A stored value is a plain password, or a ready `{SHA}` hash that is used as is (so a team
can keep even the password out of the gateway's reach). Any other hash (bcrypt, apr1,
crypt, salted LDAP schemes, ...) is recognised and reported, because Envoy verifies
`{SHA}` only. `usersFrom` reads many users from one secret: a map of user name to
password or hash, or htpasswd text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from passlib import hash as passlib_hash

from compiler.gcpause import paused_gc
from compiler.htpasswd import SHA_PREFIX, SHA_SCHEME
from compiler.model import AwsSecretRef, Credential, Secret, StoreRef, VaultRef

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


class StoredValueError(ValueError):
    """The secret's content does not have the shape the reference asks for (no value quoted)."""


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


def password_credential(document: Any, ref: StoreRef, username: str, field: str) -> Credential:
    """`passwordFrom`: the one value the reference points at, for `username`."""
    value = _value_at(document, ref, ref.key)
    if not isinstance(value, str):
        raise StoredValueError(f"the value at {_where(ref)} is not a string")
    return Credential(username, Secret(value), "spec.username", field, scheme_of(value))


def user_credentials(document: Any, ref: StoreRef, field: str) -> list[Credential]:
    """`usersFrom`: every user of the secret (a user -> value map, or htpasswd text)."""
    content = _value_at(document, ref, ref.key)
    if isinstance(content, str) and isinstance(ref, AwsSecretRef) and ref.key is None:
        content = _json_object_or_text(content)
    if isinstance(content, Mapping):
        users = list(content.items())
    elif isinstance(content, str):
        users = _htpasswd_lines(content, ref)
    else:
        raise StoredValueError(f"the value at {_where(ref)} is neither a map nor htpasswd text")
    with paused_gc(len(users)):
        return _credentials(users, ref, field)


def _credentials(users: list[tuple[Any, Any]], ref: StoreRef, field: str) -> list[Credential]:
    credentials = []
    for name, value in users:
        if not isinstance(value, str):
            raise StoredValueError(f"the value for a user at {_where(ref)} is not a string")
        credentials.append(Credential(str(name), Secret(value), field, field, scheme_of(value)))
    return credentials


def _value_at(document: Any, ref: StoreRef, key: str | None) -> Any:
    """The whole secret, or the value at `key` (a Vault data key, or a JSON key in AWS)."""
    if isinstance(ref, VaultRef):
        if not isinstance(document, Mapping):
            raise StoredValueError(f"{_where(ref)} holds no key/value data")
        if key is None:
            return document
        if key not in document:
            raise StoredValueError(f"{_where(ref)} has no key {key!r}")
        return document[key]
    if key is None:
        return document
    data = _json_object_or_text(document)
    if not isinstance(data, Mapping):
        raise StoredValueError(f"{_where(ref)} is not a JSON object, so it has no key {key!r}")
    if key not in data:
        raise StoredValueError(f"{_where(ref)} has no key {key!r}")
    return data[key]


def _json_object_or_text(text: Any) -> Any:
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except ValueError:
        raise StoredValueError("the secret starts like JSON but is not valid JSON") from None


def _htpasswd_lines(text: str, ref: StoreRef) -> list[tuple[str, str]]:
    users = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, colon, hashed = line.partition(":")
        if not colon:
            raise StoredValueError(
                f"line {number} of the htpasswd text at {_where(ref)} has no ':'"
            )
        users.append((name, hashed))
    return users


def _where(ref: StoreRef) -> str:
    if isinstance(ref, VaultRef):
        return f"Vault path {ref.path}"
    return f"AWS secret {ref.secret_id}"
