"""The server's secret stores over the stand-ins, as `extension-server serve` configures them.

Vault is the stand-in of tests/support/vault.py, read through hvac with a token file; AWS
Secrets Manager is moto's server mode (tests/support/aws.py), read through boto3.
"""

from __future__ import annotations

from pathlib import Path

from backends import CredentialResolver, ResolverSettings
from backends.aws import AwsSecretsManagerStore, AwsSettings
from backends.vault import VaultSettings, VaultStore
from tests.support.aws import REGION, MotoServer
from tests.support.secrets import remember
from tests.support.vault import ROOT_TOKEN, VaultStandIn


def both_stores(
    vault: VaultStandIn, moto: MotoServer, tmp_path: Path, timeout: float
) -> CredentialResolver:
    """A resolver over Vault (read with ROOT_TOKEN from a file) and AWS, with this timeout."""
    token_file = tmp_path / "vault-token"
    token_file.write_text(ROOT_TOKEN)
    remember(ROOT_TOKEN)
    stores = {
        "vault": VaultStore(
            VaultSettings(addr=vault.url, token_file=str(token_file), timeout=timeout)
        ),
        "aws": AwsSecretsManagerStore(
            AwsSettings(region=REGION, endpoint_url=moto.endpoint_url, timeout=timeout)
        ),
    }
    return CredentialResolver(ResolverSettings(timeout=timeout), stores)
