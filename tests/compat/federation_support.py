"""Workload identity federation on the compat suite's server, for the client rows (Python, Node): a pool and an
OIDC provider for a stand-in Kubernetes issuer, an account prod's workloads may impersonate, and the
``external_account`` credential files a workload would hold. Made once per session (idempotent): several modules
use it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.compat.conftest import CompatEnv
from tests.federation.issuer import ISSUER, Issuer

PROJECT = "keyless-dev"
POOLS = f"/v1/projects/{PROJECT}/locations/global/workloadIdentityPools"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
SUBJECT = "system:serviceaccount:prod:builder"


@dataclass
class WifWorld:
    compat: CompatEnv
    issuer: Issuer
    number: str
    provider: str  # full name
    account: str  # prod's workloads hold roles/iam.workloadIdentityUser on it
    base: Path

    @property
    def audience(self) -> str:
        return f"//iam.googleapis.com/{self.provider}"

    @property
    def member(self) -> str:
        pool = self.provider.rsplit("/providers/", 1)[0]
        return f"principal://iam.googleapis.com/{pool}/subject/{SUBJECT}"

    def token(self, namespace: str = "prod") -> str:
        return self.issuer.token(self.audience, namespace=namespace,
                                 subject=SUBJECT if namespace == "prod" else f"system:serviceaccount:{namespace}:x")

    def credential_file(self, name: str, source: dict[str, Any], *, impersonate: bool, direct: bool = False
                        ) -> Path:
        """An external_account file as ``gcloud iam workload-identity-pools create-cred-config`` writes it:
        Google's URLs (reached through the proxy), or keyless's own with ``direct``."""
        sts = self.compat.server.url if direct else "https://sts.googleapis.com"
        iam = self.compat.server.url if direct else "https://iamcredentials.googleapis.com"
        info: dict[str, Any] = {"universe_domain": "googleapis.com", "type": "external_account",
                                "audience": self.audience, "subject_token_type": JWT_TYPE,
                                "token_url": f"{sts}/v1/token", "credential_source": source}
        if impersonate:
            info["service_account_impersonation_url"] = (
                f"{iam}/v1/projects/-/serviceAccounts/{self.account}:generateAccessToken")
        else:
            info["token_info_url"] = f"{sts}/v1/introspect"
        path = self.base / name
        path.write_text(json.dumps(info))
        return path


_made: dict[str, WifWorld] = {}


def make_cluster(srv: Any, issuer: Issuer, pool: str, display_name: str, account_id: str) -> tuple[str, str, str]:
    """A Kubernetes-like cluster federated into ``srv``: the pool, its OIDC provider (``k8s-oidc``: the subject and
    the namespace mapped, only ``prod`` admitted) and an account whose Workload Identity User is every ``prod``
    workload. Returns the project number, the provider's full name and the account's email."""
    number = srv.owner("GET", f"/v1/projects/{PROJECT}")["projectNumber"]
    srv.owner("POST", f"{POOLS}?workloadIdentityPoolId={pool}", {"displayName": display_name})
    provider = srv.owner("POST", f"{POOLS}/{pool}/providers?workloadIdentityPoolProviderId=k8s-oidc", {
        "attributeMapping": {"google.subject": "assertion.sub",
                             "attribute.namespace": "assertion['kubernetes.io'].namespace"},
        "attributeCondition": "attribute.namespace == 'prod'",
        "oidc": {"issuerUri": ISSUER, "jwksJson": issuer.jwks()}})["response"]["name"]
    account = srv.create_sa(account_id)
    srv.grant(account, f"principalSet://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/"
              f"{pool}/attribute.namespace/prod", "roles/iam.workloadIdentityUser")
    return str(number), str(provider), str(account)


def wif_world(compat: CompatEnv) -> WifWorld:
    """The session's federation setup on ``compat``'s server (the same issuer key for every module)."""
    key = str(compat.server.data_dir)
    if key in _made:
        return _made[key]
    issuer = Issuer(kid="compat-cluster")
    number, provider, account = make_cluster(compat.server, issuer, "compat-cluster", "Compat cluster", "compat-wif")
    base = compat.workdir / "wif"
    base.mkdir(exist_ok=True)
    _made[key] = WifWorld(compat, issuer, number, provider, account, base)
    return _made[key]
