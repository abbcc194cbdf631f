"""The pytest plugin's fixtures and helpers: isolation by project, seeds, os.environ, the clock, the metadata server."""

import os
import subprocess
import sys
from pathlib import Path

import google.auth
import pytest
from google.auth.transport.requests import Request

from keyless.cli.client import ApiError


def test_a_token_expires(keyless_isolated):
    signer = keyless_isolated.service_account("signer")
    keyless_isolated.grant(signer, "user:dev@example.com")
    token = keyless_isolated.access_token(keyless_isolated.user("dev@example.com"), impersonate=signer)
    assert keyless_isolated.token_is_valid(token)

    keyless_isolated.advance_clock("61m")
    assert not keyless_isolated.token_is_valid(token)


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_has_a_project_of_its_own(keyless, run):
    # The same account id twice: it would already exist if the two runs shared a project.
    assert keyless.service_account("worker") == f"worker@{keyless.project}.iam.gserviceaccount.com"
    assert keyless.project.startswith("t-")


@pytest.mark.keyless_seed("seeds/signer.yaml")
def test_a_marker_seed_is_applied_to_the_test_project(keyless):
    app_key = keyless.credentials_dir / f"seeded-app@{keyless.project}.iam.gserviceaccount.com.json"
    signer = f"seeded-signer@{keyless.project}.iam.gserviceaccount.com"
    assert keyless.token_is_valid(keyless.access_token(app_key, impersonate=signer))


def test_env_sets_the_variables_for_the_block_only(keyless, monkeypatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "before")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nowhere.json")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    with keyless.env() as variables:
        assert os.environ["GOOGLE_CLOUD_PROJECT"] == keyless.project
        assert os.environ["HTTPS_PROXY"] == variables["HTTPS_PROXY"]
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ
        assert Path(os.environ["REQUESTS_CA_BUNDLE"]).is_file()
    assert os.environ["GOOGLE_CLOUD_PROJECT"] == "before"
    assert os.environ["GOOGLE_APPLICATION_CREDENTIALS"] == "/nowhere.json"
    assert "HTTPS_PROXY" not in os.environ


def test_advancing_the_shared_clock_is_refused(keyless):
    with pytest.raises(RuntimeError, match="keyless_isolated"):
        keyless.advance_clock("2h")


def test_adc_from_the_metadata_server(keyless):
    attached = keyless.service_account("on-gce")
    keyless.attach(attached)
    with keyless.env():
        credentials, project = google.auth.default()
        credentials.refresh(Request())
    assert project == keyless.project
    assert credentials.service_account_email == attached
    assert keyless.token_is_valid(credentials.token)


def test_the_ini_seed_is_applied_when_the_server_starts(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nkeyless_seed = seeds/base.yaml\n")
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "base.yaml").write_text("""
users:
  - email: ini-user@example.com
projects:
  - projectId: keyless-dev
    serviceAccounts:
      - accountId: ini-signer
        bindings:
          - role: roles/iam.serviceAccountTokenCreator
            members: [user:ini-user@example.com]
""")
    (tmp_path / "test_inner.py").write_text("""
def test_seeded(keyless, keyless_server):
    user = keyless_server.data_dir / "credentials" / "ini-user@example.com.json"
    token = keyless.access_token(user, impersonate="ini-signer@keyless-dev.iam.gserviceaccount.com")
    assert keyless.token_is_valid(token)
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYLESS_", "PYTEST_"))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_helpers_keep_working_after_time_travel(keyless_isolated):
    before = keyless_isolated.service_account("before-travel")
    keyless_isolated.advance_clock("3h")  # the owner's cached token has expired on the server
    after = keyless_isolated.service_account("after-travel")
    keyless_isolated.grant(after, "user:traveller@example.com")
    token = keyless_isolated.access_token(keyless_isolated.user("traveller@example.com"), impersonate=after)
    assert keyless_isolated.token_is_valid(token)
    # A key file signs its assertions with the local clock, now hours behind the server's: refused, as Google
    # refuses a JWT outside its timeframe.
    with pytest.raises(ApiError, match="reasonable timeframe"):
        keyless_isolated.access_token(keyless_isolated.key_file(before))
    assert keyless_isolated.cli("auth", "print-access-token").stdout.startswith("ya29.")
