"""The gcloud-shaped commands: account and key life cycle, policies with conditions, output formats, errors."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cli.support import TOKEN_CREATOR, create_sa, key_file, kl, tokeninfo, uid
from tests.conftest import KEYLESS, Server


def test_service_account_life_cycle(server: Server, tmp_path: Path) -> None:
    name = f"cycle-{uid()}"
    email = f"{name}@keyless-dev.iam.gserviceaccount.com"
    kl(server, "iam", "service-accounts", "create", name, "--display-name", "Before", "--description", "d1")
    described = yaml.safe_load(kl(server, "iam", "service-accounts", "describe", email).stdout)
    assert described["displayName"] == "Before" and described["description"] == "d1"
    unique_id = described["uniqueId"]

    updated = kl(server, "iam", "service-accounts", "update", email, "--display-name", "After")
    assert yaml.safe_load(updated.stdout)["displayName"] == "After"
    assert updated.stderr.strip() == f"Updated service account [{email}]."
    assert kl(server, "iam", "service-accounts", "update", email, expect=2).stderr.startswith(
        "ERROR: (keyless.iam.service-accounts.update) Specify at least one of")

    listed = kl(server, "iam", "service-accounts", "list").stdout.splitlines()
    assert listed[0].split() == ["DISPLAY", "NAME", "EMAIL", "DISABLED"]
    assert any(line.split() == ["After", email, "False"] for line in listed)

    kl(server, "iam", "service-accounts", "add-iam-policy-binding", email, "--member=user:owner@keyless.local",
       f"--role={TOKEN_CREATOR}")
    disabled = kl(server, "iam", "service-accounts", "disable", email)
    assert disabled.stderr.strip() == f"Disabled service account [{email}]."
    assert f"{email}\tTrue" in kl(server, "iam", "service-accounts", "list", "--format=value(email,disabled)").stdout
    refused = kl(server, "auth", "print-access-token", "--impersonate-service-account", email, expect=1)
    assert "FAILED_PRECONDITION" in refused.stderr
    kl(server, "iam", "service-accounts", "enable", email)
    assert kl(server, "auth", "print-access-token", "--impersonate-service-account", email).stdout.startswith("ya29.")

    deleted = kl(server, "iam", "service-accounts", "delete", email, "--quiet")
    assert deleted.stderr.strip() == f"deleted service account [{email}]"
    gone = kl(server, "iam", "service-accounts", "describe", email, expect=1)
    assert gone.stderr.startswith("ERROR: (keyless.iam.service-accounts.describe) NOT_FOUND: ")
    restored = kl(server, "iam", "service-accounts", "undelete", unique_id, "--format=value(restoredAccount.email)")
    assert restored.stdout.strip() == email
    # Undelete restores the account's own policy too.
    policy = kl(server, "iam", "service-accounts", "get-iam-policy", email, "--format=json").stdout
    assert json.loads(policy)["bindings"] == [{"members": ["user:owner@keyless.local"], "role": TOKEN_CREATOR}]


def test_key_life_cycle_and_the_key_file(server: Server, tmp_path: Path) -> None:
    email = create_sa(server, "keys")
    path = key_file(server, email, tmp_path / "key.json")
    key_id = json.loads(path.read_text())["private_key_id"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    listed = kl(server, "iam", "service-accounts", "keys", "list", "--iam-account", email, "--managed-by", "user")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["KEY_ID", "CREATED_AT", "EXPIRES_AT", "DISABLED"]
    assert row.split()[0] == key_id and row.split()[3] == "False"

    # The key file authenticates the CLI itself: a token whose email is the account's.
    token = kl(server, "--credential-file", str(path), "auth", "print-access-token").stdout.strip()
    assert tokeninfo(server, token).json()["email"] == email
    assert tokeninfo(server, token).status_code == 200

    kl(server, "iam", "service-accounts", "keys", "disable", key_id, "--iam-account", email)
    assert tokeninfo(server, token).status_code == 400  # tokens the key signed for stop working
    kl(server, "--credential-file", str(path), "auth", "print-access-token", expect=1)
    kl(server, "iam", "service-accounts", "keys", "enable", key_id, "--iam-account", email)
    kl(server, "--credential-file", str(path), "auth", "print-access-token")
    out = kl(server, "iam", "service-accounts", "keys", "delete", key_id, "--iam-account", email)
    assert out.stderr.strip() == f"deleted key [{key_id}] for service account [{email}]"
    assert kl(server, "iam", "service-accounts", "keys", "list", "--iam-account", email, "--managed-by=user",
              "--format=value(name)").stdout == ""


def test_conditional_bindings_and_set_iam_policy(server: Server, tmp_path: Path) -> None:
    project = f"cond-{uid()}"
    kl(server, "projects", "create", project)
    email = create_sa(server, "cond", project)
    condition = 'expression=request.time < timestamp("2999-01-01T00:00:00Z"),title=expires,description=a, b'
    added = kl(server, "iam", "service-accounts", "add-iam-policy-binding", email, "--member=user:owner@keyless.local",
               f"--role={TOKEN_CREATOR}", f"--condition={condition}", "--format=json")
    policy = json.loads(added.stdout)
    assert policy["version"] == 3
    assert policy["bindings"][0]["condition"] == {"expression": 'request.time < timestamp("2999-01-01T00:00:00Z")',
                                                  "title": "expires", "description": "a, b"}
    # The condition holds, so the owner may impersonate.
    kl(server, "auth", "print-access-token", "--impersonate-service-account", email)

    # A policy with conditions needs --condition=None for an unconditional binding, as gcloud asks.
    refused = kl(server, "iam", "service-accounts", "add-iam-policy-binding", email, "--member=user:x@example.com",
                 "--role=roles/iam.serviceAccountUser", expect=2)
    assert "--condition=None" in refused.stderr
    kl(server, "iam", "service-accounts", "add-iam-policy-binding", email, "--member=user:x@example.com",
       "--role=roles/iam.serviceAccountUser", "--condition=None")
    missing = kl(server, "iam", "service-accounts", "remove-iam-policy-binding", email,
                 "--member=user:nobody@example.com", "--role=roles/iam.serviceAccountUser", "--condition=None",
                 expect=1)
    assert "Policy binding with the specified principal, role, and condition not found!" in missing.stderr
    kl(server, "iam", "service-accounts", "remove-iam-policy-binding", email, "--member=user:owner@keyless.local",
       f"--role={TOKEN_CREATOR}", "--all")
    kl(server, "auth", "print-access-token", "--impersonate-service-account", email, expect=1)

    condition_file = tmp_path / "condition.yaml"
    condition_file.write_text("title: business-hours\nexpression: request.time.getHours('UTC') >= 0\n")
    from_file = kl(server, "projects", "add-iam-policy-binding", project, "--member=user:x@example.com",
                   "--role=roles/viewer", f"--condition-from-file={condition_file}", "--format=json")
    assert {"condition": {"expression": "request.time.getHours('UTC') >= 0", "title": "business-hours"},
            "members": ["user:x@example.com"], "role": "roles/viewer"} in json.loads(from_file.stdout)["bindings"]

    # set-iam-policy takes a file; a stale etag is refused.
    current = yaml.safe_load(kl(server, "iam", "service-accounts", "get-iam-policy", email).stdout)
    current["bindings"] = [{"role": TOKEN_CREATOR, "members": ["user:owner@keyless.local"]}]
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(current))
    done = kl(server, "iam", "service-accounts", "set-iam-policy", email, str(policy_file), "--format=json")
    assert json.loads(done.stdout)["bindings"] == current["bindings"]
    stale = kl(server, "iam", "service-accounts", "set-iam-policy", email, str(policy_file), expect=1)
    assert "ABORTED: There were concurrent policy changes." in stale.stderr



@pytest.mark.parametrize("kind", ["serviceAccount", "project"])
def test_the_four_policy_commands_of_each_kind(server: Server, tmp_path: Path, kind: str) -> None:
    """get-iam-policy, set-iam-policy, add- and remove-iam-policy-binding: one implementation for service accounts
    and projects, each answering with gcloud's status line for its kind."""
    if kind == "project":
        name = f"pol-{uid()}"
        kl(server, "projects", "create", name)
        group: tuple[str, ...] = ("projects",)
    else:
        name = create_sa(server, "pol")
        group = ("iam", "service-accounts")
    member, role = "user:pol@example.com", "roles/iam.serviceAccountUser"
    updated = f"Updated IAM policy for {kind} [{name}]."

    added = kl(server, *group, "add-iam-policy-binding", name, f"--member={member}", f"--role={role}",
               "--format=json")
    assert added.stderr.strip() == updated
    assert {"role": role, "members": [member]} in json.loads(added.stdout)["bindings"]
    shown = yaml.safe_load(kl(server, *group, "get-iam-policy", name).stdout)
    assert {"role": role, "members": [member]} in shown["bindings"]

    removed = kl(server, *group, "remove-iam-policy-binding", name, f"--member={member}", f"--role={role}",
                 "--format=json")
    assert removed.stderr.strip() == updated
    assert all(member not in b["members"] for b in json.loads(removed.stdout).get("bindings", []))

    current = yaml.safe_load(kl(server, *group, "get-iam-policy", name).stdout)
    current["bindings"] = [*current.get("bindings", []), {"role": role, "members": ["user:file@example.com"]}]
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(current))
    replaced = kl(server, *group, "set-iam-policy", name, str(policy_file), "--format=json")
    assert replaced.stderr.strip() == updated
    assert json.loads(replaced.stdout)["bindings"] == current["bindings"]

