"""The IAM Credentials API: short-lived access tokens, ID tokens, signed blobs and signed JWTs."""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyless.crypto.jwt import DuplicateMember, loads_unique, sign_rs256, sign_rs256_raw_payload
from keyless.crypto.keys import sign_pkcs1_sha256
from keyless.domain import roles
from keyless.domain.delegation import Hop, parse_delegates, plan_chain
from keyless.domain.lifetimes import format_timestamp, parse_bool, resolve_lifetime
from keyless.domain.names import AccountRef, parse_account_name
from keyless.domain.policy import Principal
from keyless.domain.services import IAM, IAM_CREDENTIALS
from keyless.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from keyless.service import audit
from keyless.service.core import Caller, Core, account_condition_name, in_named_project
from keyless.service.keyring import ISSUER
from keyless.service.limits import Limits, RateLimiter
from keyless.service.orgpolicies import lifetime_extension_allowed
from keyless.service.usage import require_service
from keyless.storage.base import ServiceAccount
from keyless.storage.cache import decision_memo

ID_TOKEN_LIFETIME = 3600
MAX_SIGN_JWT_AHEAD = 12 * 3600
SIGN_JWT_DEFAULT_LIFETIME = 3600


MAX_REMEMBERED = 50_000


@dataclass(frozen=True, slots=True)
class _GrantedChain:
    account: ServiceAccount
    resource: str
    authorizations: tuple[tuple[str, str], ...]


def _service_account_principal(sa: ServiceAccount) -> Principal:
    return Principal("serviceAccount", sa.email)


def _grantee(caller: Caller, chain: list[ServiceAccount]) -> str:
    """Who needs the permission of the hop after ``chain``: the caller, then each delegate in turn."""
    return f"serviceAccount:{chain[-1].email}" if chain else caller.principal.member


def _hop(index: int, hops: list[Hop]) -> tuple[int, int] | None:
    return (index + 1, len(hops)) if len(hops) > 1 else None


