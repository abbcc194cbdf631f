"""``keyless iam workload-identity-pools ...``: pools and OIDC providers through keyless's own CLI (the calls and
messages of gcloud's namesakes), and ``create-cred-config --keyless-urls``, whose file an unchanged google-auth
uses to get a federated token and an account's token with no key anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from google.auth import identity_pool
from google.auth.exceptions import OAuthError
from google.auth.transport.requests import Request

from tests.cli.support import create_sa, kl, tokeninfo, uid
from tests.conftest import CLOUD, Server
from tests.federation.issuer import ISSUER, Issuer

WIF = ("iam", "workload-identity-pools")


def test_pools_and_providers_with_the_keyless_cli(server: Server, tmp_path: Path) -> None:
    pool = f"pool-{uid()}"
    created = kl(server, *WIF, "create", pool, "--display-name", "Cluster", "--description", "on premises")
    assert created.stderr.strip() == f"Created workload identity pool [{pool}]."
    described = yaml.safe_load(kl(server, *WIF, "describe", pool).stdout)
    assert (described["displayName"], described["state"]) == ("Cluster", "ACTIVE")
    number = described["name"].split("/")[1]
    assert pool in kl(server, *WIF, "list", "--format=value(name.basename())").stdout.split()
    updated = kl(server, *WIF, "update", pool, "--disabled")
    assert yaml.safe_load(updated.stdout)["disabled"] is True
    kl(server, *WIF, "update", pool, "--no-disabled")
    assert kl(server, *WIF, "update", pool, expect=2).stderr.startswith("ERROR: ")
    assert kl(server, *WIF, "create", pool, expect=1).stderr.startswith(
        "ERROR: (keyless.iam.workload-identity-pools.create) ALREADY_EXISTS")

    issuer = Issuer()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(issuer.jwks())
    where = ("--workload-identity-pool", pool)
    made = kl(server, *WIF, "providers", "create-oidc", "k8s-oidc", *where, "--issuer-uri", ISSUER,
              "--jwk-json-path", str(jwks),
              "--attribute-mapping", "google.subject=assertion.sub,attribute.namespace=assertion['kubernetes.io']"
              ".namespace", "--attribute-condition", "attribute.namespace == 'prod'")
    assert made.stderr.strip() == "Created workload identity pool provider [k8s-oidc]."
    provider = yaml.safe_load(kl(server, *WIF, "providers", "describe", "k8s-oidc", *where).stdout)
    assert provider["oidc"] == {"issuerUri": ISSUER, "jwksJson": issuer.jwks()}
    assert provider["attributeCondition"] == "attribute.namespace == 'prod'"
    listed = kl(server, *WIF, "providers", "list", *where).stdout.splitlines()
    assert listed[0].split()[:2] == ["PROVIDER_ID", "DISPLAY_NAME"] and "k8s-oidc" in listed[1]
    kl(server, *WIF, "providers", "update-oidc", "k8s-oidc", *where, "--allowed-audiences", "https://k8s.example")
    assert yaml.safe_load(kl(server, *WIF, "providers", "describe", "k8s-oidc", *where).stdout)["oidc"][
        "allowedAudiences"] == ["https://k8s.example"]
    kl(server, *WIF, "providers", "update-oidc", "k8s-oidc", *where, "--allowed-audiences", "")
    bad = kl(server, *WIF, "providers", "create-oidc", "no-keys", *where, "--issuer-uri", "http://issuer.example",
             "--attribute-mapping", "google.subject=assertion.sub", expect=1)
    assert "issuerUri" in bad.stderr

    # A workload of the cluster impersonates an account, with the file create-cred-config wrote and no key.
    account = create_sa(server, "wif")
    kl(server, "iam", "service-accounts", "add-iam-policy-binding", account, "--role=roles/iam.workloadIdentityUser",
       f"--member=principalSet://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/{pool}"
       "/attribute.namespace/prod")
    name = f"projects/{number}/locations/global/workloadIdentityPools/{pool}/providers/k8s-oidc"
    token_file = tmp_path / "token"
    token_file.write_text(issuer.token(f"//iam.googleapis.com/{name}"))
    cred = tmp_path / "cred.json"
    written = kl(server, *WIF, "create-cred-config", name, "--credential-source-file", str(token_file),
                 "--service-account", account, "--output-file", str(cred), "--keyless-urls")
    assert written.stderr.strip() == f"Created credential configuration file [{cred}]."
    info = json.loads(cred.read_text())
    assert info["token_url"] == f"{server.url}/v1/token"
    creds = identity_pool.Credentials.from_info(info, scopes=[CLOUD])
    creds.refresh(Request())
    assert tokeninfo(server, creds.token).json()["email"] == account
    google = json.loads(kl(server, *WIF, "create-cred-config", name, "--credential-source-file", str(token_file),
                           "--output-file", "-").stdout)
    assert (google["token_url"], google["token_info_url"]) == ("https://sts.googleapis.com/v1/token",
                                                               "https://sts.googleapis.com/v1/introspect")

    deleted = kl(server, *WIF, "providers", "delete", "k8s-oidc", *where, "--quiet")
    assert deleted.stderr.strip() == "Deleted workload identity pool provider [k8s-oidc]."
    with pytest.raises(OAuthError, match="invalid_target"):  # a deleted provider exchanges nothing
        identity_pool.Credentials.from_info(info, scopes=[CLOUD]).refresh(Request())
    kl(server, *WIF, "providers", "undelete", "k8s-oidc", *where)
    kl(server, *WIF, "delete", pool, "--quiet")
    assert "DELETED" in kl(server, *WIF, "list", "--show-deleted", "--format=value(name.basename(),state)").stdout
    kl(server, *WIF, "undelete", pool)
