"""The typed request and result of the OAuth token endpoint (``keyless.service.oauth.OAuth.token``).

REST's adapter (``keyless.http.oauth``) reads the form (or JSON) body, with the client's credentials from
``Authorization: Basic`` when the body has none, into a ``TokenRequest``: each parameter as sent, None when absent.
Which parameters a grant needs, and what they must be, is the core's (an absent one and an empty one are refused
alike). The result is rendered in OAuth's token response by the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass


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
