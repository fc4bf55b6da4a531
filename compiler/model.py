"""The typed values that flow through the compiler pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal

POLICY_GROUP = "example.extensions.io"
POLICY_VERSION = "v1alpha1"
POLICY_API_VERSION = f"{POLICY_GROUP}/{POLICY_VERSION}"
POLICY_KIND = "ListenerContextExample"

DEFAULT_FORWARD_USERNAME_HEADER = "X-Example-Ext"


@dataclass(frozen=True, order=True)
class PolicyRef:
    """Where a policy lives; how every message and log line names it."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class TargetRef:
    """One entry of spec.targetRefs (a Gateway, optionally one of its listeners)."""

    group: str
    kind: str
    name: str
    section_name: str | None = None


class Secret:
    """A password that never shows itself in a repr, a log line or an error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plain value, for hashing only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class PlainCredentials:
    """spec.username + spec.password, written in the policy itself (the seed's form)."""

    username: str
    password: Secret


class StoreKind(StrEnum):
    """The secret stores a policy can name; also their name in metrics and settings."""

    VAULT = "vault"
    AWS = "aws"


class KvEngine(StrEnum):
    """Vault's key/value secrets engine versions, as a policy names them."""

    V2 = "kv-v2"
    V1 = "kv-v1"


@dataclass(frozen=True)
class VaultRef:
    """A secret in HashiCorp Vault, by its HTTP API path (`secret/data/...` for KV v2)."""

    path: str
    engine: KvEngine = KvEngine.V2
    key: str | None = None
    version: int | None = None

    store: ClassVar[StoreKind] = StoreKind.VAULT
    field: ClassVar[str] = "vault.path"  # the field that names it, under passwordFrom/usersFrom

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", KvEngine(self.engine))

    @property
    def name(self) -> str:
        """The secret as the policy names it."""
        return self.path

    @property
    def where(self) -> str:
        """The secret as messages name it."""
        return f"Vault path {self.path}"

    @property
    def document(self) -> tuple[str, str, str, int | None]:
        """What one backend request reads: the whole secret, whichever key is used."""
        return (self.store, self.engine, self.path, self.version)


@dataclass(frozen=True)
class AwsSecretRef:
    """A secret in AWS Secrets Manager, by name or ARN."""

    secret_id: str
    key: str | None = None  # a JSON key of SecretString; None: the whole string
    version_stage: str | None = None  # AWSCURRENT when neither is set
    version_id: str | None = None

    store: ClassVar[StoreKind] = StoreKind.AWS
    field: ClassVar[str] = "awsSecretsManager.secretId"

    @property
    def name(self) -> str:
        return self.secret_id

    @property
    def where(self) -> str:
        return f"AWS secret {self.secret_id}"

    @property
    def document(self) -> tuple[str, str, str | None, str | None]:
        return (self.store, self.secret_id, self.version_stage, self.version_id)


StoreRef = VaultRef | AwsSecretRef


@dataclass(frozen=True)
class PasswordFrom:
    """spec.username + spec.passwordFrom: one user, its password (or {SHA} hash) in a store."""

    username: str
    store: StoreRef


@dataclass(frozen=True)
class UsersFrom:
    """spec.usersFrom: many users from one secret (user -> password or hash, or htpasswd)."""

    store: StoreRef


CredentialSpec = PlainCredentials | PasswordFrom | UsersFrom


PathType = Literal["Exact", "PathPrefix"]
PATH_TYPES: tuple[PathType, ...] = ("Exact", "PathPrefix")


@dataclass(frozen=True, order=True)
class Exemption:
    """Requests whose path matches (`Exact` or `PathPrefix`, Gateway API's meaning) and
    whose method is one of `methods` (every method when empty) need no credentials."""

    path_type: PathType
    value: str
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayListener:
    """A Gateway (`namespace`/`name`) and one of its listeners (`section`), or all of them
    when `section` is None."""

    namespace: str
    name: str
    section: str | None = None

    def __str__(self) -> str:
        gateway = f"{self.namespace}/{self.name}"
        return gateway if self.section is None else f"{gateway}/{self.section}"

    def sort_key(self) -> tuple[str, str, bool, str]:
        """Gateway-wide first, then by section: a fixed order for deterministic output."""
        return (self.namespace, self.name, self.section is not None, self.section or "")

    def gateway(self) -> GatewayListener:
        """The whole Gateway this listener belongs to."""
        return GatewayListener(self.namespace, self.name)


@dataclass(frozen=True)
class Policy:
    """A parsed ListenerContextExample, before its credentials are resolved."""

    ref: PolicyRef
    created: str
    targets: tuple[TargetRef, ...]
    credentials: CredentialSpec
    forward_username_header: str | None = None
    # spec.credentialsRevision: written by the server's rotation watcher, read to know that
    # a stored secret has a newer version than the one in the cache.
    credentials_revision: str | None = None
    # spec.exemptions: requests that need no credentials where the policy applies.
    exemptions: tuple[Exemption, ...] = ()
    # spec.hideCredentials: the backend does not get `Authorization: Basic` once checked.
    hide_credentials: bool = False
    # metadata.uid, to name the object in Kubernetes Events. Not part of the policy's value:
    # a policy deleted and created again with the same spec compiles to the same table.
    uid: str | None = field(default=None, compare=False)
    # Policies key the resolver's memo on every hook call: hash them once.
    _hash: int = field(init=False, repr=False, compare=False, hash=False, default=0)

    def __post_init__(self) -> None:
        fields = (
            self.ref,
            self.created,
            self.targets,
            self.credentials,
            self.forward_username_header,
            self.credentials_revision,
            self.exemptions,
            self.hide_credentials,
        )
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash

    @property
    def precedence(self) -> tuple[int, str, str, str]:
        """Sort key for conflicts: the oldest policy wins, then namespace/name.

        This is the Gateway API's own conflict rule; a policy without a creation
        timestamp ranks after every policy that has one.
        """
        return (0 if self.created else 1, self.created, self.ref.namespace, self.ref.name)


# Where a resolved policy's credentials came from, as a value: `("plain",)` for its own
# spec.password; `(store, *document, version)` for a stored secret as read; `("failed",
# error family, message)` when it could not be resolved.
Source = tuple[str, ...]
PLAIN: Source = ("plain",)


@dataclass(frozen=True)
class ValueKey:
    """What one resolved policy's outcome depends on, as a value.

    The policy itself (its namespace/name and every field of its spec that matters, by
    value) and the source of its credentials (the store version read, or the failure).
    Equal keys give equal tables: every memo of the hot path keys on these, never on
    which object happens to hold them.
    """

    policy: Policy
    source: Source


class Secrets:
    """A column of passwords (or stored hashes) that never shows its values."""

    __slots__ = ("_values",)

    def __init__(self, values: tuple[str, ...]) -> None:
        self._values = values

    def reveal(self) -> tuple[str, ...]:
        """The plain values, for validating and hashing only."""
        return self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets(<{len(self._values)} values>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secrets) and other._values == self._values

    def __hash__(self) -> int:
        return hash(self._values)


class CredentialKind(StrEnum):
    """What the values of a Credentials column are."""

    PLAIN = "plain"  # a policy's own spec.password: always a password, never a hash
    STORED = "stored"  # values from a store: a password, or a ready hash ({SHA} used as is)
    HASHED = "hashed"  # htpasswd text: every value is a hash, never a password to hash


@dataclass(frozen=True, slots=True)
class Credentials:
    """Every user one policy resolved to, as two columns (user names, passwords).

    `usersFrom` can bring 100 000 users: two tuples cost a fraction of 100 000 objects,
    and let the compiler validate and hash the common case in bulk.
    """

    usernames: tuple[str, ...]
    passwords: Secrets
    # where each came from, for messages: "spec.username", "spec.password", ...
    username_field: str
    password_field: str
    kind: CredentialKind = CredentialKind.PLAIN

    def __len__(self) -> int:
        return len(self.usernames)


NO_CREDENTIALS = Credentials((), Secrets(()), "", "")


@dataclass(frozen=True, slots=True)
class Credential:
    """One user of a Credentials column, for the careful path and its messages."""

    username: str
    password: Secret
    username_field: str
    password_field: str
    # None: `password` is a plain password; otherwise it is a hash of this scheme
    # ("ldap_sha1" is Envoy's {SHA}, used as is; any other is rejected).
    scheme: str | None = None


class UnprotectedMode(StrEnum):
    """What to do with a listener (or filter chain) that no policy is attached to."""

    DENY = "deny"  # add a basic_auth filter that admits nobody (the seed's behaviour)
    PASSTHROUGH = "passthrough"  # leave it unchanged


@dataclass(frozen=True)
class CompileOptions:
    unprotected: UnprotectedMode = UnprotectedMode.DENY
    default_forward_username_header: str = DEFAULT_FORWARD_USERNAME_HEADER
    # Exemptions and hidden credentials per Gateway listener, each on its own virtual hosts
    # (the Translation hook, which sees them), instead of on the whole filter chain.
    per_gateway: bool = False
