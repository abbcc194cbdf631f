"""The OAuth 2.0 clients keyless signs users in for, and the rules of an authorization request.

keyless answers the authorization-code flow (RFC 6749 §4.1, with PKCE, RFC 7636) only for the public clients
registered here: Google's own installed-app clients of the Cloud SDK, whose ids and (public, "not so secret")
secrets ship in gcloud's sources, and keyless's web console (``keyless.console``, a browser application with no
secret at all). Their redirect URIs are the ones Google accepts for installed apps: a loopback URL on any
port (RFC 8252 §7.3) or one of the SDK's out-of-band pages, which keyless does not serve: its sign-in page shows
the code to copy instead of redirecting there. The console's may also be an ``https`` loopback URL (a server
started with ``--tls-cert``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# googlecloudsdk/core/config.py (CLOUDSDK_CLIENT_ID, CLOUDSDK_CLIENT_NOTSOSECRET)
GCLOUD_CLIENT_ID = "32555940559.apps.googleusercontent.com"
GCLOUD_CLIENT_SECRET = "ZmssLNjJy2998hD4CTg2ejr2"
# googlecloudsdk/api_lib/auth/util.py (DEFAULT_CREDENTIALS_DEFAULT_CLIENT_ID / _SECRET): application-default login
ADC_CLIENT_ID = "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com"
ADC_CLIENT_SECRET = "d-FL95Q19q7MQmFpd7hHD0Ty"
# keyless's web console (/console/): a public client without a secret; PKCE binds its codes.
CONSOLE_CLIENT_ID = "keyless-console"

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# RFC 7636 §4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
CODE_VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# The S256 challenge: base64url (no padding) of a SHA-256 digest.
CODE_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9\-_]{43}$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,512}$")
MAX_STATE_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class PublicClient:
    """An installed application's OAuth client: its secret is public, so PKCE is what binds a code to it."""

    client_id: str
    client_secret: str
    name: str  # shown on the sign-in page
    copy_pages: tuple[str, ...]  # out-of-band redirect URIs: the page shows the code instead of redirecting
    loopback_schemes: tuple[str, ...] = ("http",)  # the schemes of the loopback redirect URIs it may use

    def secret_matches(self, given: str) -> bool:
        return hmac.compare_digest(self.client_secret.encode(), given.encode())


KNOWN_CLIENTS: dict[str, PublicClient] = {client.client_id: client for client in (
    PublicClient(GCLOUD_CLIENT_ID, GCLOUD_CLIENT_SECRET, "Google Cloud SDK (gcloud auth login)",
                 ("https://sdk.cloud.google.com/authcode.html", "https://sdk.cloud.google/authcode.html")),
    PublicClient(ADC_CLIENT_ID, ADC_CLIENT_SECRET, "Google Auth Library (gcloud auth application-default login)",
                 ("https://sdk.cloud.google.com/applicationdefaultauthcode.html",
                  "https://sdk.cloud.google/applicationdefaultauthcode.html")),
    PublicClient(CONSOLE_CLIENT_ID, "", "the keyless console", (), loopback_schemes=("http", "https")),
)}


def find_client(client_id: str) -> PublicClient | None:
    return KNOWN_CLIENTS.get(client_id)


def is_loopback_redirect(uri: str, schemes: tuple[str, ...] = ("http",)) -> bool:
    """``http://localhost[:PORT][/path]`` (or 127.0.0.1, [::1]; a scheme of ``schemes``): where an installed app
    listens for the code.

    Parsed strictly: no user info (``http://localhost@evil.example/``), no fragment, no backslash or whitespace
    (which browsers and parsers disagree about), a numeric port if any."""
    if not uri.isascii() or any(c in uri for c in "\\ \t\r\n") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        return False
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in schemes or "@" in parts.netloc or parts.fragment or uri.endswith("#"):
        return False
    if port is not None and not 0 < port < 65536:
        return False
    host = parts.hostname
    if host not in LOOPBACK_HOSTS:
        return False
    # The netloc must be exactly the host and port urlsplit read (no empty port "localhost:", no IPv6 zone).
    shown = f"[{host}]" if host == "::1" else host
    return parts.netloc.lower() in (shown, f"{shown}:{port}") and (not parts.path or parts.path.startswith("/"))


def redirect_allowed(client: PublicClient, uri: str) -> bool:
    """Whether ``client`` may have its code sent to ``uri``: a loopback URL, or exactly one of its copy pages."""
    return uri in client.copy_pages or is_loopback_redirect(uri, client.loopback_schemes)


def is_copy_page(client: PublicClient, uri: str) -> bool:
    return uri in client.copy_pages


def s256_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def verifier_matches(verifier: str, challenge: str) -> bool:
    """Whether ``verifier`` is the secret behind the S256 ``challenge`` (compared in constant time)."""
    if not CODE_VERIFIER_RE.match(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier).encode(), challenge.encode())


def parse_scopes(text: str, max_scopes: int) -> tuple[str, ...] | None:
    """The scopes of a ``scope`` parameter in the order given, duplicates dropped; None when it is malformed or
    empty or names more than ``max_scopes``."""
    scopes = tuple(dict.fromkeys(text.split(" ")))
    scopes = tuple(s for s in scopes if s)
    if not scopes or len(scopes) > max_scopes or not all(SCOPE_TOKEN_RE.match(s) for s in scopes):
        return None
    return scopes
