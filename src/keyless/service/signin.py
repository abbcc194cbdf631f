"""The sign-in page's rules (``gcloud auth login``, the web console): which authorization requests it answers, who
signs in, and the authorization codes it issues. ``page`` (GET) and ``submit`` (the form's POST) take the typed
requests of ``keyless.service.signin_requests`` and answer its results; ``keyless.http.signin`` parses the query and
the form into them and renders the page; the token endpoint redeems codes (``keyless.service.oauth``).

An authorization request is checked in two steps, as RFC 6749 §4.1.2.1 and Google's page do: first the client
and its redirect URI (``target``) — until both are known to be good nothing is redirected anywhere, and the page
shows the error itself — then the rest (``request``), whose errors go back to the client's redirect URI.

Who signs in: on a server whose API listens on loopback alone (``Settings.user_picker``) the page lists the
registered users to pick, as emulators do; elsewhere a user proves the password the owner set
(``keyless users set-password``), with failed attempts limited per user (counted in the store, so that every
replica shares the count) and per client address (each replica's own). The page's form carries an
anti-forgery token bound to a cookie (double submit) and to the request's parameters.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets

from keyless.crypto.passwords import verify_password
from keyless.domain.oauth_clients import (
    CODE_CHALLENGE_RE,
    MAX_STATE_LENGTH,
    find_client,
    parse_scopes,
    redirect_allowed,
)
from keyless.errors import OAuthError, SignInError
from keyless.service import audit
from keyless.service.admin import secret_hash
from keyless.service.core import Core
from keyless.service.limits import Limits, RateLimiter
from keyless.service.signin_requests import (
    AuthorizationQuery,
    AuthorizationRequest,
    IssuedCode,
    Refusal,
    SignInForm,
    SignInPage,
    Target,
)
from keyless.storage.base import AuthorizationCode, User

CODE_LIFETIME = 300.0  # seconds an authorization code can be redeemed in
FORM_LIFETIME = 900.0  # seconds the page's form stays valid
FAILED_SIGN_IN_BURST = 5.0  # wrong passwords in a row, per user and per client address...
FAILED_SIGN_IN_RATE = 1 / 60  # ...then one more a minute
FAILED_PER_USER = {"burst": FAILED_SIGN_IN_BURST, "per_second": FAILED_SIGN_IN_RATE}  # the store's bucket
CODE_PREFIX = "4/0kl"  # Google's codes start "4/0"
FORGED = ("This sign-in form has expired or was not sent from this page. Go back to the application and start "
          "signing in again.")
WRONG_PASSWORD = "Wrong email or password."
TOO_MANY = "Too many failed sign-in attempts. Wait a few minutes, then try again."


def _well_formed(query: AuthorizationQuery | SignInForm, *names: str) -> None:
    """Refuse the first of ``names`` that was not sent as one value (RFC 6749 §3.1) of a bounded length."""
    for name in names:
        why = query.malformed.get(name)
        if why is not None:
            raise OAuthError("invalid_request", why)


def target(query: AuthorizationQuery) -> Target:
    """The client and redirect URI of an authorization request, or ``SignInError`` (shown on the page: an
    error is never sent to a redirect URI that is not known to be the client's)."""
    try:
        _well_formed(query, "client_id", "redirect_uri", "state")
    except OAuthError as exc:
        raise SignInError(exc.error, exc.description) from None
    client_id, redirect_uri, state = query.client_id, query.redirect_uri, query.state or ""
    if not client_id:
        raise SignInError("invalid_request", "Missing required parameter: client_id")
    client = find_client(client_id)
    if client is None:
        raise SignInError("invalid_client", "The OAuth client was not found.", http_status=401)
    if not redirect_uri:
        raise SignInError("invalid_request", "Missing required parameter: redirect_uri")
    if not redirect_allowed(client, redirect_uri):
        raise SignInError("redirect_uri_mismatch",
                          f"The redirect URI in the request, {redirect_uri}, is not one {client.name} may use: a "
                          "loopback URL (http://localhost:PORT/) or the client's own code page.")
    if len(state) > MAX_STATE_LENGTH:
        raise SignInError("invalid_request", f"Parameter state is longer than {MAX_STATE_LENGTH} characters.")
    return Target(client, redirect_uri, state)


def request(where: Target, query: AuthorizationQuery, limits: Limits) -> AuthorizationRequest:
    """The whole authorization request, or ``OAuthError`` (its error goes back to the redirect URI)."""
    _well_formed(query, "response_type")
    response_type = query.response_type
    if not response_type:
        raise OAuthError("invalid_request", "Missing required parameter: response_type")
    if response_type != "code":
        raise OAuthError("unsupported_response_type", f"Unsupported response_type: {response_type}. keyless "
                         "answers the authorization-code flow (response_type=code).")
    _well_formed(query, "scope")
    scope = query.scope
    if not scope:
        raise OAuthError("invalid_request", "Missing required parameter: scope")
    scopes = parse_scopes(scope, limits.max_scopes)
    if scopes is None:
        raise OAuthError("invalid_scope", f"Invalid scope parameter: space-separated scopes, at most "
                         f"{limits.max_scopes}.")
    _well_formed(query, "code_challenge", "code_challenge_method")
    challenge, method = query.code_challenge, query.code_challenge_method
    # PKCE is what binds a public client's code to the client that asked for it (its secret is public).
    if not challenge:
        raise OAuthError("invalid_request", "Missing required parameter: code_challenge (PKCE, RFC 7636).")
    if method != "S256":
        raise OAuthError("invalid_request", "code_challenge_method must be S256.")
    if not CODE_CHALLENGE_RE.match(challenge):
        raise OAuthError("invalid_request", "Invalid code_challenge: 43 characters of base64url.")
    _well_formed(query, "access_type")
    access_type = query.access_type or "online"
    if access_type not in ("online", "offline"):
        raise OAuthError("invalid_request", f"Invalid access_type: {access_type}.")
    _well_formed(query, "prompt")
    if "none" in (query.prompt or "").split():
        # There are no sessions to sign in silently with.
        raise OAuthError("login_required", "The user must sign in: prompt=none cannot be answered.")
    _well_formed(query, "nonce", "login_hint")
    return AuthorizationRequest(where, scopes, challenge, access_type == "offline",
                                nonce=query.nonce or "", login_hint=query.login_hint or "")


class SignIn:
    def __init__(self, core: Core, limits: Limits | None = None) -> None:
        self.core = core
        self.limits = limits or Limits()
        # The clock is the injected one, so that a test can wait out the limit. Per user, the count is the
        # store's (take_sign_in_attempt): a replica more must not mean a burst of guesses more.
        self.failures_by_address = RateLimiter(FAILED_SIGN_IN_RATE, what="failed sign-ins", now=core.clock.now,
                                               burst=FAILED_SIGN_IN_BURST)

    @property
    def user_picker(self) -> bool:
        return self.core.settings.user_picker

    async def page(self, query: AuthorizationQuery) -> SignInPage | Refusal:
        """``GET``: the sign-in page for a valid authorization request, or the error to send back to the client;
        ``SignInError`` while the client and its redirect URI are not known good."""
        where = target(query)
        try:
            auth = request(where, query, self.limits)
        except OAuthError as exc:
            return Refusal(where, exc)
        return await self._page(auth, self.new_form_nonce())

    async def submit(self, form: SignInForm) -> SignInPage | Refusal | IssuedCode:
        """``POST``: the page's form. A code for the user who signs in; the page again (with the error) after a
        wrong password or too many; an error for the client (the request's, or the user's cancel);
        ``SignInError`` for a form that is not this page's or a request whose target is not known good."""
        if not form.same_origin:
            raise SignInError("invalid_request", FORGED, http_status=403)
        where = target(form.authorization)
        audit.note_request(client_id=where.client.client_id, redirect_uri=where.redirect_uri)
        try:
            auth = request(where, form.authorization, self.limits)
        except OAuthError as exc:
            return Refusal(where, exc)
        audit.note_request(scope=" ".join(auth.scopes))
        try:
            _well_formed(form, "csrf_token")
            self.check_form_token(form.csrf_token, form.cookie, auth)
            _well_formed(form, "action")
            if form.action == "cancel":
                return Refusal(where, OAuthError("access_denied", "The user denied access."))
            _well_formed(form, "email", "password")
            user = await self.sign_in(form.email, form.password, form.client_address)
        except SignInError as exc:
            if exc.http_status in (401, 429) and form.cookie:
                return await self._page(auth, form.cookie, exc)
            raise
        except OAuthError as exc:  # a field sent twice
            raise SignInError(exc.error, exc.description) from None
        return IssuedCode(auth, await self.issue_code(auth, user))

    async def _page(self, auth: AuthorizationRequest, nonce: str, error: SignInError | None = None) -> SignInPage:
        token = self.form_token(nonce, auth)
        accounts = None
        if self.user_picker:
            accounts = tuple(u for u in await self.core.store.list_users() if not u.disabled)
        return SignInPage(auth, nonce, token, accounts, error)

    # ------------------------------------------------------------ the form's anti-forgery token

    def new_form_nonce(self) -> str:
        """The cookie's value: the browser that loaded the page must be the one that sends the form."""
        return secrets.token_urlsafe(24)

    def form_token(self, nonce: str, auth: AuthorizationRequest) -> str:
        issued = int(self.core.now())
        return f"{issued}.{self._form_mac(nonce, issued, auth)}"

    def _form_mac(self, nonce: str, issued: int, auth: AuthorizationRequest) -> str:
        fields = "\n".join(f"{k}={v}" for k, v in sorted(auth.form_fields().items()))
        mac = hmac.digest(self.core.master.sign_in_key, f"{nonce}\n{issued}\n{fields}".encode(), "sha256")
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def check_form_token(self, token: str | None, nonce: str | None, auth: AuthorizationRequest) -> None:
        """Refuse (403) a form that is not the one this page gave this browser for this very request, or that
        is older than FORM_LIFETIME."""
        issued_text, _, mac = (token or "").partition(".")
        if not (nonce and 16 <= len(nonce) <= 64 and mac and issued_text.isascii() and issued_text.isdigit()
                and len(issued_text) <= 12):
            raise SignInError("invalid_request", FORGED, http_status=403)
        issued = int(issued_text)
        now = self.core.now()
        expected = self._form_mac(nonce, issued, auth)
        if not hmac.compare_digest(expected.encode(), mac.encode()) or not (
                issued - self.core.settings.clock_skew <= now <= issued + FORM_LIFETIME):
            raise SignInError("invalid_request", FORGED, http_status=403)

    # ------------------------------------------------------------ who signs in

    async def sign_in(self, email: str | None, password: str | None, client_address: str) -> User:
        """The user the form names, once it is known to be who it says: picked from the list on loopback,
        else proven by its password."""
        email = (email or "").strip().lower()
        if not email or len(email) > 320:
            raise SignInError("invalid_request", "Choose an account to sign in with.")
        audit.note_request(email=email)
        if self.user_picker:
            user = await self.core.store.find_user(email)
            if user is None or user.disabled:
                raise SignInError("access_denied", f"There is no enabled keyless user {email}.", http_status=401)
            return user
        address = client_address or "unknown"
        # Each attempt is counted before its password is looked at, and given back if it was right: guesses
        # sent together cannot all pass an empty count while the others are still being checked. Past the
        # limit, the password is not looked at: more guesses tell nothing.
        store = self.core.store
        if not await store.take_sign_in_attempt(email, self.core.now(), **FAILED_PER_USER):
            raise SignInError("rate_limited", TOO_MANY, http_status=429)
        if not self.failures_by_address.take(address):
            await store.refund_sign_in_attempt(email, self.core.now(), **FAILED_PER_USER)
            raise SignInError("rate_limited", TOO_MANY, http_status=429)
        user = await self.core.store.find_user(email)
        stored = user.password_hash if user is not None else ""
        # scrypt takes tens of milliseconds: off the event loop. An unknown user costs the same (a decoy hash).
        matches = await asyncio.to_thread(verify_password, password or "", stored)
        if not matches or user is None or user.disabled:
            raise SignInError("access_denied", WRONG_PASSWORD, http_status=401)
        await store.refund_sign_in_attempt(email, self.core.now(), **FAILED_PER_USER)
        self.failures_by_address.refund(address)
        return user

    async def issue_code(self, auth: AuthorizationRequest, user: User) -> str:
        """A new authorization code for ``user``, stored (as a hash) where every replica can redeem it once."""
        code = CODE_PREFIX + secrets.token_urlsafe(32)
        now = self.core.now()
        await self.core.store.create_authorization_code(AuthorizationCode(
            code_hash=secret_hash(code), client_id=auth.target.client.client_id,
            redirect_uri=auth.target.redirect_uri, code_challenge=auth.code_challenge, user_id=user.user_id,
            scopes=auth.scopes, created_at=now, expires_at=now + CODE_LIFETIME, offline=auth.offline,
            nonce=auth.nonce))
        audit.note(principal=user.email, resource=f"users/{user.email}", codeHash=self.core.audit_hash(code))
        return code
