"""The OAuth 2.0 endpoints: JWT-bearer, refresh-token and authorization-code grants, tokeninfo, revoke; typed
requests and results in ``keyless.service.oauth_requests``, rendered by ``keyless.http.oauth``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

from keyless.crypto.jwt import (
    BadSignature,
    JwtError,
    JwtTimeError,
    WrongAudience,
    unverified_parts,
    verify_rs256,
)
from keyless.crypto.keys import public_key_of_cert
from keyless.crypto.tokens import token_hash
from keyless.domain.oauth_clients import PublicClient, find_client, verifier_matches
from keyless.errors import OAuthError, ResourceExhausted, Unauthenticated, invalid_grant
from keyless.service import audit, minting
from keyless.service.admin import new_refresh_token, secret_hash
from keyless.service.authn import (
    CLOUD_PLATFORM,
    SIGN_IN_GRANT_PREFIX,
    authenticate_access_token,
    refresh_grant,
    sign_in_grant,
)
from keyless.service.core import Core
from keyless.service.credentials import Credentials
from keyless.service.keyring import ISSUER, in_validity_window, verifies_at
from keyless.service.limits import Limits, RateLimiter
from keyless.service.oauth_requests import (
    AccessTokenInfo,
    IdTokenInfo,
    RevokeRequest,
    TokenGrant,
    TokenInfoRequest,
    TokenRequest,
)
from keyless.storage.base import AuthorizationCode, Conflict, SignInGrant, User

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME = 3600
MAX_ASSERTION_LIFETIME = 3600
GOOGLE_TOKEN_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token",
                          "https://accounts.google.com/o/oauth2/token")
USER_DEFAULT_SCOPES = (CLOUD_PLATFORM, "https://www.googleapis.com/auth/userinfo.email", "openid")
EMAIL_SCOPES = frozenset({"email", "https://www.googleapis.com/auth/userinfo.email"})
AUTHORIZATION_CODE = "authorization_code"
BAD_CODE = "Malformed auth code."  # Google's words for a code that is unknown, used, expired or not this client's
RATE_LIMITED = "rate_limit_exceeded"
TIMEFRAME = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
             "Check your iat and exp values in the JWT claim.")


class OAuth:
    """The token endpoint's grants, and its rate limits.

    With ``--rate-limit`` set, ``/token`` and its aliases are limited on two keys, neither of which a caller can
    vary freely without cost:

    * failed grants per **client address** (the TCP peer, never a header the caller writes): before a grant
      is verified the only other name for the caller is what its assertion claims, which costs nothing to
      vary and may name a victim. A request from an address whose budget of failures is spent is refused
      (429) before its body is read, verified or audited, so a flood of garbage costs one bucket's worth of
      work and audit entries per address. Clients behind one address (a NAT, the interception proxy) share
      that budget, but only their failures spend it;
    * granted tokens per **verified identity** (the service account whose key signed the assertion, the
      user whose refresh token and client secret matched), the budget that identity's API calls spend too
      (``Keyless.per_caller``), checked before a token is minted. This spends nothing of the address's
      budget.
    """

    def __init__(self, core: Core, credentials: Credentials, limits: Limits | None = None,
                 per_caller: RateLimiter | None = None) -> None:
        self.core = core
        self.credentials = credentials
        rate = (limits or Limits()).rate_limit
        self.per_caller = per_caller or RateLimiter(rate, what="for the caller")
        self.failed_grants = RateLimiter(rate, what="of failed token grants from the client address")

    def admit(self, client_address: str) -> None:
        """Refuse (429) a token request from an address that has spent its budget of failed grants."""
        if self.failed_grants.exhausted(client_address):
            raise OAuthError(RATE_LIMITED, f"Rate limit exceeded: too many failed token requests from "
                             f"{client_address or 'this client'}. Retry with exponential backoff.", http_status=429)

    def refused(self, client_address: str, error: Exception) -> None:
        """A token request from ``client_address`` failed with ``error``: it spends the address's budget, unless
        it was refused for its verified identity's rate."""
        if not (isinstance(error, OAuthError) and error.error == RATE_LIMITED):
            self.failed_grants.charge(client_address)

    def _within_rate(self, identity: str) -> None:
        try:
            self.per_caller.check(identity)
        except ResourceExhausted as exc:
            raise OAuthError(RATE_LIMITED, exc.message, http_status=429) from None

    def accepted_audiences(self) -> tuple[str, ...]:
        own = self.core.settings.public_url.rstrip("/")
        return (*GOOGLE_TOKEN_AUDIENCES, own + "/token", own + "/oauth2/v4/token")

    async def token(self, request: TokenRequest) -> TokenGrant:
        grant_type = request.grant_type
        if grant_type == JWT_BEARER:
            return await self._jwt_bearer(request)
        if grant_type == "refresh_token":
            return await self._refresh(request)
        if grant_type == AUTHORIZATION_CODE:
            return await self._authorization_code(request)
        if not grant_type:
            raise OAuthError("invalid_request", "Missing required parameter: grant_type")
        raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    async def _jwt_bearer(self, request: TokenRequest) -> TokenGrant:
        assertion = request.assertion
        if not assertion:
            raise OAuthError("invalid_request", "Missing required parameter: assertion")
        try:
            header, unverified = unverified_parts(assertion)
        except JwtError:
            raise invalid_grant("Invalid JWT: malformed assertion.") from None
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise invalid_grant("Invalid JWT: the iss claim is missing.")
        # Until the signature is checked the issuer is only claimed (by anyone, naming anyone): recorded as
        # such, and the principal only once verified.
        audit.note_request(claimedIssuer=iss)
        account = await self.core.store.find_service_account(iss.lower())
        if account is None:
            raise invalid_grant("Invalid grant: account not found")
        audit.note(resource=f"projects/-/serviceAccounts/{account.unique_id}")
        kid = header.get("kid")
        now = self.core.now()
        keys = [k for k in await self.core.store.list_keys(account.unique_id) if k.deleted_at is None]
        if kid is not None:
            keys = [k for k in keys if k.key_id == kid]
            if keys and keys[0].disabled:
                raise invalid_grant("Invalid JWT Signature: the key is disabled.")
            if keys and not in_validity_window(keys[0], now):
                raise invalid_grant("Invalid JWT Signature: the key is outside its validity period.")
        keys = [k for k in keys if verifies_at(k, now)]
        if not keys:
            raise invalid_grant("Invalid JWT Signature.")
        claims: dict[str, Any] | None = None
        used = None
        for key in keys:
            try:
                claims = verify_rs256(assertion, [public_key_of_cert(key.certificate_pem)],
                                      audience=self.accepted_audiences(), now=now, leeway=self.core.settings.clock_skew)
                used = key
                break
            except BadSignature:
                continue
            except WrongAudience:
                raise invalid_grant("Invalid JWT: the aud claim is not this token endpoint.") from None
            except JwtTimeError:
                raise invalid_grant(TIMEFRAME) from None
            except JwtError as exc:
                raise invalid_grant(f"Invalid JWT: {exc.message}.") from None
        if claims is None or used is None:
            raise invalid_grant("Invalid JWT Signature.")
        audit.note(principal=account.email)
        if claims["exp"] - claims["iat"] > MAX_ASSERTION_LIFETIME:
            raise invalid_grant(TIMEFRAME)
        if account.disabled:
            raise invalid_grant("Invalid grant: the service account is disabled.")
        self._within_rate(account.email)
        sub = claims.get("sub")
        if sub is not None and sub != iss:
            raise OAuthError("unauthorized_client", "Client is unauthorized to retrieve access tokens using this "
                             "method, or client not authorized for any of the scopes requested.")
        target_audience = claims.get("target_audience")
        scope = claims.get("scope")
        # With target_audience the grant is for an ID token; a scope sent alongside (Node's JWT client does
        # that) is ignored, as Google's token endpoint ignores it.
        if target_audience is not None:
            if not isinstance(target_audience, str) or not target_audience:
                raise OAuthError("invalid_request", "target_audience must be a non-empty string.")
            audit.note_request(target_audience=target_audience)
            claims = minting.account_id_claims(self.core, account, target_audience, include_email=True,
                                               azp_email=True)
            return TokenGrant(id_token=await minting.id_token(self.core, claims))
        if not isinstance(scope, str) or not scope.split():
            raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        audit.note_request(scope=scope)
        audit.note(keyId=used.key_id)
        minted = minting.access_token(self.core, "serviceAccount", account.unique_id, tuple(scope.split()),
                                      TOKEN_LIFETIME, key_id=used.key_id)
        return TokenGrant(minted.token, TOKEN_LIFETIME)

    async def _refresh(self, request: TokenRequest) -> TokenGrant:
        refresh_token = request.refresh_token
        client_id = request.client_id
        client_secret = request.client_secret
        if not refresh_token:
            raise OAuthError("invalid_request", "Missing required parameter: refresh_token")
        if not client_id or not client_secret:
            raise OAuthError("invalid_client", "The OAuth client was not found.", http_status=401)
        user = await self.core.store.find_user_by_refresh_hash(secret_hash(refresh_token))
        if user is None:
            grant = await self.core.store.find_sign_in_grant(secret_hash(refresh_token))
            if grant is not None:
                return await self._refresh_sign_in(grant, request, client_id, client_secret)
        if user is None or user.disabled:
            raise invalid_grant("Token has been expired or revoked.")
        audit.note(resource=f"users/{user.email}")
        client_ok = hmac.compare_digest(user.client_id.encode(), client_id.encode())
        secret_ok = hmac.compare_digest(user.client_secret_hash.encode(), secret_hash(client_secret).encode())
        if not (client_ok and secret_ok):
            raise OAuthError("invalid_client", "Unauthorized", http_status=401)
        audit.note(principal=user.email)
        self._within_rate(user.email)
        scopes = tuple(request.scope.split()) or USER_DEFAULT_SCOPES
        audit.note_request(scope=" ".join(scopes))
        minted = minting.access_token(self.core, "user", user.user_id, scopes, TOKEN_LIFETIME,
                                      client_id=user.client_id, grant=refresh_grant(user))
        issued, token = minted.claims.issued_at, minted.token
        id_token = None
        if "openid" in scopes:
            # As Google's token endpoint does for a user who granted openid: the user's own ID token.
            id_token = await self._user_id_token(user, user.client_id, issued, token, with_email=True)
        return TokenGrant(token, TOKEN_LIFETIME, " ".join(scopes), id_token)

    async def _user_id_token(self, user: User, client_id: str, issued: float, access_token: str, *,
                             with_email: bool, nonce: str = "") -> str:
        """The user's own ID token for ``client_id``, as Google's token endpoint gives one for the openid scope
        (the email claims with the email scope); ``at_hash`` ties it to the access token given with it."""
        digest = hashlib.sha256(access_token.encode()).digest()
        claims: dict[str, Any] = {
            "iss": self.core.settings.issuer, "azp": client_id, "aud": client_id, "sub": user.user_id,
            "at_hash": base64.urlsafe_b64encode(digest[:16]).decode().rstrip("="),
            "iat": int(issued), "exp": int(issued) + TOKEN_LIFETIME}
        if with_email:
            claims["email"] = user.email
            claims["email_verified"] = True
        if nonce:
            claims["nonce"] = nonce
        return await minting.id_token(self.core, claims)

    def _public_client(self, client_id: str | None, client_secret: str | None) -> PublicClient:
        """The registered client that authenticates with ``client_id`` and its (public) secret."""
        client = find_client(client_id or "")
        if client is None:
            raise OAuthError("invalid_client", "The OAuth client was not found.", http_status=401)
        if not client.secret_matches(client_secret or ""):
            raise OAuthError("invalid_client", "Unauthorized", http_status=401)
        return client

    async def _authorization_code(self, request: TokenRequest) -> TokenGrant:
        """RFC 6749 §4.1.3 with PKCE: a code the sign-in page issued, redeemed once by the client it was issued
        to, at the redirect URI it was issued for, with the verifier behind its challenge. A code presented
        again revokes what its first exchange gave (§4.1.2): one of the two presenters holds a stolen copy."""
        code = request.code
        if not code:
            raise OAuthError("invalid_request", "Missing required parameter: code")
        client = self._public_client(request.client_id, request.client_secret)
        audit.note_request(client_id=client.client_id)
        audit.note(codeHash=self.core.audit_hash(code))
        code_hash = secret_hash(code)
        # Counted before anything else is checked: a code is spent by its first use, good or bad.
        record = await self.core.store.take_authorization_code(code_hash)
        if record is None:
            raise invalid_grant(BAD_CODE)
        if record.redemptions > 1:
            await self._revoke_exchange(record)
            raise invalid_grant(BAD_CODE)
        if not hmac.compare_digest(record.client_id.encode(), client.client_id.encode()):
            raise invalid_grant(BAD_CODE)
        if self.core.now() >= record.expires_at:
            raise invalid_grant(BAD_CODE)
        if request.redirect_uri != record.redirect_uri:
            raise OAuthError("redirect_uri_mismatch", "Bad Request")
        verifier = request.code_verifier
        if not verifier:
            raise invalid_grant("Missing code verifier.")
        if not verifier_matches(verifier, record.code_challenge):
            raise invalid_grant("Invalid code verifier.")
        user = await self.core.store.get_user(record.user_id)
        if user is None or user.disabled:
            raise invalid_grant("Account has been deleted or disabled.")
        audit.note(principal=user.email, resource=f"users/{user.email}")
        self._within_rate(user.email)
        issued = self.core.now()
        refresh_token: str | None = None
        grant_id = ""
        if record.offline:
            refresh_token = new_refresh_token()
            grant = SignInGrant(secrets.token_hex(16), user.user_id, client.client_id, record.scopes,
                                secret_hash(refresh_token), issued)
            try:
                await self.core.store.create_sign_in_grant(grant)
            except Conflict:  # user deleted meanwhile cannot conflict; a duplicate random id practically never
                raise invalid_grant(BAD_CODE) from None
            grant_id = grant.grant_id
        audit.note_request(scope=" ".join(record.scopes))
        minted = minting.access_token(self.core, "user", user.user_id, record.scopes, TOKEN_LIFETIME,
                                      client_id=client.client_id, grant=sign_in_grant(grant_id) if grant_id else None)
        if not await self.core.store.record_code_exchange(code_hash, grant_id, token_hash(minted.claims.token_id)):
            # Presented again since it was taken here, before this exchange could record its tokens for that
            # presentation to revoke: they are withheld, and the refresh token's grant undone.
            if grant_id:
                await self.core.store.delete_sign_in_grant(grant_id)
            raise invalid_grant(BAD_CODE)
        issued, token = minted.claims.issued_at, minted.token
        id_token = None
        if "openid" in record.scopes:
            id_token = await self._user_id_token(user, client.client_id, issued, token,
                                                 with_email=not EMAIL_SCOPES.isdisjoint(record.scopes),
                                                 nonce=record.nonce)
        return TokenGrant(token, TOKEN_LIFETIME, " ".join(record.scopes), id_token, refresh_token)

    async def _revoke_exchange(self, record: AuthorizationCode) -> None:
        """Revoke what the first exchange of a code presented again gave: its refresh token's grant (and with it
        every access token minted from it) and its own access token."""
        audit.note(reusedCode=True)
        if record.grant_id:
            await self.core.store.delete_sign_in_grant(record.grant_id)
        if record.token_hash:
            # Kept until that token expires at the latest: minted before the code expired, for TOKEN_LIFETIME.
            await self.core.store.revoke_token(record.token_hash, record.expires_at + TOKEN_LIFETIME)

    async def _refresh_sign_in(self, grant: SignInGrant, request: TokenRequest, client_id: str,
                               client_secret: str) -> TokenGrant:
        """A refresh token from signing in: for the client it was issued to, at most the scopes granted."""
        user = await self.core.store.get_user(grant.user_id)
        if user is None or user.disabled:
            raise invalid_grant("Token has been expired or revoked.")
        audit.note(resource=f"users/{user.email}")
        client = self._public_client(client_id, client_secret)
        if not hmac.compare_digest(grant.client_id.encode(), client.client_id.encode()):
            raise OAuthError("unauthorized_client", "Unauthorized")
        audit.note(principal=user.email)
        self._within_rate(user.email)
        requested = tuple(dict.fromkeys(request.scope.split()))
        if not set(requested) <= set(grant.scopes):
            raise OAuthError("invalid_scope", "The requested scopes are not all among the scopes the user "
                             "granted.")
        scopes = requested or grant.scopes
        audit.note_request(scope=" ".join(scopes), client_id=client.client_id)
        minted = minting.access_token(self.core, "user", user.user_id, scopes, TOKEN_LIFETIME,
                                      client_id=client.client_id, grant=sign_in_grant(grant.grant_id))
        issued, token = minted.claims.issued_at, minted.token
        id_token = None
        if "openid" in scopes:
            id_token = await self._user_id_token(user, client.client_id, issued, token,
                                                 with_email=not EMAIL_SCOPES.isdisjoint(scopes))
        return TokenGrant(token, TOKEN_LIFETIME, " ".join(scopes), id_token)

    async def tokeninfo(self, request: TokenInfoRequest) -> AccessTokenInfo | IdTokenInfo:
        if request.access_token:
            return await self._access_token_info(request.access_token)
        if request.id_token:
            return await self._id_token_info(request.id_token)
        raise OAuthError("invalid_request", "Either access_token or id_token is required.")

    async def _access_token_info(self, token: str) -> AccessTokenInfo:
        try:
            caller = await authenticate_access_token(self.core, token)
        except Unauthenticated:
            raise OAuthError("invalid_token", "Invalid Value") from None
        claims = self.core.minter.parse(token)
        assert claims is not None
        expires_in = max(0, claims.expires_at - int(self.core.now()))
        if caller.principal.federated is not None:
            # A workload identity pool's subject: Google names it by its principal:// identifier and it has no
            # email (keyless's own record of the identity stays inside the token).
            return AccessTokenInfo(caller.principal.member, caller.scopes, claims.expires_at, expires_in)
        return AccessTokenInfo(caller.principal_id, caller.scopes, claims.expires_at, expires_in,
                               audience=claims.client_id or caller.principal_id, email=caller.email)

    async def _id_token_info(self, token: str) -> IdTokenInfo:
        try:
            header, _ = unverified_parts(token)
        except JwtError:
            raise OAuthError("invalid_token", "Invalid Value") from None
        keys = await self.core.keyring.published_keys(ISSUER)
        kid = header.get("kid")
        candidates = [public_key_of_cert(k.certificate_pem) for k in keys if kid is None or k.key_id == kid]
        try:
            claims = verify_rs256(token, candidates, audience=None, now=self.core.now(), leeway=0)
        except JwtError:
            raise OAuthError("invalid_token", "Invalid Value") from None
        if claims.get("iss") != self.core.settings.issuer:
            raise OAuthError("invalid_token", "Invalid Value")
        return IdTokenInfo(claims, kid)

    async def revoke(self, request: RevokeRequest) -> None:
        """Revoke an access token, or a user's refresh token (and with it the access tokens it gave)."""
        token = request.token
        if not token:
            raise OAuthError("invalid_request", "Missing required parameter: token")
        claims = self.core.minter.parse(token)
        if claims is not None:
            audit.note(tokenHash=self.core.audit_hash(claims.token_id))
            await self.core.store.revoke_token(token_hash(claims.token_id), claims.expires_at)
            if claims.grant is not None and claims.grant.startswith(SIGN_IN_GRANT_PREFIX):
                # As Google does: revoking an access token revokes the refresh token it came from.
                await self.core.store.delete_sign_in_grant(claims.grant[len(SIGN_IN_GRANT_PREFIX):])
            return
        user = await self.core.store.find_user_by_refresh_hash(secret_hash(token))
        if user is None:
            grant = await self.core.store.find_sign_in_grant(secret_hash(token))
            if grant is None:
                raise OAuthError("invalid_token", "Token expired or revoked")
            owner = await self.core.store.get_user(grant.user_id)
            if owner is not None:
                audit.note(principal=owner.email, resource=f"users/{owner.email}")
            audit.note(tokenHash=self.core.audit_hash(token))
            await self.core.store.delete_sign_in_grant(grant.grant_id)
            return
        audit.note(principal=user.email, resource=f"users/{user.email}", tokenHash=self.core.audit_hash(token))
        # A fresh random hash no token matches: the user has no refresh token until the owner resets its secret.
        await self.core.store.update_user(user.user_id, refresh_token_hash=secret_hash(new_refresh_token()))
