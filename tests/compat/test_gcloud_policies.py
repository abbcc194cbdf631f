"""The real gcloud, unchanged, for Service Usage (`gcloud services enable|list|disable`, the seed documents' first
step) and organization policies (`gcloud resource-manager org-policies ...` on Resource Manager v1, `gcloud
org-policies ...` on Org Policy v2) against a real `keyless serve --enforce-services`, through the interception
proxy (`eval "$(keyless env)"`, gcloud trusting keyless's CA) and through endpoint overrides
(CLOUDSDK_API_ENDPOINT_OVERRIDES_*). gcloud is authenticated as the owner with an access token file.

Under CI=true these tests must run (no gcloud on PATH fails them); elsewhere they are skipped without gcloud.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyless.domain.lifetimes import parse_timestamp
from tests.compat.gcloud_support import ROUTES, sdk_version
from tests.conftest import KEYLESS, Server, start_server

PROJECT = "keyless-dev"
SEED_PROJECT = "seed-flow-project"
APIS = ("iam.googleapis.com", "iamcredentials.googleapis.com", "cloudresourcemanager.googleapis.com",
        "orgpolicy.googleapis.com")
OVERRIDDEN = ("SERVICEUSAGE", "ORGPOLICY", "CLOUDRESOURCEMANAGER", "IAM", "IAMCREDENTIALS")
LIFETIME = "iam.allowServiceAccountCredentialLifetimeExtension"
CREATION = "iam.disableServiceAccountKeyCreation"


def gcloud_path() -> str:
    found = shutil.which("gcloud")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gcloud is not on PATH: CI runs the gcloud compatibility tests")
        pytest.skip("gcloud (the Google Cloud SDK) is not installed")
    return found


@dataclass
class Gcloud:
    """Runs the real gcloud against one keyless, by one route, with a configuration directory of its own."""

    binary: str
    env: dict[str, str]
    workdir: Path

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env, cwd=self.workdir,
                              timeout=180, stdin=subprocess.DEVNULL)
        if ok:
            assert proc.returncode == 0, f"gcloud {' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--format=json").stdout)

    def fails(self, *args: str) -> str:
        proc = self.run(*args, ok=False)
        assert proc.returncode != 0, f"gcloud {' '.join(args)} succeeded: {proc.stdout}"
        return proc.stderr


@dataclass
class Keyless:
    server: Server
    token_file: Path
    endpoints: dict[str, Any]
    base: Path
    binary: str

    def gcloud(self, route: str, name: str, token_file: Path | None = None) -> Gcloud:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CLOUDSDK_", "GOOGLE_", "GCE_", "KEYLESS_"))
               and k.lower() not in ("https_proxy", "http_proxy", "no_proxy", "requests_ca_bundle", "ssl_cert_file")}
        config = self.base / f"gcloud-{name}"
        config.mkdir(exist_ok=True)
        env.update({
            "CLOUDSDK_CONFIG": str(config), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1", "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
            "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token_file or self.token_file),
            "CLOUDSDK_CORE_PROJECT": PROJECT,
        })
        if route == "proxy":
            out = subprocess.run([*KEYLESS, "--data-dir", str(self.server.data_dir), "env", "--shell", "dotenv"],
                                 capture_output=True, text=True, check=True, timeout=60)
            env.update(dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line))
            env["CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"] = self.endpoints["caBundle"]
        else:
            for api in OVERRIDDEN:
                env[f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api}"] = self.server.url + "/"
        return Gcloud(self.binary, env, self.base)

    def user_token_file(self, email: str, role: str | None = None) -> Path:
        creds = self.server.owner("POST", "/keyless/v1/users", {"email": email})["credentials"]
        if role:
            policy = self.server.owner("POST", f"/v1/projects/{PROJECT}:getIamPolicy", {})
            policy.setdefault("bindings", []).append({"role": role, "members": [f"user:{email}"]})
            self.server.owner("POST", f"/v1/projects/{PROJECT}:setIamPolicy", {"policy": policy})
        creds_file = self.base / f"{email}.json"
        creds_file.write_text(json.dumps(creds))
        path = self.base / f"{email}.token"
        path.write_text(self.server.user_token(creds_file))
        return path



def _row(call: str, route: str) -> pytest.MarkDecorator:
    return pytest.mark.compat(section="2.3", client=f"gcloud {sdk_version()}", call=call, route=ROUTES[route])


def _routes(call: str, *routes: str) -> list[Any]:
    return [pytest.param(route, marks=_row(call, route), id=route) for route in routes]

@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyless]:
    binary = gcloud_path()
    base = tmp_path_factory.mktemp("gcloud-policies")
    server = start_server(base / "data", "--proxy-port", "0", "--metadata-port", "-1", "--enforce-services")
    try:
        # The default project's APIs are turned on here; the seed flow below starts from a project without them.
        server.owner("POST", f"/v1/projects/{PROJECT}/services:batchEnable", {"serviceIds": list(APIS)})
        token_file = base / "owner.token"
        token_file.write_text(server.owner_token)
        endpoints = json.loads((server.data_dir / "endpoints.json").read_text())
        yield Keyless(server, token_file, endpoints, base, binary)
    finally:
        server.stop()


@_row("gcloud services enable / list --enabled / disable (Service Usage v1)", "proxy")
def test_services_enable_list_disable_as_the_seed_documents_start(keyless: Keyless) -> None:
    """The guides' first step, through the proxy: until it runs, the project's IAM calls are SERVICE_DISABLED."""
    keyless.server.owner("POST", "/keyless/v1/projects", {"projectId": SEED_PROJECT})
    gcloud = keyless.gcloud("proxy", "seed")
    refused = gcloud.fails("iam", "service-accounts", "list", f"--project={SEED_PROJECT}")
    assert "Identity and Access Management (IAM) API has not been used in project" in refused
    assert "SERVICE_DISABLED" in refused or "PERMISSION_DENIED" in refused
    gcloud.run("services", "enable", "iam.googleapis.com", "iamcredentials.googleapis.com",
               f"--project={SEED_PROJECT}")
    enabled = gcloud.run("services", "list", "--enabled", f"--project={SEED_PROJECT}").stdout
    assert "iam.googleapis.com" in enabled and "IAM Service Account Credentials API" in enabled
    assert "storage.googleapis.com" in enabled  # Google's defaults for a new project
    gcloud.run("iam", "service-accounts", "create", "seed-robot", f"--project={SEED_PROJECT}")
    assert "seed-robot@" in gcloud.run("iam", "service-accounts", "list", f"--project={SEED_PROJECT}").stdout
    gcloud.run("services", "disable", "iamcredentials.googleapis.com", f"--project={SEED_PROJECT}")
    names = gcloud.run("services", "list", "--enabled", "--format=value(config.name)",
                       f"--project={SEED_PROJECT}").stdout.split()
    assert "iam.googleapis.com" in names and "iamcredentials.googleapis.com" not in names


@_row("gcloud services enable / list --enabled / disable (Service Usage v1)", "overrides")
def test_services_through_endpoint_overrides(keyless: Keyless) -> None:
    gcloud = keyless.gcloud("overrides", "services-overrides")
    gcloud.run("services", "enable", "sts.googleapis.com")
    assert "sts.googleapis.com" in gcloud.run("services", "list", "--enabled", "--format=value(config.name)").stdout
    gcloud.run("services", "disable", "sts.googleapis.com")
    assert "sts.googleapis.com" not in gcloud.run("services", "list", "--enabled",
                                                  "--format=value(config.name)").stdout
    assert "Invalid service name" in gcloud.fails("services", "enable", "not-a-service")


@pytest.mark.parametrize("route", _routes("gcloud resource-manager org-policies describe / allow / deny / list / delete",
                                         "proxy", "overrides"))
def test_resource_manager_org_policies(keyless: Keyless, route: str) -> None:
    """gcloud resource-manager org-policies: describe, allow, deny, list, delete, enable-enforce, disable-enforce
    (Resource Manager v1), and the key-creation constraint refusing `gcloud iam service-accounts keys create`."""
    gcloud = keyless.gcloud(route, f"v1-{route}")
    project = f"--project={PROJECT}"
    assert gcloud.json("resource-manager", "org-policies", "describe", LIFETIME, project) == {
        "constraint": f"constraints/{LIFETIME}", "etag": "ACAB"}
    gcloud.run("resource-manager", "org-policies", "allow", LIFETIME, "a@x.iam.gserviceaccount.com",
               "b@x.iam.gserviceaccount.com", project)
    described = gcloud.json("resource-manager", "org-policies", "describe", LIFETIME, project)
    assert described["listPolicy"] == {"allowedValues": ["a@x.iam.gserviceaccount.com", "b@x.iam.gserviceaccount.com"]}
    listed = gcloud.run("resource-manager", "org-policies", "list", project, "--show-unset").stdout
    assert f"constraints/{LIFETIME}" in listed and "constraints/iam.serviceAccountKeyExpiryHours" in listed
    gcloud.run("resource-manager", "org-policies", "delete", LIFETIME, project)
    gcloud.run("resource-manager", "org-policies", "deny", LIFETIME, "c@x.iam.gserviceaccount.com", project)
    assert gcloud.json("resource-manager", "org-policies", "describe", LIFETIME, project)["listPolicy"] == {
        "deniedValues": ["c@x.iam.gserviceaccount.com"]}
    gcloud.run("resource-manager", "org-policies", "delete", LIFETIME, project)

    robot = f"v1-robot-{route}"
    email = f"{robot}@{PROJECT}.iam.gserviceaccount.com"
    gcloud.run("iam", "service-accounts", "create", robot)
    gcloud.run("resource-manager", "org-policies", "enable-enforce", CREATION, project)
    refused = gcloud.fails("iam", "service-accounts", "keys", "create", str(keyless.base / f"{robot}.json"),
                           f"--iam-account={email}")
    assert "FAILED_PRECONDITION: Key creation is not allowed on this service account." in refused
    assert f"type: constraints/{CREATION}" in refused
    assert f"?configvalue={robot}%40{PROJECT}.iam.gserviceaccount.com" in refused
    gcloud.run("resource-manager", "org-policies", "disable-enforce", CREATION, project)
    gcloud.run("iam", "service-accounts", "keys", "create", str(keyless.base / f"{robot}.json"),
               f"--iam-account={email}")
    gcloud.run("resource-manager", "org-policies", "delete", CREATION, project)


@pytest.mark.parametrize("route", _routes("gcloud org-policies set-policy / describe / list / reset / delete (v2)",
                                         "overrides", "proxy"))
def test_org_policies_v2(keyless: Keyless, route: str) -> None:
    """gcloud org-policies: set-policy, describe (and --effective), list --show-unset, reset, delete (Org Policy
    v2); the key expiry constraint limits the keys gcloud creates."""
    gcloud = keyless.gcloud(route, f"v2-{route}")
    project = f"--project={PROJECT}"
    name = f"projects/{PROJECT}/policies/iam.serviceAccountKeyExpiryHours"
    policy_file = keyless.base / f"expiry-{route}.json"
    policy_file.write_text(json.dumps({"name": name, "spec": {"rules": [{"values": {"allowedValues": ["8h"]}}]}}))
    created = gcloud.json("org-policies", "set-policy", str(policy_file))
    assert created["name"] == name and created["spec"]["rules"] == [{"values": {"allowedValues": ["8h"]}}]
    assert gcloud.json("org-policies", "describe", "iam.serviceAccountKeyExpiryHours", project)["spec"][
        "etag"] == created["spec"]["etag"]
    assert gcloud.json("org-policies", "describe", "iam.serviceAccountKeyExpiryHours", "--effective", project)[
        "spec"]["rules"] == [{"values": {"allowedValues": ["8h"]}}]
    listed = gcloud.run("org-policies", "list", project, "--show-unset").stdout
    assert "iam.serviceAccountKeyExpiryHours" in listed and "iam.disableServiceAccountKeyUpload" in listed

    robot = f"v2-robot-{route}"
    email = f"{robot}@{PROJECT}.iam.gserviceaccount.com"
    gcloud.run("iam", "service-accounts", "create", robot)
    before = time.time()
    gcloud.run("iam", "service-accounts", "keys", "create", str(keyless.base / f"{robot}.json"),
               f"--iam-account={email}")
    keys = gcloud.json("iam", "service-accounts", "keys", "list", f"--iam-account={email}", "--managed-by=user")
    assert len(keys) == 1
    lifetime = parse_timestamp(keys[0]["validBeforeTime"]) - parse_timestamp(keys[0]["validAfterTime"])
    assert 8 * 3600 - 600 <= lifetime <= 8 * 3600 + 600  # the certificate's validity starts a little back
    assert parse_timestamp(keys[0]["validBeforeTime"]) <= before + 8 * 3600 + 60

    reset = gcloud.json("org-policies", "reset", "iam.serviceAccountKeyExpiryHours", project)
    assert reset["spec"].get("reset") is True and "rules" not in reset["spec"]
    gcloud.run("org-policies", "delete", "iam.serviceAccountKeyExpiryHours", project)
    assert "NOT_FOUND" in gcloud.fails("org-policies", "describe", "iam.serviceAccountKeyExpiryHours", project)
    bad = keyless.base / f"bad-{route}.json"
    bad.write_text(json.dumps({"name": name, "spec": {"rules": [{"values": {"allowedValues": ["7h"]}}]}}))
    assert "INVALID_ARGUMENT" in gcloud.fails("org-policies", "set-policy", str(bad))
    assert "NOT_FOUND" in gcloud.fails("org-policies", "describe", "iam.serviceAccountKeyExpiryHours", project)


@_row("gcloud services / org-policies by a project viewer: PERMISSION_DENIED, exit 1", "proxy")
def test_only_who_may_changes_services_and_policies(keyless: Keyless) -> None:
    """A project viewer reads the enabled services and the policies, and changes neither: gcloud exits 1 with
    keyless's 403."""
    viewer = keyless.gcloud("proxy", "viewer", keyless.user_token_file("viewer@example.com", "roles/viewer"))
    assert "iam.googleapis.com" in viewer.run("services", "list", "--enabled").stdout
    viewer.run("resource-manager", "org-policies", "describe", CREATION, f"--project={PROJECT}")
    denied = viewer.fails("services", "disable", "iam.googleapis.com")
    assert "serviceusage.services.disable" in denied
    denied = viewer.fails("resource-manager", "org-policies", "enable-enforce", CREATION, f"--project={PROJECT}")
    assert "orgpolicy.policy.set" in denied
    owner = keyless.gcloud("overrides", "owner-check")
    assert "iam.googleapis.com" in owner.run("services", "list", "--enabled", "--format=value(config.name)").stdout
    assert owner.json("resource-manager", "org-policies", "describe", CREATION, f"--project={PROJECT}")[
        "etag"] == "ACAB"
