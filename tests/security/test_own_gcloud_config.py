"""`keyless env` gives gcloud and google-auth a configuration directory of keyless's own (DATA_DIR/gcloud, signed
in as the owner): the user's own gcloud configuration and Google credentials are never read, so none of them
is ever sent to keyless or anywhere else. These tests need no gcloud (tests/compat/test_gcloud.py drives it)."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KEYLESS, Server, start_server

DECOY_REFRESH_TOKEN = "1//decoy-refresh-token-of-the-users-real-google-account"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("own-gcloud") / "data", "--proxy-port", "0",
                          "--metadata-port", "0")
    yield server
    server.stop()


def _home_with_real_gcloud(tmp_path: Path) -> Path:
    """A HOME whose ~/.config/gcloud holds the user's real Google credentials (a decoy)."""
    home = tmp_path / "home"
    gcloud = home / ".config" / "gcloud"
    (gcloud / "configurations").mkdir(parents=True)
    (gcloud / "application_default_credentials.json").write_text(json.dumps({
        "type": "authorized_user", "client_id": "decoy.apps.googleusercontent.com", "client_secret": "decoy",
        "refresh_token": DECOY_REFRESH_TOKEN}))
    (gcloud / "active_config").write_text("default")
    (gcloud / "configurations" / "config_default").write_text("[core]\naccount = me@gmail.example\n")
    return home


def _shell(srv: Server, home: Path, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a new shell of a user with a real gcloud set-up, after ``eval "$(keyless env)"``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "GCE_", "KEYLESS_", "CLOUDSDK_CONFIG", "BOTO_"))}
    env.update(HOME=str(home), KEYLESS_DATA_DIR=str(srv.data_dir))
    keyless = " ".join(KEYLESS)
    return subprocess.run(["bash", "-c", f'eval "$({keyless} env 2>/dev/null)"; {script}'], capture_output=True,
                          text=True, env=env, timeout=120, cwd=home)


def test_google_auth_never_falls_back_to_the_users_own_gcloud_credentials(srv: Server, tmp_path: Path) -> None:
    # No ADC file made with `keyless adc`: google-auth used to take ~/.config/gcloud's ADC file, and send the
    # user's real refresh token to keyless's /token through the proxy.
    home = _home_with_real_gcloud(tmp_path)
    code = ("import google.auth; creds, _ = google.auth.default(); "
            "print(type(creds).__module__, getattr(creds, 'refresh_token', None))")
    proc = _shell(srv, home, f"{sys.executable} -c {shlex.quote(code)}")
    assert proc.returncode == 0, proc.stderr
    assert DECOY_REFRESH_TOKEN not in proc.stdout
    # With no ADC file in keyless's configuration either, ADC goes on to keyless's metadata server, as documented.
    assert proc.stdout.split() == ["google.auth.compute_engine.credentials", "None"]


def test_env_points_gcloud_at_a_private_directory_signed_in_as_the_owner(srv: Server, tmp_path: Path) -> None:
    home = _home_with_real_gcloud(tmp_path)
    proc = _shell(srv, home, 'echo "$CLOUDSDK_CONFIG|$BOTO_CONFIG|$CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"')
    assert proc.returncode == 0, proc.stderr
    config, boto, ca = proc.stdout.strip().split("|")
    endpoints = json.loads((srv.data_dir / "endpoints.json").read_text())
    assert Path(config) == (srv.data_dir / "gcloud").resolve()
    assert ca == endpoints["caBundle"]  # outranks a CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE the user's shell exports
    root = Path(config)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "credentials.db").stat().st_mode) == 0o600
    owner = json.loads(srv.owner_file.read_text())
    with sqlite3.connect(root / "credentials.db") as db:
        rows = dict(db.execute("SELECT account_id, value FROM credentials").fetchall())
    assert set(rows) == {owner["account"]}
    stored = json.loads(rows[owner["account"]])
    assert stored["type"] == "authorized_user" and stored["refresh_token"] == owner["refresh_token"]
    assert stored["client_id"] == owner["client_id"] and stored["client_secret"] == owner["client_secret"]
    assert stored["token_uri"] == "https://oauth2.googleapis.com/token"  # reached through the proxy
    properties = configparser.ConfigParser()
    properties.read(root / "configurations" / "config_default")
    assert properties["core"]["account"] == owner["account"]
    assert properties["core"]["project"] == "keyless-dev"
    assert properties["core"]["custom_ca_certs_file"] == endpoints["caBundle"]
    assert properties["component_manager"]["disable_update_check"] == "true"
    assert properties["core"]["disable_usage_reporting"] == "true"
    # gsutil reads BOTO_CONFIG instead of ~/.boto, then the owner's credentials gcloud hands it.
    assert Path(boto).parent == root and Path(boto).exists()
    gsutil = (root / "legacy_credentials" / owner["account"] / ".boto").read_text()
    assert f"gs_oauth2_refresh_token = {owner['refresh_token']}" in gsutil
    assert stat.S_IMODE((root / "legacy_credentials" / owner["account"] / ".boto").stat().st_mode) == 0o600
    # The user's own directory is left as it was.
    assert sorted(p.name for p in (home / ".config" / "gcloud").iterdir()) == [
        "active_config", "application_default_credentials.json", "configurations"]


