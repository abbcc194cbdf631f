"""`keyless apply`, `keyless export` and `keyless serve --seed`: idempotent, and export then apply round-trips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

from keyless.cli.seed_schema import SCHEMA
from tests.cli.support import WARNING, kl, tokeninfo, uid
from tests.conftest import REPO, Server, start_server

EXAMPLE = REPO / "docs" / "seed-example.yaml"
PRIV = "priv-sa@keyless-dev.iam.gserviceaccount.com"
CALLER = "caller-sa@keyless-dev.iam.gserviceaccount.com"


def test_apply_the_example_then_export_reproduces_it_on_an_empty_server(tmp_path: Path) -> None:
    first = start_server(tmp_path / "a")
    second: Server | None = None
    try:
        creds = tmp_path / "creds"
        applied = kl(first, "apply", str(EXAMPLE), "--credentials-dir", str(creds))
        assert applied.stderr.rstrip().endswith(f"Applied [{EXAMPLE}]: 11 created, 5 updated, 1 unchanged.")
        assert "Created user [alice@example.com]; credentials written to" in applied.stderr
        assert sorted(p.name for p in creds.iterdir()) == ["alice@example.com.json", "bob@example.com.json",
                                                           f"{CALLER}.json"]
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in creds.iterdir())

        # What apply wrote is usable at once: Alice and the caller's key file impersonate priv-sa.
        for credential in (creds / "alice@example.com.json", creds / f"{CALLER}.json"):
            token = kl(first, "--credential-file", str(credential), "auth", "print-access-token",
                       f"--impersonate-service-account={PRIV}").stdout.strip()
            assert tokeninfo(first, token).json()["email"] == PRIV
        listed = kl(first, "iam", "service-accounts", "list", "--project", "data-project",
                    "--format=value(email,disabled)").stdout
        assert listed == "legacy-batch@data-project.iam.gserviceaccount.com\tTrue\n"

        again = kl(first, "apply", str(EXAMPLE), "--credentials-dir", str(creds))
        assert again.stderr == f"Applied [{EXAMPLE}]: 0 created, 0 updated, 16 unchanged.\n"

        exported = kl(first, "export").stdout
        state = yaml.safe_load(exported)
        jsonschema.validate(state, SCHEMA)
        example = yaml.safe_load(EXAMPLE.read_text())
        assert {u["email"] for u in example["users"]} < {u["email"] for u in state["users"]}
        assert state["groups"] == example["groups"]
        assert state["metadata"] == example["metadata"]
        project = next(p for p in state["projects"] if p["projectId"] == "keyless-dev")
        assert project["orgPolicies"] == example["projects"][0]["orgPolicies"]
        priv = next(a for a in project["serviceAccounts"] if a["accountId"] == "priv-sa")
        conditional = next(b for b in priv["bindings"] if "condition" in b)
        assert conditional["condition"]["title"] == "office-hours"
        assert conditional["members"] == ["group:platform-team@example.com"]

        seed = tmp_path / "exported.yaml"
        kl(first, "export", "--output", str(seed))
        assert seed.read_text() == exported

        # An empty server started with --seed ends up in the same state.
        second = start_server(tmp_path / "b", "--seed", str(seed))
        assert kl(second, "export").stdout == exported
        assert (second.data_dir / "credentials" / "alice@example.com.json").exists()
        assert kl(second, "export", "--format=json").stdout == json.dumps(state, indent=2) + "\n"
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_apply_updates_what_differs_and_never_removes_bindings(server: Server, tmp_path: Path) -> None:
    project = f"seed-{uid()}"
    seed = tmp_path / "seed.yaml"
    seed.write_text("""
projects:
  - projectId: $project
    serviceAccounts:
      - accountId: worker
        displayName: Worker
        bindings:
          - role: roles/iam.serviceAccountTokenCreator
            members: [user:OWNER@keyless.local]
