"""Who is calling: bearer access tokens minted here, and self-signed service-account JWTs (AIP-4111)."""

from __future__ import annotations

import hmac
from dataclasses import replace
from urllib.parse import urlsplit

import orjson

from keyless.crypto.jwt import JwtError, unverified_parts, verify_rs256
from keyless.crypto.keys import public_key_of_cert
from keyless.crypto.tokens import AccessTokenClaims, token_hash
from keyless.domain.federation import FederatedIdentity
from keyless.domain.policy import Principal
from keyless.errors import InsufficientScopes, Unauthenticated
from keyless.service import audit
from keyless.service.core import Caller, Core
from keyless.service.keyring import verifies_at
from keyless.service.limits import RateLimiter
from keyless.storage.base import User

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"
# Scopes that let a token call the IAM, IAM Credentials and Resource Manager APIs.
API_SCOPES = frozenset({CLOUD_PLATFORM, IAM_SCOPE})
SERVED_SERVICES = frozenset({"iamcredentials", "iam", "cloudresourcemanager", "orgpolicy", "serviceusage", "oauth2",
                             "sts", "www", "policytroubleshooter", "cloudasset"})
MAX_SELF_SIGNED_LIFETIME = 3600
MAX_REMEMBERED_TOKENS = 50_000
SIGN_IN_GRANT_PREFIX = "s:"  # never the start of a refresh_grant digest (hex)

MISSING = ("Request is missing required authentication credential. Expected OAuth 2 access token, login cookie "
           "or other valid authentication credential.")


def refresh_grant(user: User) -> str:
    """What a user's access token records of the refresh token it was minted from: a digest of its stored hash
    (not a secret: the hash cannot be turned back into the token)."""
    return user.refresh_token_hash[:16]


def sign_in_grant(grant_id: str) -> str:
    """What an access token records of the sign-in grant (``gcloud auth login``) it was minted from: its id."""
    return SIGN_IN_GRANT_PREFIX + grant_id