def test_formats(server: Server) -> None:
    email = create_sa(server, "fmt")
    as_json = json.loads(kl(server, "iam", "service-accounts", "describe", email, "--format", "json").stdout)
    assert as_json["email"] == email and list(as_json) == sorted(as_json)
    as_yaml = yaml.safe_load(kl(server, "--format=yaml", "iam", "service-accounts", "describe", email).stdout)
    assert as_yaml == as_json
    value = kl(server, "iam", "service-accounts", "describe", email, "--format=value(email, uniqueId)").stdout
    assert value == f"{email}\t{as_json['uniqueId']}\n"
    projected = json.loads(kl(server, "iam", "service-accounts", "describe", email,
                              "--format=json(email,name.basename())").stdout)
    assert projected == {"email": email, "name": email}
    table = kl(server, "iam", "service-accounts", "describe", email,
               '--format=table(email:label="ACCOUNT EMAIL", projectId)').stdout.splitlines()
    assert table[0].split() == ["ACCOUNT", "EMAIL", "PROJECT_ID"]
    assert table[1].split() == [email, "keyless-dev"]
    listed = kl(server, "iam", "service-accounts", "list", "--format=yaml").stdout
    documents = [d for d in yaml.safe_load_all(listed) if d]
    assert listed.startswith("---\n") and email in [d["email"] for d in documents]
    csv_out = kl(server, "iam", "service-accounts", "list", "--format=csv[no-heading](email)").stdout
    assert email in csv_out.splitlines()
    bad = kl(server, "iam", "service-accounts", "list", "--format=xml", expect=2)
    assert bad.stderr.startswith("ERROR: (keyless.iam.service-accounts.list) Unknown format 'xml'")


