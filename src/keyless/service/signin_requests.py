"""The typed requests and results of the sign-in page (``keyless.service.signin.SignIn``): Google's authorization
endpoint for ``gcloud auth login`` and the web console.

REST's adapter (``keyless.http.signin``) reads GET's query into an ``AuthorizationQuery`` and the POSTed form into
a ``SignInForm``: each parameter's one value as sent, None when absent. RFC 6749 §3.1 allows each parameter once;
the adapter lists the parameters that were not one value of at most ``MAX_PARAMETER_LENGTH`` characters in
``malformed`` (by name, with why), and the core refuses them where it reads them: on the page while the client and
its redirect URI are not known good, back to the client afterwards, as it always has. The core answers a page to
show (``SignInPage``), an error to send back to the client (``Refusal``) or a code (``IssuedCode``), and raises
``SignInError`` for what only the page may show; the adapter renders each in HTML or as a redirect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from keyless.domain.oauth_clients import PublicClient, is_copy_page
from keyless.errors import OAuthError, SignInError
from keyless.storage.base import User

MAX_PARAMETER_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class AuthorizationQuery:
    """An authorization request's parameters as sent (GET's query, or the form the page POSTs back)."""

    client_id: str | None = None
    redirect_uri: str | None = None
    state: str | None = None
    response_type: str | None = None
    scope: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    access_type: str | None = None
    prompt: str | None = None
    nonce: str | None = None
    login_hint: str | None = None
    # Every parameter sent more than once or too long (its value above is None), with why.
    malformed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SignInForm:
    """The page's form as POSTed: the authorization request it carries again, the anti-forgery token and the
    cookie it is bound to, what the user chose."""

    authorization: AuthorizationQuery
    same_origin: bool  # what the browser says of where the form came from (Origin, Sec-Fetch-Site)
    cookie: str | None  # the page's cookie: the nonce the anti-forgery token is bound to
    client_address: str  # the TCP peer, whose failed sign-ins are limited
    csrf_token: str | None = None
    action: str | None = None  # "cancel": the user declined
    email: str | None = None
    password: str | None = None
    malformed: Mapping[str, str] = field(default_factory=dict)  # the form's own fields, as in AuthorizationQuery


@dataclass(frozen=True, slots=True)
class Target:
    """Where an authorization request's answer may go: a known client and a redirect URI it may use."""

    client: PublicClient
    redirect_uri: str
    state: str

    @property
    def shows_code(self) -> bool:
        """The redirect URI is one of the client's out-of-band pages: the page shows the code to copy."""
        return is_copy_page(self.client, self.redirect_uri)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A valid authorization request: its target, the scopes asked for, the PKCE challenge, whether a refresh
    token is asked for (``access_type=offline``)."""

    target: Target
    scopes: tuple[str, ...]
    code_challenge: str
    offline: bool
    nonce: str = ""
    login_hint: str = ""

    def form_fields(self) -> dict[str, str]:
        """What the page's form sends back: the request as made (checked again when the form arrives; the
        anti-forgery token is bound to these)."""
        fields = {"client_id": self.target.client.client_id, "redirect_uri": self.target.redirect_uri,
                  "response_type": "code", "scope": " ".join(self.scopes), "code_challenge": self.code_challenge,
                  "code_challenge_method": "S256", "access_type": "offline" if self.offline else "online"}
        for name, value in (("state", self.target.state), ("nonce", self.nonce), ("login_hint", self.login_hint)):
            if value:
                fields[name] = value
        return fields


@dataclass(frozen=True, slots=True)
class SignInPage:
    """The sign-in page for a valid request: its form's anti-forgery token and the cookie's nonce it is bound to;
    the accounts to pick from (a server on loopback) or None (email and password); the last attempt's error."""

    authorization: AuthorizationRequest
    nonce: str
    form_token: str
    accounts: tuple[User, ...] | None
    error: SignInError | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error of a request whose client and redirect URI are known good, for the client (RFC 6749 §4.1.2.1): to
    its redirect URI, or on the page when the client reads its answer from its code page."""

    target: Target
    error: OAuthError


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A signed-in user's authorization code, for the request's redirect URI (or its code page)."""

    authorization: AuthorizationRequest
    code: str
