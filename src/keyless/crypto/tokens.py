"""Access tokens: self-contained, MAC-protected (HMAC-SHA256 under a key derived from the master key).

Format: ``ya29.<base64url(json claims)>.<base64url(mac)>``. Any replica holding the master key can verify one;
revocation and account/key state are checked against the store on every use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

from keyless.crypto.jwt import b64url, b64url_decode

PREFIX = "ya29."


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    token_id: str
    principal_kind: str  # "serviceAccount" | "user"
    principal_id: str  # unique id of the account, or user id
    scopes: tuple[str, ...]
    issued_at: float  # to the millisecond: a cut-off (account deleted, then undeleted) may fall inside a second
    expires_at: int
    key_id: str | None = None  # the user-managed key a JWT-bearer grant was signed with
    client_id: str | None = None
    # A user's token: which refresh token it was minted from (a digest), so revoking or replacing that refresh
    # token ends the access tokens it gave.
    grant: str | None = None

    def to_json(self) -> bytes:
        claims = {"j": self.token_id, "k": self.principal_kind[0], "p": self.principal_id, "s": list(self.scopes),
                  "i": round(self.issued_at, 3), "e": self.expires_at, "y": self.key_id, "c": self.client_id}
        if self.grant is not None:
            claims["g"] = self.grant
        return orjson.dumps(claims)


class TokenMinter:
    def __init__(self, mac_key: bytes) -> None:
        self._key = mac_key

    def mint(self, *, principal_kind: str, principal_id: str, scopes: tuple[str, ...], issued_at: float,
             expires_at: int, key_id: str | None = None, client_id: str | None = None,
             grant: str | None = None) -> tuple[str, AccessTokenClaims]:
        claims = AccessTokenClaims(secrets.token_urlsafe(12), principal_kind, principal_id, scopes, issued_at,
                                   expires_at, key_id, client_id, grant)
        body = b64url(claims.to_json())
        mac = hmac.digest(self._key, body.encode(), "sha256")
        return f"{PREFIX}{body}.{b64url(mac)}", claims

    def parse(self, token: str) -> AccessTokenClaims | None:
        """The claims of a genuine token, or None for anything forged, altered or malformed."""
        if not token.startswith(PREFIX) or len(token) > 4096:
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
        expected = b64url(hmac.digest(self._key, body_bytes, "sha256")).encode("ascii")
        if not hmac.compare_digest(given, expected):
            return None
        try:
            raw = orjson.loads(b64url_decode(body))
            return AccessTokenClaims(
                token_id=raw["j"], principal_kind="serviceAccount" if raw["k"] == "s" else "user",
                principal_id=raw["p"], scopes=tuple(raw["s"]), issued_at=float(raw["i"]),
                expires_at=int(raw["e"]), key_id=raw.get("y"), client_id=raw.get("c"), grant=raw.get("g"),
            )
        except Exception:
            return None


def token_hash(token_id: str) -> str:
    """How the store names a token (for revocation and audit) without holding its value."""
    return hashlib.sha256(token_id.encode()).hexdigest()[:32]