class Credentials:
    def __init__(self, core: Core, limits: Limits | None = None) -> None:
        self.core = core
        self.limits = limits or Limits()
        self.per_account = RateLimiter(self.limits.rate_limit_per_account, what="for the service account")

    async def authorize_chain(self, caller: Caller, target: AccountRef, raw_delegates: object,
                              permission: str, *, service: str = IAM_CREDENTIALS) -> ServiceAccount:
        """Check the caller -> delegates -> target chain, and (``--enforce-services``) that the request's consumer
        project has ``service`` enabled; return the target account.

        A granted chain whose policies hold no conditions is remembered until the stored state next changes
        (any policy, account, group or key change anywhere): the same question is then answered without
        re-walking the policies, with the same audit record. Conditional grants depend on the time and
        are evaluated every time."""
        delegates = parse_delegates(raw_delegates, max_delegates=self.limits.max_delegates)
        delegation = [d.account for d in delegates] if delegates else []
        # After the request is validated, where an existing account the caller may not use is refused.
        await self.require_named_project(caller, target, permission)
        memo = await decision_memo(self.core.store)
        key = ("chain", caller.principal.member, target.account, permission, *delegation)
        if memo is not None:
            remembered: _GrantedChain | None = memo.get(key)
            if remembered is not None:
                self.per_account.check(remembered.account.email, shown=target.account)
                audit.note(resource=remembered.resource, delegation=delegation)
                for hop_permission, hop_resource in remembered.authorizations:
                    audit.note_authorization(hop_permission, hop_resource, True)
                await require_service(self.core, caller, service, remembered.account.project_id)
                return remembered.account
        hops = plan_chain(delegates, target, permission)
        resolved_target = await self.core.resolve_account(target)
        named = resolved_target.unique_id if resolved_target else target.account
        resource = f"projects/-/serviceAccounts/{named}"
        audit.note(resource=resource, delegation=delegation)
        identities = await self.core.identities(caller.principal)
        seen: set[str] = set()
        chain: list[ServiceAccount] = []
        authorizations: list[tuple[str, str]] = []
        account: ServiceAccount | None = None
        last = len(hops) - 1
        for index, hop in enumerate(hops):
            account = resolved_target if index == last else await self.core.resolve_account(hop.resource)
            # A missing account and one the caller may not use get the same denial, naming the account as the
            # caller did (as on Google, through the '-' wildcard): neither tells whether it exists, nor its
            # email when it is named by unique id. Only the owner learns which it was, and at which hop.
            if account is None:
                await self.core.explain_missing_account(_grantee(caller, chain), hop.resource, hop.permission,
                                                        _hop(index, hops))
                raise PermissionDenied.iam(hop.permission, hop.resource.name)
            if account.unique_id in seen:
                raise InvalidArgument(f"The delegation chain names {hop.resource.account} more than once.",
                                      field="delegates")
            seen.add(account.unique_id)
            if not await self.core.allowed_on_account(identities, hop.permission, account):
                await self.core.explain_on_account(_grantee(caller, chain), identities, hop.permission, account,
                                                   _hop(index, hops))
                raise PermissionDenied.iam(hop.permission, hop.resource.name)
            if account.disabled:
                raise FailedPrecondition(f"Service account {account.email} is disabled.")
            chain.append(account)
            authorizations.append((hop.permission, account_condition_name(account)))
            if index != last:
                identities = await self.core.identities(_service_account_principal(account))
        assert account is not None
        # Only once the chain is granted: a caller who may not use the account cannot spend its budget, nor
        # learn from a 429 which names belong to one account (nor from a 403 which project holds it).
        await require_service(self.core, caller, service, account.project_id)
        self.per_account.check(account.email, shown=target.account)
        if memo is not None and await self.core.unconditional(chain):
            if len(memo) >= MAX_REMEMBERED:
                memo.clear()
            memo[key] = _GrantedChain(account, resource, tuple(authorizations))
        return account

    async def require_named_project(self, caller: Caller, target: AccountRef, permission: str, *,
                                    before_validation: bool = False) -> None:
        """IAM v1's ``signBlob``/``signJwt`` name a project: it must exist and hold the account, else 404 as IAM v1
        answers, to a caller who may be told (``Core.missing_account``); any other caller gets the denial an
        account it may not use gives. Checked twice: before the request is validated, to answer the 404 first
        (only the 404); and in the chain, after validation, where the denial of an existing account comes, and
        before a remembered chain is used (its key names no project). The '-' wildcard of the IAM Credentials
        API is checked by the chain alone."""
        if target.wildcard:
            return
        account = await self.core.resolve_account(target)
        if account is None or not await in_named_project(self.core, target, account):
            answer = await self.core.missing_account(caller, target, permission)
            if not before_validation or isinstance(answer, NotFound):
                await self.core.explain_missing_account(caller.principal.member, target, permission)
                raise answer

    async def generate_access_token(self, caller: Caller, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        target = parse_account_name(name, require_wildcard=True)
        scopes = _scopes(body.get("scope"), self.limits.max_scopes)
        account = await self.authorize_chain(caller, target, body.get("delegates"), roles.PERM_GET_ACCESS_TOKEN)
        raw_lifetime = body.get("lifetime")
        extended = raw_lifetime not in (None, "") and await lifetime_extension_allowed(self.core, account)
        lifetime = resolve_lifetime(raw_lifetime, extended_allowed=extended)
        issued = self.core.now()
        now = int(issued)
        token, claims = self.core.minter.mint(principal_kind="serviceAccount", principal_id=account.unique_id,
                                              scopes=scopes, issued_at=issued, expires_at=now + lifetime)
        expire_time = format_timestamp(now + lifetime)
        audit.note(tokenHash=self.core.audit_hash(claims.token_id), expireTime=expire_time)
        return {"accessToken": token, "expireTime": expire_time}

    async def id_token_claims(self, account: ServiceAccount, audience: str, *, include_email: bool,
                              use_email_azp: bool = False, organization_number: bool = False) -> dict[str, Any]:
        now = int(self.core.now())
        claims: dict[str, Any] = {
            "aud": audience,
            "azp": account.email if use_email_azp else account.unique_id,
            "exp": now + ID_TOKEN_LIFETIME,
            "iat": now,
            "iss": self.core.settings.issuer,
            "sub": account.unique_id,
        }
        if include_email:
            claims["email"] = account.email
            claims["email_verified"] = True
        if organization_number:
            org = await self.core.store.get_meta("organization_number")
            claims["google"] = {"organization_number": int(org) if org else None}
        return claims

    async def sign_id_token(self, claims: Mapping[str, Any]) -> str:
        key = await self.core.keyring.signing_key(ISSUER, "keyless ID token issuer")
        return sign_rs256(key.private_key, key.key_id, claims)

    async def generate_id_token(self, caller: Caller, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        target = parse_account_name(name, require_wildcard=True)
        audience = body.get("audience")
        if not isinstance(audience, str) or not audience.strip():
            raise InvalidArgument("Invalid value for audience: the audience must be a non-empty string.",
                                  field="audience")
        include_email = parse_bool(body.get("includeEmail"), field="includeEmail")
        use_email_azp = parse_bool(body.get("useEmailAzp"), field="useEmailAzp")
        org_number = parse_bool(body.get("organizationNumberIncluded"), field="organizationNumberIncluded")
        account = await self.authorize_chain(caller, target, body.get("delegates"), roles.PERM_GET_ID_TOKEN)
        claims = await self.id_token_claims(account, audience, include_email=include_email,
                                            use_email_azp=use_email_azp, organization_number=org_number)
        token = await self.sign_id_token(claims)
        audit.note(tokenHash=self.core.audit_hash(token))
        return {"token": token}

    async def _account_key(self, account: ServiceAccount) -> tuple[str, Any]:
        key = await self.core.keyring.signing_key(account.unique_id, account.email)
        return key.key_id, key.private_key

    async def sign_blob(self, caller: Caller, name: str, body: Mapping[str, Any], *,
                        payload_field: str = "payload", require_wildcard: bool = True) -> tuple[str, bytes]:
        target = parse_account_name(name, require_wildcard=require_wildcard)
        await self.require_named_project(caller, target, roles.PERM_SIGN_BLOB, before_validation=True)
        payload = decode_bytes(body.get(payload_field), field=payload_field)
        if len(payload) > self.limits.max_sign_blob_bytes:
            raise InvalidArgument(f"The {payload_field} is larger than {self.limits.max_sign_blob_bytes} bytes.",
                                  field=payload_field)
        account = await self.authorize_chain(caller, target, body.get("delegates"), roles.PERM_SIGN_BLOB,
                                             service=IAM_CREDENTIALS if require_wildcard else IAM)
        key_id, key = await self._account_key(account)
        signature = sign_pkcs1_sha256(key, payload)
        audit.note(keyId=key_id, payloadSha256=hashlib.sha256(payload).hexdigest())
        return key_id, signature

    async def sign_jwt(self, caller: Caller, name: str, body: Mapping[str, Any], *,
                       require_wildcard: bool = True) -> tuple[str, str]:
        """Sign the caller's claims with the account's current system-managed key.

        A payload without ``exp`` gets ``exp`` = now + 1 hour, as Google documents for signJwt ("this claim is
        added automatically, with a timestamp that is 1 hour in the future"; nothing else is added): a JWT
        signed with no expiry would be good for as long as its key is published. A given ``exp`` must be an
        integer, not in the past and at most 12 hours ahead; the payload is then signed as sent. A payload
        naming a member twice is refused: the 12-hour check and a relying party might read different values.
        """
        target = parse_account_name(name, require_wildcard=require_wildcard)
        await self.require_named_project(caller, target, roles.PERM_SIGN_JWT, before_validation=True)
        raw = body.get("payload")
        if not isinstance(raw, str) or not raw:
            raise InvalidArgument("The payload must be a JSON object serialized as a string.", field="payload")
        encoded = raw.encode()
        if len(encoded) > self.limits.max_sign_jwt_bytes:
            raise InvalidArgument(f"The payload is larger than {self.limits.max_sign_jwt_bytes} bytes.",
                                  field="payload")
        try:
            claims = loads_unique(encoded)
        except DuplicateMember as exc:
            raise InvalidArgument(f"The payload names the member '{str(exc)[:64]}' more than once.",
                                  field="payload") from None
        except ValueError:
            raise InvalidArgument("The payload is not valid JSON.", field="payload") from None
        if not isinstance(claims, dict):
            raise InvalidArgument("The payload must be a JSON object.", field="payload")
        now = int(self.core.now())
        if "exp" in claims:
            exp = claims["exp"]
            if not isinstance(exp, int) or isinstance(exp, bool):
                raise InvalidArgument("The exp claim must be an integer number of seconds since the epoch.",
                                      field="payload")
            if exp < now:
                raise InvalidArgument("The exp claim is in the past.", field="payload")
            if exp > now + MAX_SIGN_JWT_AHEAD:
                raise InvalidArgument("The exp claim must be at most 12 hours in the future.", field="payload")
        account = await self.authorize_chain(caller, target, body.get("delegates"), roles.PERM_SIGN_JWT,
                                             service=IAM_CREDENTIALS if require_wildcard else IAM)
        key_id, key = await self._account_key(account)
        if "exp" not in claims:
            claims["exp"] = now + SIGN_JWT_DEFAULT_LIFETIME
            jwt = sign_rs256(key, key_id, claims)
        else:
            jwt = sign_rs256_raw_payload(key, key_id, encoded)
        audit.note(keyId=key_id, tokenHash=self.core.audit_hash(jwt))
        return key_id, jwt


def _scopes(raw: object, limit: int) -> tuple[str, ...]:
    # ``scope`` is a repeated field: a string (even space-separated, as /token takes it) is refused, as Google does.
    if isinstance(raw, str) and raw:
        raise InvalidArgument("Invalid value at 'scope': expected a list of strings.", field="scope")
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument("Scope required.", field="scope")
    if len(raw) > limit:
        raise InvalidArgument(f"Too many scopes: {len(raw)}; at most {limit} are allowed.", field="scope")
    if not all(isinstance(s, str) and s.strip() for s in raw):
        raise InvalidArgument("Each scope must be a non-empty string.", field="scope")
    return tuple(dict.fromkeys(s.strip() for s in raw))


def decode_bytes(value: object, *, field: str) -> bytes:
    """proto3 JSON bytes: standard or URL-safe base64, padded or not."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} is required and must be a base64 string.", field=field)
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        # base64.b64decode(..., validate=True) without its Python wrapper (this runs on every signBlob).
        return binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"Invalid value at '{field}' (TYPE_BYTES): not valid base64.", field=field) from None
