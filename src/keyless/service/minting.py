"""The one place credentials are made: access tokens (for accounts and users) and ID tokens, each noted in the
request's audit entry by a keyed hash, never by its value.

Every surface that hands out a credential (IAM Credentials, the OAuth token endpoint, the metadata server)
comes here, so a token's form, lifetime arithmetic and audit notes are written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keyless.crypto.tokens import AccessTokenClaims
from keyless.domain.lifetimes import format_second
from keyless.service import audit
from keyless.service.core import Core
from keyless.service.keyring import ISSUER, ISSUER_NAME
from keyless.storage.base import ServiceAccount

ID_TOKEN_LIFETIME = 3600


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    expires_at: int  # seconds since the epoch
    claims: AccessTokenClaims


def access_token(core: Core, principal_kind: str, principal_id: str, scopes: tuple[str, ...], lifetime: int, *,
                 key_id: str | None = None, client_id: str | None = None, grant: str | None = None,
                 federated: dict[str, Any] | None = None) -> MintedToken:
    """A new access token for a service account (``principal_kind`` "serviceAccount", by unique id), a user, or a
    workload identity pool's subject ("federated", by provider name, with ``federated`` its identity), good for
    ``lifetime`` seconds from now."""
    issued = core.clock.now()
    expires_at = int(issued) + lifetime
    token, claims = core.minter.mint(principal_kind=principal_kind, principal_id=principal_id, scopes=scopes,
                                     issued_at=issued, expires_at=expires_at, key_id=key_id, client_id=client_id,
                                     grant=grant, federated=federated)
    audit.note(tokenHash=core.audit_hash(claims.token_id), expireTime=format_second(expires_at))
    return MintedToken(token, expires_at, claims)


def account_id_claims(core: Core, account: ServiceAccount, audience: str, *, include_email: bool,
                      azp_email: bool = False) -> dict[str, Any]:
    """The claims of a service account's ID token for ``audience``, as Google's issuer writes them."""
    now = int(core.clock.now())
    claims: dict[str, Any] = {
        "aud": audience,
        "azp": account.email if azp_email else account.unique_id,
        "exp": now + ID_TOKEN_LIFETIME,
        "iat": now,
        "iss": core.settings.issuer,
        "sub": account.unique_id,
    }
    if include_email:
        claims["email"] = account.email
        claims["email_verified"] = True
    return claims


async def id_token(core: Core, claims: dict[str, Any]) -> str:
    """Sign ID-token ``claims`` (an account's, from ``account_id_claims``, or a user's) with the issuer's key."""
    _, token = await core.keyring.sign_jwt(ISSUER, ISSUER_NAME, claims)
    audit.note(tokenHash=core.audit_hash(token))
    return token