def test_exit_codes_and_error_messages(server: Server, tmp_path: Path) -> None:
    usage = kl(server, "iam", "service-accounts", "create", expect=2)
    assert usage.stderr.startswith("ERROR: (keyless.iam.service-accounts.create) Missing argument 'NAME'.")
    assert "keyless iam service-accounts create --help" in usage.stderr
    unknown = kl(server, "iam", "service-accounts", "frobnicate", expect=2)
    assert unknown.stderr.startswith("ERROR: (keyless.iam.service-accounts) No such command 'frobnicate'.")
    kl(server, "auth", "print-access-token", "--lifetime", "10m", expect=2)
    kl(server, "auth", "print-access-token", "--impersonate-service-account", "x@y.iam.gserviceaccount.com",
       "--lifetime", "soon", expect=2)
    no_value = kl(server, "iam", "service-accounts", "list", "--format", expect=2)
    assert "--format needs a value" in no_value.stderr

    denied = kl(server, "iam", "service-accounts", "describe", "nobody@keyless-dev.iam.gserviceaccount.com",
                expect=1)
    assert denied.stdout == ""
    assert denied.stderr == ("ERROR: (keyless.iam.service-accounts.describe) NOT_FOUND: Service account projects/"
                             "keyless-dev/serviceAccounts/nobody@keyless-dev.iam.gserviceaccount.com does not "
                             "exist.\n")
    bad_creds = tmp_path / "bad.json"
    bad_creds.write_text('{"type": "authorized_user", "client_id": "x", "client_secret": "y", "refresh_token": "z"}')
    refused = kl(server, "--credential-file", str(bad_creds), "iam", "service-accounts", "list", expect=1)
    assert "There was a problem refreshing your current auth tokens: invalid_grant" in refused.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")}
    proc = subprocess.run([*KEYLESS, "--data-dir", str(tmp_path / "none"), "auth", "print-access-token"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and "Start one with `keyless serve`" in proc.stderr


def test_global_flags_anywhere_and_url_without_data_dir(server: Server, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")}
    for args in (["--url", server.url, "--credential-file", str(server.owner_file), "projects", "describe",
                  "keyless-dev", "--format", "value(projectId)"],
                 ["projects", "--format=value(projectId)", "describe", f"--url={server.url}", "keyless-dev",
                  f"--credential-file={server.owner_file}"]):
        proc = subprocess.run([*KEYLESS, *args], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
        assert (proc.returncode, proc.stdout) == (0, "keyless-dev\n"), proc.stderr


def test_print_access_token_has_a_light_import_path(server: Server) -> None:
    """The fast path loads the standard library only, not even typer (gcloud takes ~1 s; keyless far less)."""
    proc = subprocess.run([*KEYLESS, "auth", "print-access-token"], capture_output=True, text=True,
                          env=server.env(PYTHONPROFILEIMPORTTIME="1"), timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("ya29.")
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "keyless" in imported
    for heavy in ("typer", "click", "starlette", "uvicorn", "celpy", "cryptography", "jwt", "yaml", "jsonschema",
                  "rich", "orjson"):
        assert heavy not in imported, f"{heavy} is imported by `keyless auth print-access-token`"


def test_users_set_password(server: Server, tmp_path: Path) -> None:
    email = f"pw-{uid()}@example.com"
    kl(server, "users", "add", email, "--output", str(tmp_path / "user.json"))
    out = kl(server, "users", "set-password", email, "--password-file", "-", input="correct horse battery\n")
    assert out.stderr.strip() == f"Set the password of user [{email}]."
    assert server.owner("GET", f"/keyless/v1/users/{email}")["hasPassword"] is True
    short = kl(server, "users", "set-password", email, "--password-file", "-", input="short\n", expect=1)
    assert "INVALID_ARGUMENT" in short.stderr and "at least 8 characters" in short.stderr
    (tmp_path / "pw").write_text("another long password\n")
    kl(server, "users", "set-password", email, "--password-file", str(tmp_path / "pw"))
    unknown = kl(server, "users", "set-password", "nobody@example.com", "--password-file", str(tmp_path / "pw"),
                 expect=1)
    assert "NOT_FOUND" in unknown.stderr
