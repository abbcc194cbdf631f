"""The README's walkthrough runs as written against a fresh server (curl and Python blocks)."""

from __future__ import annotations

import json
import os
import re
import subprocess

from tests.conftest import REPO, Server


def _block(lang: str) -> str:
    readme = (REPO / "README.md").read_text()
    walkthrough = readme.split("## Walkthrough", 1)[1]
    match = re.search(rf"```{lang}\n(.*?)```", walkthrough, re.S)
    assert match, f"no {lang} block in the walkthrough"
    return match.group(1)


def _env(srv: Server) -> dict[str, str]:
    """A shell at the checkout's root whose data dir is the test server's (as ./.keyless would be)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KEYLESS_", "GOOGLE_", "GCE_")) and "proxy" not in k.lower()}
    env["KEYLESS_DATA_DIR"] = str(srv.data_dir)
    return env


def _run_shell(srv: Server, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env=_env(srv))


def _run_python(srv: Server) -> None:
    """The Python block, as the README says: in the shell where `eval "$(keyless env)"` ran."""
    script = 'export PATH="$PWD/.venv/bin:$PATH"; eval "$(keyless env)"; python3 -c "$README_PYTHON"'
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env={**_env(srv), "README_PYTHON": _block("python")})
    assert proc.returncode == 0, proc.stderr
    assert "py-target@keyless-dev.iam.gserviceaccount.com" in proc.stdout


def test_readme_walkthrough_shell_then_python(fresh_server: Server) -> None:
    proc = _run_shell(fresh_server, _block("sh"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert '"accessToken":"ya29.' in out
    assert '"token":"ey' in out
    assert '"signedBlob":' in out and '"signedJwt":"ey' in out
    assert "INVALID_ARGUMENT" in out  # the 43200s request before the constraint
    assert "iam.allowServiceAccountCredentialLifetimeExtension" in out

    _run_python(fresh_server)


def test_the_python_example_stands_alone(fresh_server: Server) -> None:
    """Without the shell steps first: it makes its own accounts and bindings."""
    _run_python(fresh_server)


def test_every_token_the_walkthrough_mints_is_audited(fresh_server: Server) -> None:
    proc = _run_shell(fresh_server, _block("sh"))
    assert proc.returncode == 0, proc.stderr
    log = fresh_server.owner("GET", "/v1/auditLog?pageSize=1000")["entries"]
    methods = [e["protoPayload"]["methodName"] for e in log]
    # the owner's refresh, two account creations, the policy, four credentials, the refused 43200s request,
    # and the org-policy change
    for method in ("oauth2.Token", "google.iam.admin.v1.CreateServiceAccount", "google.iam.admin.v1.SetIAMPolicy",
                   "GenerateAccessToken", "GenerateIdToken", "SignBlob", "SignJwt",
                   "google.cloud.orgpolicy.v2.OrgPolicy.UpdatePolicy"):
        assert method in methods, method
    minted = [e for e in log if e["protoPayload"]["methodName"] == "GenerateAccessToken"]
    assert len(minted) == 2
    ok, refused = minted
    assert ok["protoPayload"]["response"]["tokenHash"] and not ok["protoPayload"]["status"]
    assert refused["protoPayload"]["status"]["code"] == 3 and "lifetime" in refused["protoPayload"]["status"]["message"].lower()
    assert ok["protoPayload"]["authenticationInfo"]["principalEmail"] == "owner@keyless.local"
    granted = ok["protoPayload"]["authorizationInfo"]
    assert {"permission": "iam.serviceAccounts.getAccessToken", "granted": True} .items() <= granted[0].items()
    # No token value, private key or client secret anywhere in the log.
    text = json.dumps(log)
    owner = json.loads(fresh_server.owner_file.read_text())
    for secret in ("ya29.", "eyJ", "PRIVATE KEY", owner["client_secret"], owner["refresh_token"]):
        assert secret not in text


def test_keyless_audit_cli_filters(fresh_server: Server) -> None:
    target = fresh_server.create_sa("audited-target")
    other = fresh_server.create_sa("audited-other")
    fresh_server.grant(target, "user:owner@keyless.local")
    for email in (target, other):
        fresh_server.owner("POST", f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
                           {"scope": ["https://www.googleapis.com/auth/cloud-platform"]},
                           expect=200 if email == target else 403)
    out = fresh_server.cli("audit", "--account", other, "--denied", "--format", "json", "--since", "15m").stdout
    entries = [json.loads(line) for line in out.splitlines()]
    assert [e["protoPayload"]["methodName"] for e in entries] == ["GenerateAccessToken"]
    assert entries[0]["protoPayload"]["status"]["code"] == 7
    out = fresh_server.cli("audit", "--account", target, "--format", "json").stdout
    methods = [json.loads(line)["protoPayload"]["methodName"] for line in out.splitlines()]
    assert methods == ["GenerateAccessToken", "google.iam.admin.v1.SetIAMPolicy",
                       "google.iam.admin.v1.CreateServiceAccount"]  # newest first
    table = fresh_server.cli("audit", "--caller", "owner@keyless.local").stdout
    assert "GenerateAccessToken" in table and "DENIED" in table
