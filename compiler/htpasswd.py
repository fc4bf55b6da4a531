"""The htpasswd text Envoy's basic_auth filter reads, and the rules it reads it by.

Envoy splits `users` on '\n' only, takes the user name up to the first ':', skips empty
lines and lines starting with '#', trims nothing, and rejects the whole listener for a
line without ':', an empty name or hash, a repeated name, or a hash that is not `{SHA}`
followed by 28 characters. Everything this module emits passes those rules by
construction, and `parse_like_envoy` checks it once more before it leaves the compiler.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable

from passlib.apache import HtpasswdFile
from passlib.hash import ldap_sha1

from compiler.model import HtpasswdEntry, Secret

MAX_USERNAME_BYTES = 256
MAX_PASSWORD_BYTES = 4096
SHA_PREFIX = "{SHA}"
SHA_SCHEME = "ldap_sha1"  # passlib's name for {SHA}
SHA_LENGTH = len(SHA_PREFIX) + 28

# Envoy rejects an empty DataSource, so a table that admits nobody is a comment line.
DENY_ALL = "# extension-server: no user is admitted on this listener\n"

# Unicode categories that have no place in a user name: controls (RFC 7617 forbids
# CTLs; '\n', '\r' and NUL among them), invisible format characters (look-alike names),
# surrogates (not encodable) and unassigned code points.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn"})


class EnvoyWouldReject(ValueError):
    """The text breaks one of Envoy's htpasswd rules (a bug if the compiler produced it)."""


# Printable ASCII, no ':', not starting with '#' or a space, not ending with a space, at
# most 256 bytes: a name like this passes every rule below, checked at C speed.
_PLAIN_USERNAME = re.compile(
    r"[\x21-\x22\x24-\x39\x3b-\x7e](?:[\x20-\x39\x3b-\x7e]{0,254}[\x21-\x39\x3b-\x7e])?"
)
_PLAIN_PASSWORD = re.compile(r"[\x20-\x7e]{1,4096}")


def username_problem(name: str) -> str | None:
    """Why Envoy or RFC 7617 would not accept this user name, or None if it is fine."""
    if _PLAIN_USERNAME.fullmatch(name):
        return None
    if not name:
        return "is empty"
    if ":" in name:
        return "contains ':' (Envoy and RFC 7617 split user and password at the first ':')"
    if any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in name):
        return "contains a control, format or unassigned character (RFC 7617 forbids them)"
    if name.startswith("#"):
        return "starts with '#' (Envoy would read the line as a comment and drop the user)"
    if name != name.strip():
        return "starts or ends with white space (clients and Envoy would disagree on it)"
    if unicodedata.normalize("NFC", name) != name:
        return "is not in Unicode Normalization Form C (RFC 7617 requires it)"
    if len(name.encode()) > MAX_USERNAME_BYTES:
        return f"is longer than {MAX_USERNAME_BYTES} bytes"
    return None


def password_problem(password: Secret) -> str | None:
    """Why a password cannot be used, without ever quoting it."""
    value = password.reveal()
    if _PLAIN_PASSWORD.fullmatch(value):
        return None
    if not value:
        return "is empty"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        return "contains a control character (RFC 7617 forbids them)"
    if len(value.encode()) > MAX_PASSWORD_BYTES:
        return f"is longer than {MAX_PASSWORD_BYTES} bytes"
    return None


def sha_hash_problem(value: Secret) -> str | None:
    """Why a stored `{SHA}` value is not a usable SHA-1 hash, or None."""
    text = value.reveal()
    if len(text) != SHA_LENGTH or not text.startswith(SHA_PREFIX):
        return "is not {SHA} followed by 28 base64 characters"
    try:
        digest = base64.b64decode(text[len(SHA_PREFIX) :], validate=True)
    except binascii.Error:
        return "is not valid base64 after {SHA}"
    if len(digest) != 20:
        return "does not hold a 20-byte SHA-1 digest"
    return None


def sha_hash(password: Secret) -> str:
    """The `{SHA}` (unsalted SHA-1, base64) hash, the only scheme Envoy verifies.

    Computed with hashlib: byte for byte what libpass's `ldap_sha1.hash` gives (a test
    holds them equal), at a third of the cost, which 100 000 users feel.
    """
    digest = hashlib.sha1(password.reveal().encode("utf-8")).digest()  # noqa: S324 (Envoy's scheme)
    return SHA_PREFIX + base64.b64encode(digest).decode("ascii")


def render(entries: Iterable[HtpasswdEntry]) -> str:
    """The htpasswd text for `entries`, sorted by user name so equal input gives equal bytes.

    Every name and hash was validated on the way in; `parse_like_envoy` checks the result.
    """
    lines = [f"{entry.username}:{entry.sha_hash}\n" for entry in sorted(entries, key=_by_name)]
    if not lines:
        return DENY_ALL
    text = "".join(lines)
    parse_like_envoy(text)
    return text


def reference_render(entries: Iterable[HtpasswdEntry]) -> str:
    """The same text through libpass's HtpasswdFile: the reference `render` is tested against."""
    table = HtpasswdFile(default_scheme="ldap_sha1")
    for entry in sorted(entries, key=_by_name):
        table.set_hash(entry.username, entry.sha_hash)
    return table.to_string().decode("utf-8") or DENY_ALL


def reference_sha_hash(password: Secret) -> str:
    """libpass's `{SHA}`: the reference `sha_hash` is tested against."""
    return str(ldap_sha1.hash(password.reveal()))


def _by_name(entry: HtpasswdEntry) -> str:
    return entry.username


def parse_like_envoy(text: str) -> dict[str, str]:
    """Read `text` with the rules of Envoy's basic_auth parser; raise EnvoyWouldReject.

    Messages give line numbers, never the hash.
    """
    if not text:
        raise EnvoyWouldReject("the users DataSource is empty")
    users: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or line.startswith("#"):
            continue
        name, colon, hashed = line.partition(":")
        if not colon:
            raise EnvoyWouldReject(f"line {number} has no ':'")
        if not name or not hashed:
            raise EnvoyWouldReject(f"line {number} has an empty user name or hash")
        if name in users:
            raise EnvoyWouldReject(f"line {number} repeats a user name")
        if not hashed.startswith(SHA_PREFIX) or len(hashed) != SHA_LENGTH:
            raise EnvoyWouldReject(f"line {number} does not hold a {{SHA}} hash")
        users[name] = hashed
    return users
