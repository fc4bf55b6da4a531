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
from collections.abc import Iterator, Mapping, Sequence

from passlib.apache import HtpasswdFile
from passlib.hash import ldap_sha1

from compiler.model import CredentialKind, Secret

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

# The same rules over a whole column at once (values joined by '\n', which none of them
# may hold): one C-speed match instead of one call per user. A stored value must also not
# start with '$' or '{', where hashes start (compiler/schemes.py tells those apart).
_PLAIN_USERNAMES = re.compile(f"(?:{_PLAIN_USERNAME.pattern}\n)*")
_PLAIN_PASSWORDS = re.compile(r"(?:[\x20-\x7e]{1,4096}\n)*")
_PLAIN_STORED_PASSWORDS = re.compile(r"(?:[\x20-\x23\x25-\x7a\x7c-\x7e][\x20-\x7e]{0,4095}\n)*")
# A table of well-formed `name:{SHA}hash` lines (what `render` emits), checked at once.
_SHA_TABLE = re.compile(r"(?:[^\n:#][^\n:]*:\{SHA\}[A-Za-z0-9+/]{27}=\n)+")


def all_plain(usernames: Sequence[str], passwords: Sequence[str], kind: CredentialKind) -> bool:
    """True when every name and password passes every rule below without a closer look.

    False means only that the careful, per-user path must decide (and explain). A stored
    value must also not look like a hash (compiler/schemes.py tells those apart).
    """
    values = _PLAIN_PASSWORDS if kind is CredentialKind.PLAIN else _PLAIN_STORED_PASSWORDS
    return _column_matches(_PLAIN_USERNAMES, usernames) and _column_matches(values, passwords)


def _column_matches(pattern: re.Pattern[str], column: Sequence[str]) -> bool:
    if not column:
        return True
    joined = "\n".join(column) + "\n"
    # One '\n' per value: a value holding a '\n' of its own would pass as two plain ones.
    return joined.count("\n") == len(column) and pattern.fullmatch(joined) is not None


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
    except ValueError:  # binascii.Error, and the ValueError non-ASCII text raises
        return "is not valid base64 after {SHA}"
    if len(digest) != 20:
        return "does not hold a 20-byte SHA-1 digest"
    return None


def sha_hash(password: Secret) -> str:
    """The `{SHA}` (unsalted SHA-1, base64) hash, the only scheme Envoy verifies.

    Computed with hashlib: byte for byte what libpass's `ldap_sha1.hash` gives (a test
    holds them equal), at a third of the cost, which 100 000 users feel.
    """
    return sha_hashes((password.reveal(),))[0]


def sha_hashes(passwords: Sequence[str]) -> list[str]:
    """`sha_hash` of a whole column, with nothing but hashlib and base64 in the loop."""
    sha1, b64 = hashlib.sha1, binascii.b2a_base64
    return [
        SHA_PREFIX + b64(sha1(value.encode()).digest(), newline=False).decode()
        for value in passwords
    ]


def render(hashes: Mapping[str, str]) -> str:
    """The htpasswd text for user name -> `{SHA}` hash, sorted so equal input gives equal bytes.

    Every name and hash was validated on the way in; the result is checked once more
    with Envoy's rules before it leaves.
    """
    if not hashes:
        return DENY_ALL
    text = "".join([f"{name}:{hashes[name]}\n" for name in sorted(hashes)])
    # The common table passes in one match (its names are a dict's keys, so distinct);
    # anything else gets the line-by-line reading, which also says what is wrong.
    if not _SHA_TABLE.fullmatch(text):
        parse_like_envoy(text)
    return text


def reference_render(hashes: Mapping[str, str]) -> str:
    """The same text through libpass's HtpasswdFile: the reference `render` is tested against."""
    table = HtpasswdFile(default_scheme="ldap_sha1")
    for name in sorted(hashes):
        table.set_hash(name, hashes[name])
    return table.to_string().decode("utf-8") or DENY_ALL


def reference_sha_hash(password: Secret) -> str:
    """libpass's `{SHA}`: the reference `sha_hash` is tested against."""
    return str(ldap_sha1.hash(password.reveal()))


def envoy_lines(text: str) -> Iterator[tuple[int, str, bool, str]]:
    """The lines Envoy reads in htpasswd text: (line number, user name, whether a ':' was
    there, the rest). Lines end at '\n' only; empty lines and lines starting with '#' are
    skipped; nothing is trimmed. The one reader of htpasswd text in the project."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or line.startswith("#"):
            continue
        name, colon, rest = line.partition(":")
        yield number, name, bool(colon), rest


def envoy_line_ok(name: str, hashed: str) -> bool:
    """Whether `name:hashed` is one line Envoy accepts (uniqueness aside)."""
    return (
        bool(name)
        and not name.startswith("#")
        and ":" not in name
        and "\n" not in name + hashed
        and hashed.startswith(SHA_PREFIX)
        and len(hashed) == SHA_LENGTH
    )


def parse_like_envoy(text: str) -> dict[str, str]:
    """Read `text` with the rules of Envoy's basic_auth parser; raise EnvoyWouldReject.

    Messages give line numbers, never the hash.
    """
    if not text:
        raise EnvoyWouldReject("the users DataSource is empty")
    users: dict[str, str] = {}
    for number, name, colon, hashed in envoy_lines(text):
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
