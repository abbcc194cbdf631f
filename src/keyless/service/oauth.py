"""The OAuth 2.0 endpoints: JWT-bearer and refresh-token grants, tokeninfo, revoke."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
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
from keyless.errors import OAuthError, ResourceExhausted, Unauthenticated, invalid_grant
from keyless.service import audit
from keyless.service.admin import new_refresh_token, secret_hash
from keyless.service.authn import CLOUD_PLATFORM, authenticate_access_token, refresh_grant
from keyless.service.core import Core
from keyless.service.credentials import Credentials
from keyless.service.keyring import ISSUER, in_validity_window, verifies_at
from keyless.service.limits import Limits, RateLimiter

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME = 3600
MAX_ASSERTION_LIFETIME = 3600
GOOGLE_TOKEN_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token",
                          "https://accounts.google.com/o/oauth2/token")
USER_DEFAULT_SCOPES = (CLOUD_PLATFORM, "https://www.googleapis.com/auth/userinfo.email", "openid")
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

    async def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if grant_type == JWT_BEARER:
            return await self._jwt_bearer(form)
        if grant_type == "refresh_token":
            return await self._refresh(form)
        if not grant_type:
            raise OAuthError("invalid_request", "Missing required parameter: grant_type")
        raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    async def _jwt_bearer(self, form: Mapping[str, str]) -> dict[str, Any]:
        assertion = form.get("assertion")
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
            id_claims = await self.credentials.id_token_claims(account, target_audience, include_email=True)
            id_claims["azp"] = account.email
            audit.note_request(target_audience=target_audience)
            id_token = await self.credentials.sign_id_token(id_claims)
            audit.note(tokenHash=self.core.audit_hash(id_token))
            return {"id_token": id_token}
        if not isinstance(scope, str) or not scope.split():
            raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token, minted = self.core.minter.mint(principal_kind="serviceAccount", principal_id=account.unique_id,
                                              scopes=tuple(scope.split()), issued_at=now,
                                              expires_at=int(now) + TOKEN_LIFETIME, key_id=used.key_id)
        audit.note_request(scope=scope)
        audit.note(tokenHash=self.core.audit_hash(minted.token_id), keyId=used.key_id)
        return {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}

    async def _refresh(self, form: Mapping[str, str]) -> dict[str, Any]:
        refresh_token = form.get("refresh_token")
        client_id = form.get("client_id")
        client_secret = form.get("client_secret")
        if not refresh_token:
            raise OAuthError("invalid_request", "Missing required parameter: refresh_token")
        if not client_id or not client_secret:
            raise OAuthError("invalid_client", "The OAuth client was not found.", http_status=401)
        user = await self.core.store.find_user_by_refresh_hash(secret_hash(refresh_token))
        if user is None or user.disabled:
            raise invalid_grant("Token has been expired or revoked.")
        audit.note(resource=f"users/{user.email}")
        client_ok = hmac.compare_digest(user.client_id.encode(), client_id.encode())
        secret_ok = hmac.compare_digest(user.client_secret_hash.encode(), secret_hash(client_secret).encode())
        if not (client_ok and secret_ok):
            raise OAuthError("invalid_client", "Unauthorized", http_status=401)
        audit.note(principal=user.email)
        self._within_rate(user.email)
        scopes = tuple(form.get("scope", "").split()) or USER_DEFAULT_SCOPES
        issued = self.core.now()
        token, minted = self.core.minter.mint(principal_kind="user", principal_id=user.user_id, scopes=scopes,
                                              issued_at=issued, expires_at=int(issued) + TOKEN_LIFETIME,
                                              client_id=user.client_id, grant=refresh_grant(user))
        audit.note_request(scope=" ".join(scopes))
        audit.note(tokenHash=self.core.audit_hash(minted.token_id))
        out: dict[str, Any] = {"access_token": token, "expires_in": TOKEN_LIFETIME, "scope": " ".join(scopes),
                               "token_type": "Bearer"}
        if "openid" in scopes:
            # As Google's token endpoint does for a user who granted openid: the user's own ID token.
            out["id_token"] = await self.credentials.sign_id_token({
                "iss": self.core.settings.issuer, "azp": user.client_id, "aud": user.client_id,
                "sub": user.user_id, "email": user.email, "email_verified": True,
                "iat": int(issued), "exp": int(issued) + TOKEN_LIFETIME})
        return out

    async def tokeninfo(self, *, access_token: str | None, id_token: str | None) -> dict[str, Any]:
        if access_token:
            return await self._access_token_info(access_token)
        if id_token:
            return await self._id_token_info(id_token)
        raise OAuthError("invalid_request", "Either access_token or id_token is required.")

    async def _access_token_info(self, token: str) -> dict[str, Any]:
        try:
            caller = await authenticate_access_token(self.core, token)
        except Unauthenticated:
            raise OAuthError("invalid_token", "Invalid Value") from None
        claims = self.core.minter.parse(token)
        assert claims is not None
        now = int(self.core.now())
        audience = claims.client_id or caller.principal_id
        return {
            "azp": audience,
            "aud": audience,
            "sub": caller.principal_id,
            "scope": " ".join(caller.scopes),
            "exp": str(claims.expires_at),
            "expires_in": str(max(0, claims.expires_at - now)),
            "email": caller.email,
            "email_verified": "true",
            "access_type": "online",
        }

    async def _id_token_info(self, token: str) -> dict[str, Any]:
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
        out = {k: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v)
               for k, v in claims.items()}
        out["alg"] = "RS256"
        out["kid"] = header.get("kid")
        out["typ"] = "JWT"
        return out

    async def revoke(self, token: str | None) -> None:
        """Revoke an access token, or a user's refresh token (and with it the access tokens it gave)."""
        if not token:
            raise OAuthError("invalid_request", "Missing required parameter: token")
        claims = self.core.minter.parse(token)
        if claims is not None:
            audit.note(tokenHash=self.core.audit_hash(claims.token_id))
            await self.core.store.revoke_token(token_hash(claims.token_id), claims.expires_at)
            return
        user = await self.core.store.find_user_by_refresh_hash(secret_hash(token))
        if user is None:
            raise OAuthError("invalid_token", "Token expired or revoked")
        audit.note(principal=user.email, resource=f"users/{user.email}", tokenHash=self.core.audit_hash(token))
        # A fresh random hash no token matches: the user has no refresh token until the owner resets its secret.
        await self.core.store.update_user(user.user_id, refresh_token_hash=secret_hash(new_refresh_token()))