def test_env_keeps_what_gcloud_changed_and_renews_the_owners_credential(srv: Server, tmp_path: Path) -> None:
    home = _home_with_real_gcloud(tmp_path)
    assert _shell(srv, home, "true").returncode == 0
    root = srv.data_dir / "gcloud"
    owner = json.loads(srv.owner_file.read_text())
    # What `gcloud auth activate-service-account` and `gcloud config set` leave behind ...
    properties_file = root / "configurations" / "config_default"
    properties = configparser.ConfigParser()
    properties.read(properties_file)
    properties["core"]["account"] = "caller@keyless-dev.iam.gserviceaccount.com"
    properties["core"]["project"] = "other-project"
    with properties_file.open("w") as fh:
        properties.write(fh)
    # ... and an owner row left from a refresh token since revoked, with its access token cached.
    with sqlite3.connect(root / "credentials.db") as db:
        db.execute("UPDATE credentials SET value = ? WHERE account_id = ?", ('{"stale": true}', owner["account"]))
        db.execute('INSERT INTO credentials VALUES (?, ?)', ("caller@keyless-dev.iam.gserviceaccount.com", "{}"))
    with sqlite3.connect(root / "access_tokens.db") as db:
        db.execute("CREATE TABLE access_tokens (account_id TEXT PRIMARY KEY, access_token TEXT)")
        db.executemany("INSERT INTO access_tokens VALUES (?, ?)", [(owner["account"], "ya29.old"),
                                                                   ("caller@keyless-dev.iam.gserviceaccount.com",
                                                                    "ya29.other")])
    assert _shell(srv, home, "true").returncode == 0
    properties = configparser.ConfigParser()
    properties.read(properties_file)
    assert properties["core"]["account"] == "caller@keyless-dev.iam.gserviceaccount.com"
    assert properties["core"]["project"] == "other-project"
    with sqlite3.connect(root / "credentials.db") as db:
        rows = dict(db.execute("SELECT account_id, value FROM credentials").fetchall())
    assert json.loads(rows[owner["account"]])["refresh_token"] == owner["refresh_token"]
    assert rows["caller@keyless-dev.iam.gserviceaccount.com"] == "{}"
    with sqlite3.connect(root / "access_tokens.db") as db:
        cached = dict(db.execute("SELECT account_id, access_token FROM access_tokens").fetchall())
    assert cached == {"caller@keyless-dev.iam.gserviceaccount.com": "ya29.other"}


def test_unset_undoes_the_gcloud_variables_too(srv: Server, tmp_path: Path) -> None:
    keyless = " ".join(KEYLESS)
    names = ("CLOUDSDK_CONFIG", "BOTO_CONFIG", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", "CLOUDSDK_AUTH_TOKEN_HOST",
             "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM", "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS")
    shown = "".join(f"${{{name}:-}}" for name in names)
    proc = _shell(srv, _home_with_real_gcloud(tmp_path),
                  f'eval "$({keyless} env --gcloud-overrides)"; echo "set=$CLOUDSDK_CONFIG"; '
                  f'eval "$({keyless} env --unset)"; echo "after={shown}"')
    assert proc.returncode == 0, proc.stderr
    assert f"set={(srv.data_dir / 'gcloud').resolve()}\n" in proc.stdout
    assert "after=\n" in proc.stdout


