"""Unchanged clients: `keyless env`, the interception proxy, the metadata server, universe-domain TLS."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from keyless.crypto.ca import LocalCA
from tests.conftest import KEYLESS, Server, start_server

UNIVERSE = "example.internal"


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("full") / "data", "--proxy-port", "0", "--metadata-port", "0",
                       "--universe-domain", UNIVERSE, "--universe-port", "0")
    yield srv
    srv.stop()


def _endpoints(srv: Server) -> dict[str, object]:
    return dict(json.loads((srv.data_dir / "endpoints.json").read_text()))


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("GOOGLE_", "GCE_", "KEYLESS_")) and k.lower() not in ("https_proxy", "http_proxy")}


SCRIPT = """
import google.auth
from google.auth import impersonated_credentials
from google.auth.transport.requests import Request
from google.oauth2 import id_token
creds, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
creds.refresh(Request())
signature = creds.sign_bytes(b"payload")
ids = impersonated_credentials.IDTokenCredentials(creds, target_audience="https://svc.example.com",
                                                  include_email=True)
ids.refresh(Request())
claims = id_token.verify_oauth2_token(ids.token, Request(), audience="https://svc.example.com")
print(type(creds).__name__, project, creds.token[:5], len(signature), claims["email"])
"""


def test_eval_keyless_env_then_unmodified_adc_script(full: Server, tmp_path: Path) -> None:
    target = full.create_sa("env-target")
    full.grant(target, "user:owner@keyless.local")
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    shell = (f'set -e; export KEYLESS_DATA_DIR="{full.data_dir}"; '
             f'{" ".join(KEYLESS)} adc impersonate {target} >/dev/null; '
             f'eval "$({" ".join(KEYLESS)} env)"; {sys.executable} {script}')
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=_clean_env(), timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    kind, project, prefix, siglen, email = proc.stdout.split()
    assert (kind, project, prefix, siglen, email) == ("Credentials", "keyless-dev", "ya29.", "256", target)


def test_keyless_env_shells(full: Server) -> None:
    def run(shell: str) -> str:
        return subprocess.run([*KEYLESS, "--data-dir", str(full.data_dir), "env", "--shell", shell],
                              capture_output=True, text=True, check=True, timeout=60).stdout

    endpoints = _endpoints(full)
    dotenv = dict(line.split("=", 1) for line in run("dotenv").splitlines())
    assert dotenv["HTTPS_PROXY"] == endpoints["proxy"]
    assert dotenv["GCE_METADATA_HOST"] == dotenv["GCE_METADATA_IP"] == str(endpoints["metadata"])[7:]
    assert dotenv["NODE_EXTRA_CA_CERTS"] == endpoints["caCert"]
    assert dotenv["REQUESTS_CA_BUNDLE"] == dotenv["SSL_CERT_FILE"] == endpoints["caBundle"]
    assert dotenv["GOOGLE_CLOUD_PROJECT"] == dotenv["CLOUDSDK_CORE_PROJECT"] == "keyless-dev"
    assert f"set -gx HTTPS_PROXY '{endpoints['proxy']}'" in run("fish")
    assert f"$Env:HTTPS_PROXY = '{endpoints['proxy']}'" in run("powershell")
    bad = subprocess.run([*KEYLESS, "--data-dir", str(full.data_dir), "env", "--shell", "tcsh"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "sh, fish, powershell or dotenv" in bad.stderr


def test_ca_bundle_and_private_key_stay_in_data_dir(full: Server) -> None:
    tls = full.data_dir / "tls"
    assert stat.S_IMODE((tls / "ca-key.pem").stat().st_mode) == 0o600
    bundle = Path(str(_endpoints(full)["caBundle"])).read_text()
    assert (tls / "ca.pem").read_text().strip() in bundle
    assert "PRIVATE KEY" not in bundle


def test_proxy_keeps_connections_alive_and_answers_google_hosts(full: Server) -> None:
    endpoints = _endpoints(full)
    session = requests.Session()
    # Per request: requests lets $REQUESTS_CA_BUNDLE override a session-level verify.
    options = {"proxies": {"https": str(endpoints["proxy"])}, "verify": str(endpoints["caBundle"]), "timeout": 10}
    for host in ("www.googleapis.com", "oauth2.googleapis.com", "www.googleapis.com"):
        r = session.get(f"https://{host}/oauth2/v1/certs", **options)  # type: ignore[arg-type]
        assert r.status_code == 200 and r.json()
    discovery = session.get("https://accounts.google.com/.well-known/openid-configuration",
                            **options).json()  # type: ignore[arg-type]
    assert discovery["token_endpoint"] == "https://oauth2.googleapis.com/token"


def test_proxy_tunnels_other_hosts_unchanged(full: Server) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            data = conn.recv(100)
            conn.sendall(data[::-1])

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    proxy = str(_endpoints(full)["proxy"]).removeprefix("http://")
    host, proxy_port = proxy.rsplit(":", 1)
    with socket.create_connection((host, int(proxy_port)), timeout=10) as conn:
        conn.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        reply = conn.recv(200)
        assert reply.startswith(b"HTTP/1.1 200")
        conn.sendall(b"not TLS, not HTTP")
        assert conn.recv(100) == b"PTTH ton ,SLT ton"
    thread.join(timeout=10)
    listener.close()


def _metadata(full: Server, path: str, headers: dict[str, str] | None = None) -> requests.Response:
    base = str(_endpoints(full)["metadata"])
    return requests.get(f"{base}{path}", headers={"Metadata-Flavor": "Google", **(headers or {})}, timeout=10)


def test_metadata_server_header_rules_and_tokens(full: Server) -> None:
    attached = full.create_sa("md-attached")
    full.owner("PUT", "/keyless/v1/metadata", {"serviceAccount": attached})
    r = _metadata(full, "/")
    assert r.status_code == 200 and r.headers["Metadata-Flavor"] == "Google" and r.headers["Content-Type"]
    no_flavor = requests.get(f"{_endpoints(full)['metadata']}/computeMetadata/v1/project/project-id", timeout=10)
    assert no_flavor.status_code == 403 and no_flavor.headers["Metadata-Flavor"] == "Google"
    forwarded = _metadata(full, "/computeMetadata/v1/project/project-id", {"X-Forwarded-For": "1.2.3.4"})
    assert forwarded.status_code == 403
    assert _metadata(full, "/computeMetadata/v1/project/project-id").text == "keyless-dev"
    info = _metadata(full, "/computeMetadata/v1/instance/service-accounts/default/?recursive=true")
    assert info.headers["Content-Type"].startswith("application/json") and info.json()["email"] == attached
    token = _metadata(full, "/computeMetadata/v1/instance/service-accounts/default/token").json()
    assert isinstance(token["expires_in"], int) and token["token_type"] == "Bearer"
    me = requests.get(f"{full.url}/v1/projects/-/serviceAccounts/{attached}",
                      headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=10)
    assert me.status_code == 403  # a real token of the attached account, which holds no role on itself
    assert me.json()["error"]["status"] == "PERMISSION_DENIED"
    identity = _metadata(full, "/computeMetadata/v1/instance/service-accounts/default/identity"
                               "?audience=https://aud.example&format=full")
    assert not identity.headers["Content-Type"].startswith("application/json")
    claims = json.loads(__import__("base64").urlsafe_b64decode(identity.text.split(".")[1] + "=="))
    assert claims["aud"] == "https://aud.example" and claims["email"] == attached
    assert claims["google"]["compute_engine"]["project_id"] == "keyless-dev"
    assert _metadata(full, "/computeMetadata/v1/instance/service-accounts/default/identity").status_code == 400
    full.owner("POST", f"/v1/projects/-/serviceAccounts/{attached}:disable", {})
    assert _metadata(full, "/computeMetadata/v1/instance/service-accounts/default/token").status_code == 403
    full.owner("POST", f"/v1/projects/-/serviceAccounts/{attached}:enable", {})


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 while presenting (and checking) a universe host name, as DNS would make it."""

    def __init__(self, port: int, server_name: str, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, context=context, timeout=10)
        self.server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)  # type: ignore[attr-defined]


def test_universe_domain_listener_serves_real_https(full: Server) -> None:
    universe = dict(_endpoints(full)["universe"])  # type: ignore[arg-type]
    assert universe["domains"] == [UNIVERSE]
    port = int(str(universe["url"]).rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(full.data_dir / "tls" / "ca.pem"))
    target = full.create_sa("universe-target")
    full.grant(target, "user:owner@keyless.local")
    conn = _SNIConnection(port, f"iamcredentials.{UNIVERSE}", ctx)
    conn.request("POST", f"/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                 body=json.dumps({"scope": ["https://www.googleapis.com/auth/cloud-platform"]}),
                 headers={"Authorization": f"Bearer {full.owner_token}", "Content-Type": "application/json",
                          "Host": f"iamcredentials.{UNIVERSE}"})
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["accessToken"].startswith("ya29.")
    with pytest.raises(ssl.SSLCertVerificationError):
        _SNIConnection(port, "iamcredentials.other.example", ctx).request("GET", "/oauth2/v1/certs")


def test_api_over_tls_and_refusal_of_plain_http_off_loopback(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "ca")
    ca.ensure()
    cert, key = ca.issue("api", ["127.0.0.1", "localhost"])
    srv = start_server(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        r = requests.get(f"{srv.url}/oauth2/v1/certs", verify=str(ca.cert_path), timeout=10)
        assert r.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{srv.url}/oauth2/v1/certs", timeout=10, verify=True)
    finally:
        srv.stop()
    refused = subprocess.run([*KEYLESS, "serve", "--host", "0.0.0.0", "--port", "0", "--data-dir",
                              str(tmp_path / "exposed")], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--tls-cert" in refused.stderr
