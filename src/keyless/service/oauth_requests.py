"""The typed requests and results of the OAuth endpoints (``keyless.service.oauth.OAuth``): the token endpoint
(``TokenRequest`` → ``TokenGrant``), tokeninfo (``TokenInfoRequest`` → ``AccessTokenInfo`` or ``IdTokenInfo``) and
revoke (``RevokeRequest``).

REST's adapter (``keyless.http.oauth``) reads the form (or JSON) body, with the client's credentials from
``Authorization: Basic`` when the body has none, into a ``TokenRequest``: each parameter as sent, None when absent;
tokeninfo's and revoke's from the query or the form (tokeninfo's access token from ``Authorization: Bearer`` when
neither names a token). Which parameters a grant needs, and what they must be, is the core's (an absent one and an
empty one are refused alike). The results are rendered in OAuth's shapes by the adapter: the token response, and
tokeninfo's JSON as Google's endpoint writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TokenRequest:
    grant_type: str | None
    assertion: str | None = None  # jwt-bearer
    refresh_token: str | None = None  # refresh_token
    code: str | None = None  # authorization_code
    redirect_uri: str | None = None
    code_verifier: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scope: str = ""  # space-separated; "" asks for the grant's default


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a grant gives: an access token (with its lifetime, and its scopes for a user), an ID token (alone for
    a jwt-bearer grant with ``target_audience``, beside the access token for a user's ``openid``), a refresh token
    (an offline authorization code)."""

    access_token: str = ""
    expires_in: int = 0
    scope: str | None = None  # None: not answered (a service account's grant)
    id_token: str | None = None
    refresh_token: str | None = None


@dataclass(frozen=True, slots=True)
class TokenInfoRequest:
    """An access token or an ID token to describe (the access token when both are named)."""

    access_token: str | None = None
    id_token: str | None = None


@dataclass(frozen=True, slots=True)
class AccessTokenInfo:
    """A valid access token keyless minted: whose it is, for which scopes, until when."""

    subject: str  # the user's or service account's id; a workload identity pool subject's principal:// identifier
    scopes: tuple[str, ...]
    expires_at: int  # seconds since the epoch
    expires_in: int  # seconds left, never below 0
    audience: str = ""  # the OAuth client it was given to, else the subject
    email: str | None = None  # None: a workload identity pool's subject (no email, no audience)


@dataclass(frozen=True, slots=True)
class IdTokenInfo:
    """A valid ID token keyless signed: its claims, verified, and the key that signed it."""

    claims: Mapping[str, Any]
    key_id: str | None


@dataclass(frozen=True, slots=True)
class RevokeRequest:
    token: str | None  # an access token or a refresh token
