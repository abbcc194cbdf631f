"""Access tokens: self-contained, MAC-protected (HMAC-SHA256 under a key derived from the master key).

Format: ``ya29.<base64url(json claims)>.<base64url(mac)>``. Any replica holding the master key can verify one;
revocation and account/key state are checked against the store on every use.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

_URLSAFE = bytes.maketrans(b"+/", b"-_")
_STANDARD = bytes.maketrans(b"-_", b"+/")

PREFIX = "ya29."
# Google's access tokens can be up to 12,288 bytes; a federated token carries its principal's mapped attributes.
MAX_TOKEN_LENGTH = 12_288
_KINDS = {"s": "serviceAccount", "u": "user", "f": "federated"}


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    token_id: str
    principal_kind: str  # "serviceAccount" | "user" | "federated"
    principal_id: str  # unique id of the account, user id, or (federated) the workload identity provider's name
    scopes: tuple[str, ...]
    issued_at: float  # to the millisecond: a cut-off (account deleted, then undeleted) may fall inside a second
    expires_at: int
    key_id: str | None = None  # the user-managed key a JWT-bearer grant was signed with
    client_id: str | None = None
    # A user's token: which refresh token it was minted from (a digest), so revoking or replacing that refresh
    # token ends the access tokens it gave.
    grant: str | None = None
    # A federated token: its principal's subject, groups and attributes, as the provider's mapping made them
    # (domain.federation.FederatedIdentity.to_json without the provider).
    federated: dict[str, Any] | None = None


class TokenMinter:
    def __init__(self, mac_key: bytes) -> None:
        self._key = mac_key

    def mint(self, *, principal_kind: str, principal_id: str, scopes: tuple[str, ...], issued_at: float,
             expires_at: int, key_id: str | None = None, client_id: str | None = None,
             grant: str | None = None, federated: dict[str, Any] | None = None) -> tuple[str, AccessTokenClaims]:
        token_id = secrets.token_urlsafe(12)
        compact = {"j": token_id, "k": principal_kind[0], "p": principal_id, "s": scopes,
                   "i": round(issued_at, 3), "e": expires_at, "y": key_id, "c": client_id}
        if grant is not None:
            compact["g"] = grant
        if federated is not None:
            compact["f"] = federated
        # Unpadded base64url (as crypto.jwt.b64url), written out: a token is minted on every credential request.
        body = binascii.b2a_base64(orjson.dumps(compact), newline=False).translate(_URLSAFE).rstrip(b"=")
        mac = binascii.b2a_base64(hmac.digest(self._key, body, "sha256"), newline=False).translate(_URLSAFE)
        token = PREFIX + (body + b"." + mac.rstrip(b"=")).decode()
        return token, AccessTokenClaims(token_id, principal_kind, principal_id, scopes, issued_at, expires_at, key_id,
                                        client_id, grant, federated)

    def parse(self, token: str) -> AccessTokenClaims | None:
        """The claims of a genuine token, or None for anything forged, altered or malformed."""
        if not token.startswith(PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            return None
        body, dot, mac_b64 = token[len(PREFIX):].partition(".")
        if not dot:
            return None
        try:
            body_bytes = body.encode("ascii")
            given = mac_b64.encode("ascii")
        except UnicodeEncodeError:
            return None
        # Compared as text: base64 has several spellings of one MAC (unused trailing bits), and a token must
        # have exactly one.
        expected = binascii.b2a_base64(hmac.digest(self._key, body_bytes, "sha256"), newline=False)
        if not hmac.compare_digest(given, expected.translate(_URLSAFE).rstrip(b"=")):
            return None
        try:
            raw = orjson.loads(binascii.a2b_base64(body_bytes.translate(_STANDARD) + b"=" * (-len(body_bytes) % 4)))
            return AccessTokenClaims(
                token_id=raw["j"], principal_kind=_KINDS[raw["k"]],
                principal_id=raw["p"], scopes=tuple(raw["s"]), issued_at=float(raw["i"]),
                expires_at=int(raw["e"]), key_id=raw.get("y"), client_id=raw.get("c"), grant=raw.get("g"),
                federated=raw.get("f"),
            )
        except Exception:
            return None


def token_hash(token_id: str) -> str:
    """How the store names a token (for revocation and audit) without holding its value."""
    return hashlib.sha256(token_id.encode()).hexdigest()[:32]
