"""What the soak's callers send: policies of every kind, the secrets behind them, the requests.

Every password is made fresh for the run and never printed; only the `{SHA}` hash the
server must emit for each user is kept, as the answer key the checker compares with.
Good policies each own user names no other policy uses (except the one deliberate
conflict), so every user in an answer can be traced to exactly one policy.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.secrets import remember, sha

OTHER_NS = "other-team"  # a namespace the policies must not reach into
BCRYPT = (
    "$2y$10$" + "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
)  # Envoy cannot check it


def _password() -> str:
    value = secrets.token_urlsafe(18)
    remember(value)
    return value


@dataclass(frozen=True)
class SoakPolicy:
    """One attached policy and the users it must contribute when it is admitted."""

    name: str
    raw: bytes  # the ListenerContextExample as Envoy Gateway sends it
    users: Mapping[str, str]  # user -> the {SHA} hash it must carry; empty: never adds users
    namespace: str
    store: str | None = None  # "vault" or "aws"; None: plaintext
    secret: str | None = None  # "<store>:<name>" of the secret read (revocation key)
    section: str | None = None  # targets this Gateway section only

    @property
    def broken(self) -> bool:
        return not self.users


@dataclass(frozen=True)
class Request:
    """One request a caller sends: a listener and the policies attached to it."""

    label: str
    listener: Any
    policies: tuple[SoakPolicy, ...]


@dataclass
class Scenario:
    namespace: str
    gateway: str
    policies: list[SoakPolicy] = field(default_factory=list)
    vault: dict[str, dict[str, str]] = field(default_factory=dict)  # KV v2 path -> data
    aws: dict[str, str] = field(default_factory=dict)  # secret name -> SecretString

    def where(self, *, store: str | None = None, plain: bool = False) -> tuple[SoakPolicy, ...]:
        return tuple(
            p
            for p in self.policies
            if (plain and p.store is None) or (store is not None and p.store == store)
        )


def _document(name: str, namespace: str, spec: dict[str, Any], created: int) -> bytes:
    return json.dumps(
        {
            "apiVersion": "example.extensions.io/v1alpha1",
            "kind": "ListenerContextExample",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": f"2024-01-01T00:{created // 60:02d}:{created % 60:02d}Z",
            },
            "spec": spec,
        }
    ).encode()


class _Builder:
    """Adds policies (and the secrets they read) to a Scenario."""

    def __init__(self, world: Scenario) -> None:
        self.world = world
        self.prefix = f"gateways/{world.namespace}/soak"  # under the default tenancy templates
        self._created = iter(range(3600))  # creationTimestamps in order: older wins conflicts

    def add(
        self,
        name: str,
        spec: dict[str, Any],
        users: Mapping[str, str],
        *,
        ns: str | None = None,
        store: str | None = None,
        secret: str | None = None,
        section: str | None = None,
    ) -> None:
        target = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}
        target["name"] = self.world.gateway
        if section:
            target["sectionName"] = section
        namespace = ns or self.world.namespace
        raw = _document(name, namespace, {"targetRefs": [target], **spec}, next(self._created))
        self.world.policies.append(
            SoakPolicy(name, raw, dict(users), namespace, store, secret, section)
        )

    def plain(
        self, name: str, user: str, *, ns: str | None = None, section: str | None = None
    ) -> None:
        password = _password()
        spec = {"username": user, "password": password}
        self.add(name, spec, {user: sha(password)}, ns=ns, section=section)

    def password_from(self, name: str, store: str, path: str, stored: str, password: str) -> None:
        """A passwordFrom policy on `path`, whose stored value is `stored`."""
        user = f"soak-{name}"
        if store == "vault":
            self.world.vault[path] = {"password": stored}
            ref = vault_ref(path)
        else:
            self.world.aws[path] = stored
            ref = aws_ref(path)
        spec = {"username": user, "passwordFrom": ref}
        self.add(name, spec, {user: sha(password)}, store=store, secret=f"{store}:{path}")


def vault_ref(path: str, key: str | None = "password") -> dict[str, Any]:
    ref: dict[str, Any] = {"path": f"secret/data/{path}"}
    return {"vault": {**ref, "key": key} if key else ref}


def aws_ref(name: str, key: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"secretId": name}
    return {"awsSecretsManager": {**ref, "key": key} if key else ref}


def build(namespace: str, gateway: str) -> Scenario:
    """The policies and secrets of the soak, with fresh passwords."""
    world = Scenario(namespace, gateway)
    add = _Builder(world)
    prefix = add.prefix
    # plaintext: always admitted (plain-foo on the https-foo section's chain only)
    add.plain("plain-0", "soak-plain-0")
    add.plain("plain-1", "soak-plain-1")
    add.plain("plain-foo", "soak-plain-foo", section="https-foo")
    # passwordFrom: a plain password, a stored {SHA} hash, and one revoked mid-run
    for store in ("vault", "aws"):
        for short in ("pw", "sha", "revocable"):
            password = _password()
            stored = sha(password) if short == "sha" else password
            add.password_from(
                f"{store}-{short}", store, f"{prefix}/{store}-{short}", stored, password
            )
    keyed = _password()
    world.aws[f"{prefix}/json"] = json.dumps({"username": "x", "password": keyed})
    spec = {"username": "soak-aws-json", "passwordFrom": aws_ref(f"{prefix}/json", "password")}
    add.add(
        "aws-json", spec, {"soak-aws-json": sha(keyed)}, store="aws", secret=f"aws:{prefix}/json"
    )
    # usersFrom: a map of users, one stored as {SHA}; AWS's also holds two bad entries
    team = {f"soak-vault-team-{i}": _password() for i in range(4)}
    hashed = _password()
    world.vault[f"{prefix}/users"] = {**team, "soak-vault-team-hashed": sha(hashed)}
    expected = {**{u: sha(p) for u, p in team.items()}, "soak-vault-team-hashed": sha(hashed)}
    spec = {"usersFrom": vault_ref(f"{prefix}/users", None)}
    add.add("vault-users", spec, expected, store="vault", secret=f"vault:{prefix}/users")
    crew = {f"soak-aws-crew-{i}": _password() for i in range(4)}
    bad = {"soak-aws-crew-bcrypt": BCRYPT, "soak-aws-crew-bad:name": _password()}
    world.aws[f"{prefix}/users"] = json.dumps({**crew, **bad})
    expected = {u: sha(p) for u, p in crew.items()}
    spec = {"usersFrom": aws_ref(f"{prefix}/users")}
    add.add("aws-users", spec, expected, store="aws", secret=f"aws:{prefix}/users")
    _add_broken(add)
    return world


def _add_broken(add: _Builder) -> None:
    """Policies that must never add a user: each is refused for a different reason."""
    world, prefix = add.world, add.prefix
    foreign = f"gateways/{OTHER_NS}/soak/pw"
    world.vault[foreign] = {"password": _password()}  # readable by the token: the guard decides
    world.aws[foreign] = _password()
    locked = f"gateways/{world.namespace}/locked/pw"  # exists; the token may not read it
    world.vault[locked] = {"password": _password()}
    world.aws[f"{prefix}/bcrypt"] = BCRYPT
    known = vault_ref(f"{prefix}/vault-pw")  # a good secret
    no_key = vault_ref(f"{prefix}/vault-pw", "nokey")  # ... read at a key it does not have
    broken: list[tuple[str, str | None, dict[str, Any]]] = [
        ("broken-malformed", "vault", {"password": _password(), "passwordFrom": known}),
        ("broken-tenancy-vault", "vault", {"passwordFrom": vault_ref(foreign)}),
        ("broken-vault-missing", "vault", {"passwordFrom": vault_ref(f"{prefix}/missing")}),
        ("broken-vault-denied", "vault", {"passwordFrom": vault_ref(locked)}),
        ("broken-vault-nokey", "vault", {"passwordFrom": no_key}),
        ("broken-tenancy-aws", "aws", {"passwordFrom": aws_ref(foreign)}),
        ("broken-aws-missing", "aws", {"passwordFrom": aws_ref(f"{prefix}/missing")}),
        ("broken-aws-bcrypt", "aws", {"passwordFrom": aws_ref(f"{prefix}/bcrypt")}),
        # the same user name as plain-0 with another password, created later: the older wins
        ("broken-conflict", None, {"password": _password()}),
    ]  # fmt: skip
    for name, store, spec in broken:
        user = "soak-plain-0" if name == "broken-conflict" else f"soak-{name}"
        add.add(name, {"username": user, **spec}, {}, store=store)
    # another namespace's policy naming this Gateway: out of scope on its named chains
    add.plain("stranger", "soak-stranger", ns=OTHER_NS)


def requests(world: Scenario, listeners: Mapping[str, Any]) -> list[Request]:
    """The mix the callers cycle through: every policy together, and each store alone.

    `listeners` maps "https", "http3" (named chains) and "http" (a default chain) to
    listeners. The stranger's policy goes only with named chains: Envoy Gateway would not
    send another namespace's policy for this Gateway's plain-HTTP default chain, where
    every policy applies.
    """
    everything = tuple(world.policies)
    mix: Sequence[tuple[str, str, tuple[SoakPolicy, ...]]] = (
        ("https+all", "https", everything),
        ("http3+all", "http3", everything),
        ("http+all", "http", everything),
        ("https+vault", "https", world.where(plain=True, store="vault")),
        ("http3+aws", "http3", world.where(plain=True, store="aws")),
        ("http+plain", "http", world.where(plain=True)),
    )
    return [Request(label, listeners[kind], _for(kind, policies)) for label, kind, policies in mix]


def _for(kind: str, policies: tuple[SoakPolicy, ...]) -> tuple[SoakPolicy, ...]:
    if kind != "http":
        return policies
    return tuple(p for p in policies if p.namespace != OTHER_NS)
