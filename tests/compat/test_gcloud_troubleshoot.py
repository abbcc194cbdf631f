"""The real gcloud, unchanged, through the interception proxy: `gcloud policy-troubleshoot iam` (Policy
Troubleshooter v2alpha1), `gcloud policy-intelligence troubleshoot-policy iam` (v3) and `gcloud asset
analyze-iam-policy` (Cloud Asset Inventory v1). gcloud is authenticated as the owner with an access token file
and has its own CLOUDSDK_CONFIG.

Under CI=true these tests must run (no gcloud on PATH fails them); elsewhere they are skipped without gcloud.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.compat.gcloud_support import ROUTES, sdk_version
from tests.compat.test_gcloud_policies import PROJECT, Gcloud, Keyless, gcloud_path
from tests.conftest import start_server

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
WHO = "dana@example.com"



def _row(call: str) -> pytest.MarkDecorator:
    return pytest.mark.compat(section="2.3", client=f"gcloud {sdk_version()}", call=call, route=ROUTES["proxy"])

@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyless]:
    binary = gcloud_path()
    base = tmp_path_factory.mktemp("gcloud-troubleshoot")
    server = start_server(base / "data", "--proxy-port", "0", "--metadata-port", "-1")
    try:
        token_file = base / "owner.token"
        token_file.write_text(server.owner_token)
        endpoints = json.loads((server.data_dir / "endpoints.json").read_text())
        yield Keyless(server, token_file, endpoints, base, binary)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def granted(keyless: Keyless) -> str:
    """An account whose policy lets WHO mint its tokens."""
    email = keyless.server.create_sa("troubleshot")
    keyless.server.grant(email, f"user:{WHO}")
    return email


@pytest.fixture(scope="module")
def gcloud(keyless: Keyless) -> Gcloud:
    return keyless.gcloud("proxy", "troubleshoot")


@_row("gcloud policy-troubleshoot iam (Policy Troubleshooter v2alpha1)")
def test_gcloud_policy_troubleshoot_iam(gcloud: Gcloud, granted: str) -> None:
    resource = f"//iam.googleapis.com/projects/{PROJECT}/serviceAccounts/{granted}"
    yes = gcloud.json("policy-troubleshoot", "iam", resource, f"--principal-email={WHO}",
                      "--permission=iam.serviceAccounts.getAccessToken")
    assert yes["access"] == "GRANTED"
    binding = next(b for b in yes["explainedPolicies"][0]["bindingExplanations"] if b["role"] == TOKEN_CREATOR)
    assert binding["memberships"][f"user:{WHO}"]["membership"] == "MEMBERSHIP_INCLUDED"
    no = gcloud.json("policy-troubleshoot", "iam", resource, "--principal-email=someone@example.com",
                     "--permission=iam.serviceAccounts.getAccessToken")
    assert no["access"] == "NOT_GRANTED"


@_row("gcloud policy-intelligence troubleshoot-policy iam (v3)")
def test_gcloud_policy_intelligence_troubleshoot_policy_iam(gcloud: Gcloud, granted: str) -> None:
    resource = f"//iam.googleapis.com/projects/{PROJECT}/serviceAccounts/{granted}"
    answer = gcloud.json("policy-intelligence", "troubleshoot-policy", "iam", resource, f"--principal-email={WHO}",
                         "--permission=iam.serviceAccounts.signBlob", "--request-time=2030-01-01T00:00:00Z")
    assert answer["overallAccessState"] == "CAN_ACCESS"
    assert answer["allowPolicyExplanation"]["allowAccessState"] == "ALLOW_ACCESS_STATE_GRANTED"
    assert answer["denyPolicyExplanation"]["denyAccessState"] == "DENY_ACCESS_STATE_NOT_DENIED"


@_row("gcloud asset analyze-iam-policy (Cloud Asset v1 analyzeIamPolicy)")
def test_gcloud_asset_analyze_iam_policy(gcloud: Gcloud, granted: str) -> None:
    entries = gcloud.json("asset", "analyze-iam-policy", f"--project={PROJECT}", f"--identity=user:{WHO}")
    found = [e for e in entries if "policy" in e]
    assert any(e["policy"]["binding"]["role"] == TOKEN_CREATOR and
               e["policy"]["attachedResource"].startswith(f"//iam.googleapis.com/projects/{PROJECT}/serviceAccounts/")
               for e in found), entries
    raw = gcloud.json("asset", "analyze-iam-policy", f"--project={PROJECT}",
                      "--permissions=iam.serviceAccounts.getAccessToken", "--show-response")
    members = {m for r in raw["mainAnalysis"]["analysisResults"] for m in r["iamBinding"]["members"]}
    assert f"user:{WHO}" in members
