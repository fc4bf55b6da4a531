"""AWS Secrets Manager as a secret store, through boto3.

Credentials come from boto3's default chain (environment, IRSA web identity, instance
or task role, shared config), optionally exchanged for a role given by --aws-role-arn;
the region and endpoint from the settings or boto3's own variables (AWS_REGION,
AWS_ENDPOINT_URL, ...). One attempt per request, bounded by the backend timeout: the
cache, not boto3's retries, rides out a failing store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config
from botocore.credentials import CredentialProvider, DeferredRefreshableCredentials
from botocore.session import get_session

from backends.stores import StoredSecret, StoreError, StoreOutcome
from compiler.model import AwsSecretRef, StoreRef

CURRENT = "AWSCURRENT"
MAX_ALIASES = 10_000  # secret ids whose ARN is remembered

_OUTCOMES = {
    "ResourceNotFoundException": (
        StoreOutcome.NOT_FOUND,
        "has no secret {id} (or not that version)",
    ),
    "AccessDeniedException": (StoreOutcome.FORBIDDEN, "denied the server access to {id}"),
    "DecryptionFailure": (StoreOutcome.FORBIDDEN, "could not decrypt {id} with its KMS key"),
    "InvalidRequestException": (
        StoreOutcome.NOT_FOUND,
        "refused to read {id} (deleted or scheduled for it?)",
    ),
    "ThrottlingException": (StoreOutcome.UNAVAILABLE, "is throttling the server"),
    # From STS, when --aws-role-arn is set: the role's trust policy does not admit the server.
    "AccessDenied": (
        StoreOutcome.FORBIDDEN,
        "could not be reached as the configured role (STS AccessDenied)",
    ),
    "InternalServiceError": (StoreOutcome.UNAVAILABLE, "failed internally"),
}


@dataclass(frozen=True)
class AwsSettings:
    region: str | None = None
    endpoint_url: str | None = None
    role_arn: str | None = None
    timeout: float = 2.0


class AwsSecretsManagerStore:
    """Reads SecretString values from AWS Secrets Manager; thread-safe (one boto3 client)."""

    name = "aws"

    def __init__(self, settings: AwsSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._client: Any = None  # made on first use: botocore's models cost memory
        self._aliases: dict[str, str] = {}  # secret id -> ARN, learnt from DescribeSecret

    def client(self) -> Any:
        """The secretsmanager client; StoreError if no region is configured anywhere."""
        with self._lock:
            if self._client is None:
                # botocore itself reads AWS_DEFAULT_REGION but not AWS_REGION.
                region = self.settings.region or os.environ.get("AWS_REGION") or None
                config = Config(
                    connect_timeout=self.settings.timeout,
                    read_timeout=self.settings.timeout,
                    retries={"total_max_attempts": 1, "mode": "standard"},
                )
                session = boto3.session.Session(
                    botocore_session=_session(self.settings.role_arn, region, config),
                    region_name=region,
                )
                if not session.region_name:
                    raise StoreError(
                        self.name,
                        StoreOutcome.NOT_CONFIGURED,
                        "no AWS region is configured (--aws-region)",
                    )
                self._client = session.client(
                    "secretsmanager", endpoint_url=self.settings.endpoint_url, config=config
                )
            return self._client

    def close(self) -> None:
        """Nothing runs in the background; boto3 closes its connections with the process."""

    def fetch(self, ref: StoreRef) -> StoredSecret:
        assert isinstance(ref, AwsSecretRef)
        request: dict[str, Any] = {"SecretId": ref.secret_id}
        if ref.version_id:
            request["VersionId"] = ref.version_id
        else:
            request["VersionStage"] = ref.version_stage or CURRENT
        response = self._call("get_secret_value", ref, **request)
        if "SecretString" not in response:
            raise StoreError(
                self.name,
                StoreOutcome.INVALID,
                f"{ref.secret_id} is a binary secret; store text or JSON",
            )
        return StoredSecret(str(response["SecretString"]), str(response.get("VersionId", "")))

    def version(self, ref: StoreRef) -> str:
        """The VersionId holding the stage the reference reads (DescribeSecret: no value read)."""
        assert isinstance(ref, AwsSecretRef)
        if ref.version_id:
            return ref.version_id  # pinned: never changes
        return self.version_in(self.describe(ref)[1], ref)

    def secret_of(self, ref: StoreRef) -> Hashable | None:
        """Which secret `ref` names, so that one DescribeSecret serves every reference to it.

        The ARN, once an answer has named it; a name as it is. None for an ARN no answer
        has named yet: it may be the secret a name reads, so the rotation watcher asks
        about it after the names (and then knows).
        """
        assert isinstance(ref, AwsSecretRef)
        with self._lock:
            known = self._aliases.get(ref.secret_id)
        if known is not None:
            return known
        return None if ref.secret_id.startswith("arn:") else ref.secret_id

    def describe(self, ref: StoreRef) -> tuple[Hashable, Mapping[str, Any]]:
        """One DescribeSecret: the secret's ARN, and the answer, which lists every version's
        stages (so it holds the version of every reference to the secret)."""
        assert isinstance(ref, AwsSecretRef)
        answer = self._call("describe_secret", ref, SecretId=ref.secret_id)
        arn = str(answer.get("ARN") or ref.secret_id)
        with self._lock:
            if len(self._aliases) >= MAX_ALIASES:
                self._aliases.clear()  # ids no longer in use; the next polls learn again
            # Only what this answer proves: a name of another account is another secret.
            self._aliases[ref.secret_id] = self._aliases[arn] = arn
        return arn, answer

    def version_in(self, answer: Mapping[str, Any], ref: StoreRef) -> str:
        """The reference's version in a DescribeSecret answer; NOT_FOUND once it is gone.

        Gone: the secret is scheduled for deletion, or no version holds the stage the
        reference reads. The rotation watcher takes that as a change, to "absent".
        """
        assert isinstance(ref, AwsSecretRef)
        if answer.get("DeletedDate"):
            raise StoreError(
                self.name,
                StoreOutcome.NOT_FOUND,
                f"Secrets Manager has {ref.secret_id} scheduled for deletion",
            )
        stage = ref.version_stage or CURRENT
        stages = answer.get("VersionIdsToStages") or {}
        found = next((vid for vid, names in sorted(stages.items()) if stage in names), None)
        if found is None:
            raise StoreError(
                self.name,
                StoreOutcome.NOT_FOUND,
                f"no version of {ref.secret_id} holds the stage {stage}",
            )
        return str(found)

    def _call(self, operation: str, ref: AwsSecretRef, **request: Any) -> Any:
        client = self.client()
        try:
            return getattr(client, operation)(**request)
        except botocore.exceptions.ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            outcome, text = _OUTCOMES.get(
                code, (StoreOutcome.ERROR, "answered " + code + " for {id}")
            )
            raise StoreError(
                self.name, outcome, "Secrets Manager " + text.format(id=ref.secret_id)
            ) from None
        except (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError):
            raise StoreError(
                self.name,
                StoreOutcome.TIMEOUT,
                f"Secrets Manager did not answer within {self.settings.timeout:g}s",
            ) from None
        except botocore.exceptions.EndpointConnectionError:
            raise StoreError(
                self.name, StoreOutcome.UNAVAILABLE, "Secrets Manager cannot be reached"
            ) from None
        except botocore.exceptions.NoCredentialsError:
            # An outage of the credential chain (instance metadata, the IRSA token file),
            # not a refusal: the last good value may serve while it lasts.
            raise StoreError(
                self.name,
                StoreOutcome.UNAVAILABLE,
                "the server has no AWS credentials (default chain)",
            ) from None
        except botocore.exceptions.BotoCoreError as error:
            raise StoreError(
                self.name,
                StoreOutcome.ERROR,
                f"Secrets Manager request failed ({type(error).__name__})",
            ) from None


def _session(role_arn: str | None, region: str | None, config: Config) -> Any:
    """A botocore session: the default chain, or that chain assuming `role_arn` (refreshed)."""
    session = get_session()
    if role_arn:
        # Put our provider first in the session's credential chain (botocore's extension point).
        provider = _AssumeRole(role_arn, region, config)
        session.get_component("credential_provider").insert_before("env", provider)
    return session


class _AssumeRole(CredentialProvider):
    """Credentials of `role_arn`, assumed with the default chain and refreshed before expiry."""

    METHOD = "extension-server-assume-role"

    def __init__(self, role_arn: str, region: str | None, config: Config) -> None:
        super().__init__()
        self.role_arn, self.region, self.config = role_arn, region, config

    def load(self) -> DeferredRefreshableCredentials:
        return DeferredRefreshableCredentials(refresh_using=self._assume, method=self.METHOD)

    def _assume(self) -> dict[str, str]:
        # STS's endpoint comes from botocore's own settings (AWS_ENDPOINT_URL_STS, ...).
        session = boto3.session.Session(botocore_session=get_session(), region_name=self.region)
        sts = session.client("sts", config=self.config)
        answer = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="extension-server")
        credentials = answer["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }
