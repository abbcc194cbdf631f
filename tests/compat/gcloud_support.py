"""Running the real ``gcloud`` (and gsutil) against keyless for tests/compat/test_gcloud.py, and checking what
it printed against keyless: tokens through tokeninfo, signatures and ID tokens with the published keys.

Every run gets a scrubbed environment (nothing of the test runner's Google, proxy or CA settings), its own
HOME, and the variables of its route: the proxy (``keyless env``) or the endpoint overrides
(``keyless env --gcloud-overrides``), each with a throwaway copy of the gcloud configuration ``keyless env``
wrote in the data dir, so what one route changes (the active account, a property) never reaches the other.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from tests.conftest import KEYLESS, Server

GCLOUD = shutil.which("gcloud")
GSUTIL = shutil.which("gsutil")
OWNER = "owner@keyless.local"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
ROUTES = {"proxy": "proxy", "overrides": "api_endpoint_overrides"}  # test id: the table's route column
_SCRUB_PREFIXES = ("CLOUDSDK_", "GOOGLE_", "GCE_", "KEYLESS_", "BOTO_")
_SCRUB = {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
          "all_proxy", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "HTTPLIB2_CA_CERTS",
          "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "NODE_EXTRA_CA_CERTS"}
QUIET = {"CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
         "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true"}


def require_gcloud() -> str:
    """The gcloud on PATH. Under CI=true its absence is a failure; elsewhere the suite is skipped, saying why."""
    if GCLOUD:
        return GCLOUD
    if os.environ.get("CI") == "true":
        pytest.fail("gcloud is not on PATH: the gcloud compatibility suite must run in CI (install the Cloud SDK)")
    pytest.skip("gcloud is not on PATH: install the Google Cloud SDK to run the gcloud compatibility suite")


def sdk_version() -> str:
    """The Cloud SDK's version, from the VERSION file beside its bin/ (no gcloud start needed)."""
    if not GCLOUD:
        return "?"
    version = Path(GCLOUD).resolve().parent.parent / "VERSION"
    return version.read_text().strip() if version.exists() else "?"


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES) and k not in _SCRUB}
    env["HOME"] = str(home)
    return env


def keyless_env(srv: Server, *flags: str) -> dict[str, str]:
    """What ``keyless env [FLAGS]`` prints, as a dict."""
    out = subprocess.run([*KEYLESS, "--data-dir", str(srv.data_dir), "env", "--shell", "dotenv", *flags],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@dataclass
class Gcloud:
    """gcloud on one route: ``run`` returns the finished process; ``ok`` asserts exit 0 and returns stdout."""

    route: str
    env: dict[str, str]
    workdir: Path
    calls: list[list[str]] = field(default_factory=list)

    @classmethod
    def for_route(cls, srv: Server, route: str, base: Path) -> Gcloud:
        home = base / f"home-{route}"
        home.mkdir()
        # Without one, `gcloud init` spends seconds having gsutil write a credential-free ~/.boto template.
        (home / ".boto").write_text("")
        env = clean_env(home)
        env.update(keyless_env(srv, *(["--gcloud-overrides"] if route == "overrides" else [])))
        # A throwaway copy of the configuration `keyless env` wrote: DATA_DIR/gcloud stays as it made it.
        config = base / f"gcloud-{route}"
        shutil.copytree(env["CLOUDSDK_CONFIG"], config)
        env["CLOUDSDK_CONFIG"] = str(config)
        env["BOTO_CONFIG"] = str(config / Path(env["BOTO_CONFIG"]).name)  # the route's own boto file
        env.update(QUIET)
        workdir = base / f"work-{route}"
        workdir.mkdir()
        return cls(route, env, workdir)

    def run(self, *args: str, extra_env: dict[str, str] | None = None, stdin: str | None = None,
            program: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [program or require_gcloud(), *args]
        self.calls.append(command)
        return subprocess.run(command, capture_output=True, text=True, env={**self.env, **(extra_env or {})},
                              input=stdin, timeout=120, cwd=self.workdir)

    def ok(self, *args: str, **kwargs: Any) -> str:
        proc = self.run(*args, **kwargs)
        assert proc.returncode == 0, f"gcloud {' '.join(args)} ({self.route}) failed:\n{proc.stderr}"
        return proc.stdout

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--format=json", **kwargs))

    def denied(self, *args: str) -> str:
        """gcloud's PERMISSION_DENIED and exit code 1; its stderr."""
        proc = self.run(*args)
        assert proc.returncode == 1, f"gcloud {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}"
        assert "PERMISSION_DENIED" in proc.stderr, proc.stderr
        return proc.stderr


# ---------------------------------------------------------------- checks made against keyless


def tokeninfo(srv: Server, token: str) -> dict[str, Any]:
    r = requests.get(f"{srv.url}/tokeninfo", params={"access_token": token.strip()}, timeout=10, verify=srv.verify)
    assert r.status_code == 200, r.text
    return dict(r.json())


def check_id_token(srv: Server, token: str, email: str | None, audience: str) -> dict[str, Any]:
    """Verify an ID token with keyless's published keys; ``email`` is the claim expected (None: no claim)."""
    claims = dict(id_token.verify_token(token.strip(), Request(), audience=audience,
                                        certs_url=f"{srv.url}/oauth2/v1/certs"))
    assert claims["aud"] == audience, claims
    assert claims.get("email") == email, claims
    return claims


def verify_signature(srv: Server, email: str, message: bytes, signature: bytes) -> str:
    """RSASSA-PKCS1-v1_5/SHA-256 by one of ``email``'s published keys; the key's id."""
    r = requests.get(f"{srv.url}/service_accounts/v1/metadata/x509/{email}", timeout=10, verify=srv.verify)
    assert r.status_code == 200, r.text
    for kid, pem in r.json().items():
        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return str(kid)
        except InvalidSignature:
            continue
    raise AssertionError(f"the signature does not verify with any published key of {email}")


def verify_signed_url(srv: Server, url: str, email: str) -> dict[str, str]:
    """Rebuild a V4 signed URL's string to sign (the parameter names as the URL spells them: gcloud and gsutil
    write them in lower case) and verify its signature as ``email``; the URL's parameters."""
    parts = urlsplit(url.strip())
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    by_lower = {k.lower(): k for k in params}
    signature = bytes.fromhex(params.pop(by_lower["x-goog-signature"]))
    signer, _, scope = params[by_lower["x-goog-credential"]].partition("/")
    assert signer == email, url
    assert params[by_lower["x-goog-signedheaders"]] == "host", url
    query = "&".join(sorted(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in params.items()))
    request = "\n".join(["GET", parts.path, query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"])
    text = "\n".join(["GOOG4-RSA-SHA256", params[by_lower["x-goog-date"]], scope,
                      hashlib.sha256(request.encode()).hexdigest()])
    verify_signature(srv, email, text.encode(), signature)
    return {k.lower(): v for k, v in params.items()}


@contextmanager
def storage_stand_in(tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """A stand-in for Cloud Storage's XML API (which keyless does not serve) that answers HEAD with 200:
    ``gcloud storage sign-url`` and ``gsutil signurl`` probe the URL they signed there. Over HTTPS with ``tls``
    (a certificate and its key: gsutil probes ``https://`` only). Yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*map(str, tls))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