async def api_caller(core: Core, per_caller: RateLimiter, authorization: str | None,
                     user_project: str | None = None) -> Caller:
    """The caller of an API method (IAM, IAM Credentials, Resource Manager) that an ``Authorization: Bearer``
    header names (an access token minted here, or a self-signed service-account JWT), within its rate limit and
    holding an API scope; with the project its ``x-goog-user-project`` header names.

    Who a genuine access token names, and whether the store still honours it, only change with the stored state
    (revocation, disabling, deletion all change it): the caller is remembered in the decision memo until then.
    Expiry is checked every time."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(MISSING, reason="CREDENTIALS_MISSING")
    if token.count(".") == 2 and not token.startswith("ya29."):
        caller = await _self_signed_jwt(core, token)
    else:
        memo = await core.store.memo()
        remembered: Caller | None = None if memo is None else memo.get(("token", token))
        if remembered is None:
            caller = await authenticate_access_token(core, token)
            if memo is not None:
                if len(memo) >= MAX_REMEMBERED_TOKENS:
                    memo.clear()
                memo[("token", token)] = caller
        elif core.clock.now() >= remembered.expires_at:
            raise Unauthenticated(reason="ACCESS_TOKEN_EXPIRED")
        else:
            caller = remembered
    email = caller.principal.email
    audit.note(principal=email)
    per_caller.check(email)
    if API_SCOPES.isdisjoint(caller.scopes):
        raise InsufficientScopes()
    return replace(caller, user_project=user_project) if user_project else caller


async def authenticate_access_token(core: Core, token: str) -> Caller:
    """The caller an access token minted here names: genuine, unexpired, not revoked, its principal still there and
    honouring it."""
    claims = core.minter.parse(token)
    if claims is None:
        raise Unauthenticated()
    now = core.clock.now()
    if now >= claims.expires_at:
        raise Unauthenticated(reason="ACCESS_TOKEN_EXPIRED")
    if await core.store.is_token_revoked(token_hash(claims.token_id)):
        raise Unauthenticated()
    if claims.principal_kind == "federated":
        return await _federated_caller(core, claims)
    if claims.principal_kind == "serviceAccount":
        sa = await core.store.get_service_account(claims.principal_id)
        if sa is None or sa.deleted_at is not None or sa.disabled or claims.issued_at < sa.tokens_valid_after:
            raise Unauthenticated()
        if claims.key_id is not None:
            key = await core.store.get_key(claims.key_id)
            if key is None or key.disabled or key.owner != sa.unique_id:
                raise Unauthenticated()
        principal = Principal("serviceAccount", sa.email)
    else:
        user = await core.store.get_user(claims.principal_id)
        if user is None or user.disabled:
            raise Unauthenticated()
        # Minted from a refresh token that has since been revoked or replaced (tokens minted before grants were
        # recorded carry none, and live out their hour).
        if claims.grant is not None and claims.grant.startswith(SIGN_IN_GRANT_PREFIX):
            # Minted from a refresh token the user got by signing in: it must still exist (not revoked, not
            # replaced by a reset of the user's credentials).
            grant = await core.store.get_sign_in_grant(claims.grant[len(SIGN_IN_GRANT_PREFIX):])
            if grant is None or grant.user_id != user.user_id:
                raise Unauthenticated()
        elif claims.grant is not None and not hmac.compare_digest(claims.grant, refresh_grant(user)):
            raise Unauthenticated()
        principal = Principal("user", user.email)
    return Caller(principal, claims.principal_id, claims.scopes, claims.expires_at, claims.token_id, claims.key_id)


async def _federated_caller(core: Core, claims: AccessTokenClaims) -> Caller:
    """A workload identity pool's subject, from a token the STS exchange minted. Its provider and pool must still
    exist (deleting either ends its tokens) and the pool be enabled; a provider disabled since stops new
    exchanges only (Google: "existing tokens still grant access")."""
    provider = await core.store.get_workload_provider(claims.principal_id)
    if provider is None or provider.deleted_at is not None or claims.federated is None:
        raise Unauthenticated()
    pool = await core.store.get_workload_pool(provider.pool)
    if pool is None or pool.deleted_at is not None or pool.disabled:
        raise Unauthenticated()
    try:
        identity = FederatedIdentity.from_json({**claims.federated, "provider": provider.name})
    except (KeyError, TypeError, ValueError):
        raise Unauthenticated() from None
    # The caller's id says the whole identity (subject, groups, attributes): decisions are remembered by it.
    principal_id = orjson.dumps(identity.to_json(), option=orjson.OPT_SORT_KEYS).decode()
    return Caller(Principal.of_federated(identity), principal_id, claims.scopes, claims.expires_at, claims.token_id)


def _audience_ok(core: Core, aud: object) -> bool:
    if not isinstance(aud, str):
        return False
    own = core.settings.public_url.rstrip("/")
    if aud.rstrip("/") == own:
        return True
    parts = urlsplit(aud)
    service, _, domain = (parts.hostname or "").partition(".")
    # Only Google's own service URLs (or a universe domain keyless serves): a JWT the account signed for any
    # other service must not be replayable here.
    return (parts.scheme == "https" and service in SERVED_SERVICES
            and domain in ("googleapis.com", *core.settings.universe_domains))


async def _self_signed_jwt(core: Core, token: str) -> Caller:
    try:
        header, unverified = unverified_parts(token)
    except JwtError:
        raise Unauthenticated() from None
    iss, sub = unverified.get("iss"), unverified.get("sub")
    if not isinstance(iss, str) or iss != sub:
        raise Unauthenticated("Invalid self-signed JWT: iss and sub must both be the service account's email.")
    sa = await core.store.find_service_account(iss.lower())
    if sa is None or sa.disabled:
        raise Unauthenticated()
    kid = header.get("kid")
    now = core.now()
    records = [k for k in await core.store.list_keys(sa.unique_id) if verifies_at(k, now)]
    if kid is not None:
        records = [k for k in records if k.key_id == kid]
    if not records:
        raise Unauthenticated("Invalid self-signed JWT: no active key of the service account matches its kid.")
    try:
        claims = verify_rs256(token, [public_key_of_cert(k.certificate_pem) for k in records], audience=None,
                              now=now, leeway=core.settings.clock_skew)
    except JwtError as exc:
        raise Unauthenticated(f"Invalid self-signed JWT: {exc}.") from None
    exp, iat = claims["exp"], claims["iat"]
    if exp - iat > MAX_SELF_SIGNED_LIFETIME:
        raise Unauthenticated("Invalid self-signed JWT: its lifetime exceeds 3600 seconds.")
    scope = claims.get("scope")
    if "aud" in claims:
        if not _audience_ok(core, claims["aud"]):
            raise Unauthenticated("Invalid self-signed JWT: its audience is not a service keyless serves.")
        scopes: tuple[str, ...] = (CLOUD_PLATFORM,)
    elif isinstance(scope, str) and scope.strip():
        scopes = tuple(scope.split())
    else:
        raise Unauthenticated("Invalid self-signed JWT: it needs an aud or a scope claim.")
    matched = records[0].key_id if len(records) == 1 else None
    return Caller(Principal("serviceAccount", sa.email), sa.unique_id, scopes, float(exp), None, matched)