""")
    created = kl(server, "apply", str(seed), "--var", f"project={project}")
    assert created.stderr.splitlines()[-1] == f"Applied [{seed}]: 2 created, 1 updated, 0 unchanged."
    worker = f"worker@{project}.iam.gserviceaccount.com"
    kl(server, "auth", "print-access-token", "--impersonate-service-account", worker)
    kl(server, "iam", "service-accounts", "add-iam-policy-binding", worker, "--member=user:extra@example.com",
       "--role=roles/iam.serviceAccountUser")

    seed.write_text(seed.read_text().replace("Worker", "Worker v2").replace(
        "        displayName", "        disabled: true\n        displayName"))
    updated = kl(server, "apply", str(seed), "--var", f"project={project}", "-q")
    assert updated.stderr == ""
    described = yaml.safe_load(kl(server, "iam", "service-accounts", "describe", worker).stdout)
    assert described["displayName"] == "Worker v2" and described["disabled"] is True
    policy = json.loads(kl(server, "iam", "service-accounts", "get-iam-policy", worker, "--format=json").stdout)
    assert {"members": ["user:extra@example.com"], "role": "roles/iam.serviceAccountUser"} in policy["bindings"]
    assert kl(server, "apply", str(seed), "--var", f"project={project}").stderr.splitlines()[-1].endswith(
        "0 created, 0 updated, 3 unchanged.")


def test_invalid_seed_files_are_usage_errors(server: Server, tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("projects:\n  - projectId: keyless-dev\n    serviceAccounts:\n      - acountId: typo-sa\n")
    proc = kl(server, "apply", str(seed), expect=2)
    assert proc.stderr.startswith(f"ERROR: (keyless.apply) Invalid seed file [{seed}]: projects.0.serviceAccounts.0:")
    assert "'accountId' is a required property" in proc.stderr
    seed.write_text("projects: [unclosed")
    assert "is not valid YAML" in kl(server, "apply", str(seed), expect=2).stderr
    assert "Unable to read the seed file" in kl(server, "apply", str(tmp_path / "missing.yaml"), expect=1).stderr
    assert kl(server, "apply", str(seed), "--var", "novalue", expect=2).stderr.startswith("ERROR: (keyless.apply)")


def test_serve_refuses_to_start_with_a_bad_seed(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("metadata:\n  serviceAccount: missing@keyless-dev.iam.gserviceaccount.com\n")
    proc = subprocess.run([sys.executable, "-m", "keyless", "serve", "--port", "0", "--data-dir",
                           str(tmp_path / "data"), "--seed", str(seed)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"--seed {seed}: INVALID_ARGUMENT: Service account missing@keyless-dev.iam.gserviceaccount.com" in proc.stderr
    assert not (tmp_path / "data" / "endpoints.json").exists()


def test_seed_files_may_come_from_stdin(server: Server) -> None:
    project = f"stdin-{uid()}"
    out = kl(server, "apply", "-", input=f"projects:\n  - projectId: {project}\n")
    assert out.stderr.splitlines() == [f"Created project [{project}].", "Applied [-]: 1 created, 0 updated, 0 unchanged."]
    assert WARNING not in out.stderr


def test_the_example_seed_writes_credentials_into_the_data_dir(fresh_server: Server) -> None:
    """Applied as written, without --credentials-dir: nothing lands in the checkout."""
    applied = fresh_server.cli("apply", str(EXAMPLE))
    assert "credentials written to" in applied.stderr
    assert not (REPO / "docs" / "credentials").exists()
    written = fresh_server.data_dir / "credentials" / "alice@example.com.json"
    assert written.exists() and written.stat().st_mode & 0o777 == 0o600


def test_export_leaves_out_what_a_deleted_account_leaves_behind(fresh_server: Server) -> None:
    # Deleting an account leaves deleted:serviceAccount:... in groups and the metadata attachment; a seed names
    # live principals only, so the export stays a valid seed file.
    email = fresh_server.create_sa("gone-bot")
    fresh_server.owner("PUT", "/keyless/v1/groups/team@example.com",
                       {"members": [f"serviceAccount:{email}", "user:bob@example.com"]})
    fresh_server.owner("PUT", "/keyless/v1/metadata", {"serviceAccount": email})
    fresh_server.owner("DELETE", f"/v1/projects/-/serviceAccounts/{email}")
    state = yaml.safe_load(kl(fresh_server, "export").stdout)
    jsonschema.validate(state, SCHEMA)
    assert state["groups"] == [{"email": "team@example.com", "members": ["user:bob@example.com"]}]
    assert "metadata" not in state


def test_seed_files_hold_workload_identity_pools(tmp_path: Path) -> None:
    """Pools and OIDC providers in a seed: created, then unchanged, then updated where they differ; a binding
    names the pool by the project's id (apply writes its number); export reproduces them on another server."""
    from tests.federation.issuer import ISSUER, Issuer

    issuer = Issuer()
    seed = {"projects": [{"projectId": "fed-project", "workloadIdentityPools": [{
        "poolId": "cluster", "displayName": "Cluster", "providers": [{
            "providerId": "k8s-oidc", "attributeMapping": {"google.subject": "assertion.sub"},
            "attributeCondition": "assertion.sub.startsWith('system:serviceaccount:prod:')",
            "oidc": {"issuerUri": ISSUER, "jwksJson": issuer.jwks()}}]}],
        "serviceAccounts": [{"accountId": "workload-sa", "bindings": [{
            "role": "roles/iam.workloadIdentityUser",
            "members": ["principalSet://iam.googleapis.com/projects/fed-project/locations/global/"
                        "workloadIdentityPools/cluster/*"]}]}]}]}
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(seed))
    first = start_server(tmp_path / "a")
    second: Server | None = None
    try:
        applied = kl(first, "apply", str(path)).stderr
        assert "Created workload identity pool [cluster]." in applied
        assert "Created workload identity pool provider [k8s-oidc]." in applied
        assert kl(first, "apply", str(path)).stderr.endswith("0 created, 0 updated, 5 unchanged.\n")
        number = first.owner("GET", "/v1/projects/fed-project")["projectNumber"]
        email = "workload-sa@fed-project.iam.gserviceaccount.com"
        policy = first.owner("POST", f"/v1/projects/-/serviceAccounts/{email}:getIamPolicy")
        assert policy["bindings"][0]["members"] == [
            f"principalSet://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/cluster/*"]
        seed["projects"][0]["workloadIdentityPools"][0]["displayName"] = "Prod cluster"
        path.write_text(yaml.safe_dump(seed))
        assert "Updated workload identity pool [cluster] (displayName)." in kl(first, "apply", str(path)).stderr

        exported = kl(first, "export").stdout
        state = yaml.safe_load(exported)
        jsonschema.validate(state, SCHEMA)
        project = next(p for p in state["projects"] if p["projectId"] == "fed-project")
        assert project["workloadIdentityPools"] == [{**seed["projects"][0]["workloadIdentityPools"][0]}]
        assert project["serviceAccounts"][0]["bindings"][0]["members"] == seed["projects"][0]["serviceAccounts"][
            0]["bindings"][0]["members"]
        out = tmp_path / "exported.yaml"
        out.write_text(exported)
        second = start_server(tmp_path / "b", "--seed", str(out))
        assert kl(second, "export").stdout == exported
    finally:
        first.stop()
        if second is not None:
            second.stop()
