"""``keyless why`` explains a credentials call hop by hop and names the failing hop; a denied call's audit entry
carries the request that explains it. A real server, the real CLI."""

from __future__ import annotations

import json
import secrets

import requests

from tests.cli.support import kl
from tests.conftest import CLOUD, Server


def test_keyless_why_names_the_failing_hop_and_the_audit_entry_links_to_it(server: Server) -> None:
    tag = secrets.token_hex(3)
    delegate = server.create_sa(f"why-delegate-{tag}")
    target = server.create_sa(f"why-target-{tag}")
    owner = "user:owner@keyless.local"
    server.grant(delegate, owner)  # the owner may delegate through it; the delegate may not mint the target
    r = requests.post(f"{server.url}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                      json={"scope": [CLOUD], "delegates": [f"projects/-/serviceAccounts/{delegate}"]},
                      headers={"Authorization": f"Bearer {server.owner_token}"}, timeout=30)
    assert r.status_code == 403
    assert "troubleshoot" not in r.text  # the caller's 403 stays Google's

    text = kl(server, "why", owner, target, "--delegate", delegate).stdout
    lines = text.splitlines()
    assert lines[0] == f"{owner} generateAccessToken {target}: DENIED at hop 2 of 2"
    assert any(line.startswith(f"  hop 1: {owner} needs iam.serviceAccounts.implicitDelegation on") and
               line.endswith(": granted") for line in lines), text
    assert any(line.startswith(f"  hop 2: serviceAccount:{delegate} needs iam.serviceAccounts.getAccessToken") and
               line.endswith("<- fails here") for line in lines), text
    assert "+ roles/iam.serviceAccountTokenCreator on //iam.googleapis.com/" in text

    entries = [json.loads(line) for line in kl(server, "audit", "--denied", "--format", "json", "--account",
                                               target).stdout.splitlines()]
    link = entries[0]["protoPayload"]["metadata"]["explanation"]["troubleshoot"]
    assert link["path"] == "/keyless/v1/iam:troubleshootChain"
    answer = server.owner(link["method"], link["path"], link["body"])
    assert answer["failingHop"] == 2, (link, answer)
