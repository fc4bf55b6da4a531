"""What a stored secret holds, turned into credentials (pure; no I/O).

`passwordFrom` reads one value; `usersFrom` reads many users from one secret: a map of
user name to password or hash, or htpasswd text. Whether a value is a password or a ready
hash is the compiler's question (compiler/schemes.py); here only the shape is checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from compiler.htpasswd import envoy_lines
from compiler.model import (
    AwsSecretRef,
    CredentialKind,
    Credentials,
    Secrets,
    StoreRef,
    VaultRef,
)


class StoredValueError(ValueError):
    """The secret's content does not have the shape the reference asks for (no value quoted)."""


def password_credential(document: Any, ref: StoreRef, username: str, field: str) -> Credentials:
    """`passwordFrom`: the one value the reference points at, for `username`."""
    value = _value_at(document, ref, ref.key)
    if not isinstance(value, str):
        raise StoredValueError(f"the value at {ref.where} is not a string")
    return Credentials(
        (username,), Secrets((value,)), "spec.username", field, CredentialKind.STORED
    )


def user_credentials(document: Any, ref: StoreRef, field: str) -> Credentials:
    """`usersFrom`: every user of the secret (a user -> value map, or htpasswd text)."""
    content = _value_at(document, ref, ref.key)
    if isinstance(content, str) and isinstance(ref, AwsSecretRef) and ref.key is None:
        content = _json_object_or_text(content)
    if isinstance(content, Mapping):
        names, values = tuple(content.keys()), tuple(content.values())
        if not _all_strings(names):
            names = tuple(map(str, names))
    elif isinstance(content, str):
        names, values = _htpasswd_columns(content, ref)
    else:
        raise StoredValueError(f"the value at {ref.where} is neither a map nor htpasswd text")
    if not _all_strings(values):
        raise StoredValueError(f"the value for a user at {ref.where} is not a string")
    # htpasswd text holds hashes only: a value there is never hashed again as a password
    kind = CredentialKind.HASHED if isinstance(content, str) else CredentialKind.STORED
    return Credentials(names, Secrets(values), field, field, kind)


def _all_strings(column: tuple[Any, ...]) -> bool:
    return set(map(type, column)) <= {str}  # one C-speed pass, for 100 000 users too


def _value_at(document: Any, ref: StoreRef, key: str | None) -> Any:
    """The whole secret, or the value at `key` (a Vault data key, or a JSON key in AWS)."""
    if isinstance(ref, VaultRef):
        if not isinstance(document, Mapping):
            raise StoredValueError(f"{ref.where} holds no key/value data")
        if key is None:
            return document
        if key not in document:
            raise StoredValueError(f"{ref.where} has no key {key!r}")
        return document[key]
    if key is None:
        return document
    data = _json_object_or_text(document)
    if not isinstance(data, Mapping):
        raise StoredValueError(f"{ref.where} is not a JSON object, so it has no key {key!r}")
    if key not in data:
        raise StoredValueError(f"{ref.where} has no key {key!r}")
    return data[key]


def _json_object_or_text(text: Any) -> Any:
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except ValueError:
        raise StoredValueError("the secret starts like JSON but is not valid JSON") from None
    except RecursionError:
        # json.loads recurses once per nesting level: a few kilobytes of '{"a":' exhaust
        # the stack. A secret shaped like that is one unusable secret, not a failed call.
        raise StoredValueError("the secret nests JSON objects or arrays too deeply") from None


def _htpasswd_columns(text: str, ref: StoreRef) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The users of htpasswd text, read as Envoy reads it (`envoy_lines`).

    Any other reading (str.splitlines() also ends lines at '\r', '\x0b', '\x85',
    '\u2028', ...) would see users where Envoy sees none, or one where Envoy sees another.
    """
    names, values = [], []
    for number, name, colon, hashed in envoy_lines(text):
        if not colon:
            raise StoredValueError(f"line {number} of the htpasswd text at {ref.where} has no ':'")
        names.append(name)
        values.append(hashed)
    return tuple(names), tuple(values)