def test_gcloud_overrides_name_the_api_and_no_proxy(srv: Server) -> None:
    out = subprocess.run([*KEYLESS, "--data-dir", str(srv.data_dir), "env", "--gcloud-overrides", "--shell",
                          "dotenv"], capture_output=True, text=True, check=True, timeout=60).stdout
    variables = dict(line.split("=", 1) for line in out.splitlines())
    for api in ("IAM", "IAMCREDENTIALS", "CLOUDRESOURCEMANAGER", "SERVICEUSAGE", "ORGPOLICY"):
        assert variables[f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api}"] == f"{srv.url}/"
    assert variables["CLOUDSDK_AUTH_TOKEN_HOST"] == f"{srv.url}/token"
    assert variables["CLOUDSDK_AUTH_AUTH_HOST"] == f"{srv.url}/o/oauth2/auth"
    assert variables["CLOUDSDK_CONFIG"] == str((srv.data_dir / "gcloud").resolve())
    assert not {"HTTPS_PROXY", "https_proxy", "REQUESTS_CA_BUNDLE", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"} & set(
        variables)
    # gsutil's own file: its token URI is keyless's; its IAM Credentials host stays Google's (HTTPS only).
    boto = configparser.ConfigParser(interpolation=None)
    boto.read(variables["BOTO_CONFIG"])
    assert Path(variables["BOTO_CONFIG"]).parent == (srv.data_dir / "gcloud").resolve()
    assert boto.get("OAuth2", "provider_token_uri") == f"{srv.url}/token"
    assert not boto.has_section("Credentials")


def test_gcloud_overrides_of_an_https_api_trust_its_certificate(tmp_path: Path) -> None:
    """`keyless serve $(keyless certificate)`: the API serves HTTPS with a certificate of keyless's CA, and the
    override route names it for gcloud's OAuth flows and gsutil's IAM Credentials calls, with the CA bundle."""
    data = tmp_path / "data"
    flags = subprocess.run([*KEYLESS, "--data-dir", str(data), "certificate"], capture_output=True, text=True,
                           check=True, timeout=60).stdout.split()
    assert flags == ["--tls-cert", str((data / "tls" / "api.pem").resolve()), "--tls-key",
                     str((data / "tls" / "api-key.pem").resolve())]
    assert stat.S_IMODE((data / "tls" / "api-key.pem").stat().st_mode) == 0o600
    server = start_server(data, *flags, "--proxy-port", "0", "--metadata-port", "-1")
    try:
        bundle = str((data / "ca-bundle.pem").resolve())
        out = subprocess.run([*KEYLESS, "--data-dir", str(data), "env", "--gcloud-overrides", "--shell", "dotenv"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        variables = dict(line.split("=", 1) for line in out.splitlines())
        assert server.url.startswith("https://127.0.0.1:")
        assert variables["CLOUDSDK_AUTH_AUTH_HOST"] == f"{server.url}/o/oauth2/auth"
        assert variables["CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS"] == f"{server.url}/"
        assert variables["CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"] == variables["REQUESTS_CA_BUNDLE"] == bundle
        assert "HTTPS_PROXY" not in variables
        boto = configparser.ConfigParser(interpolation=None)
        boto.read(variables["BOTO_CONFIG"])
        port = server.url.rsplit(":", 1)[1]
        assert boto.get("Credentials", "gs_iamcredentials_host") == "127.0.0.1"
        assert boto.get("Credentials", "gs_iamcredentails_port") == port  # gsutil's spelling
        assert boto.get("OAuth2", "provider_token_uri") == f"{server.url}/token"
        assert boto.get("Boto", "ca_certificates_file") == bundle
        # The bundle trusts the API's certificate.
        import requests

        assert requests.get(f"{server.url}/oauth2/v1/certs", verify=bundle, timeout=10).status_code == 200
    finally:
        server.stop()


def test_an_unwritable_configuration_is_one_error_line(srv: Server, tmp_path: Path) -> None:
    root = srv.data_dir / "gcloud"
    root.mkdir(exist_ok=True)
    (root / "credentials.db").unlink(missing_ok=True)
    (root / "credentials.db").mkdir()  # not a database: sqlite cannot open it
    try:
        proc = subprocess.run([*KEYLESS, "--data-dir", str(srv.data_dir), "env"], capture_output=True, text=True,
                              timeout=60)
    finally:
        (root / "credentials.db").rmdir()
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("ERROR: (keyless.env) Cannot write keyless's gcloud configuration"), proc.stderr
    assert "Traceback" not in proc.stderr
