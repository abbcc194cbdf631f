"""The IAM Credentials API: short-lived access tokens, ID tokens, signed blobs and signed JWTs.

Each operation takes its typed request (``keyless.service.requests``) and returns its typed result. Every one
asks ``authorize`` first: may the caller act as the account, through the delegates? That decision is the one
consulted from the decision memo, and one ``audit.note`` records it whether it was remembered or made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from keyless.crypto.jwt import DuplicateMember, loads_unique
from keyless.domain import roles
from keyless.domain.delegation import plan_chain
from keyless.domain.lifetimes import DEFAULT_LIFETIME, MAX_LIFETIME, check_lifetime
from keyless.domain.names import AccountRef
from keyless.domain.policy import Principal
from keyless.domain.services import IAM, IAM_CREDENTIALS
from keyless.errors import FailedPrecondition, InvalidArgument, KeylessError, NotFound, PermissionDenied
from keyless.service import audit, minting
from keyless.service.core import Caller, Core, account_condition_name, in_named_project
from keyless.service.limits import Limits, RateLimiter
from keyless.service.orgpolicies import lifetime_extension_allowed
from keyless.service.requests import (
    AccessToken,
    GenerateAccessTokenRequest,
    GenerateIdTokenRequest,
    IdToken,
    SignBlobRequest,
    SignedBlob,
    SignedJwt,
    SignJwtRequest,
)
from keyless.service.usage import require_service
from keyless.storage.base import ServiceAccount

MAX_SIGN_JWT_AHEAD = 12 * 3600
SIGN_JWT_DEFAULT_LIFETIME = 3600
MAX_REMEMBERED = 50_000


@dataclass(frozen=True, slots=True)
class ChainDecision:
    """A granted caller -> delegates -> account chain, as its audit entry records it: the account's resource
    name, the delegation and each hop's (permission, resource, granted)."""

    chain: tuple[ServiceAccount, ...]  # the delegates', then the target account
    resource: str
    delegation: list[str]
    authorizations: tuple[tuple[str, str, bool], ...]
    conditional: bool  # some policy on the way has a condition: the answer may change with the time alone


def _hop(index: int, hops: int) -> tuple[int, int] | None:
    return (index + 1, hops) if hops > 1 else None


class Credentials:
    def __init__(self, core: Core, limits: Limits | None = None) -> None:
        self.core = core
        self.limits = limits or Limits()
        self.per_account = RateLimiter(self.limits.rate_limit_per_account, what="for the service account")

    async def authorize(self, caller: Caller, target: AccountRef, delegates: tuple[AccountRef, ...],
                        permission: str, *, service: str = IAM_CREDENTIALS) -> ServiceAccount:
        """Check the caller -> delegates -> target chain, and (``--enforce-services``) that the request's consumer
        project has ``service`` enabled; return the target account.

        A granted chain whose policies hold no conditions is remembered in the store's decision memo until the
        stored state next changes (any policy, account, group or key change anywhere): the same question is
        then answered without walking the policies, with the same audit record. Conditional grants depend on
        the time and are decided every time."""
        if len(delegates) > self.limits.max_delegates:
            raise InvalidArgument(f"Too many delegates: {len(delegates)}; at most {self.limits.max_delegates} are "
                                  "allowed.", field="delegates")
        if target.project != "-":
            # After the request is validated, where an existing account the caller may not use is refused.
            await self.require_named_project(caller, target, permission)
        memo = await self.core.store.memo()
        key: tuple[str, ...] = ("chain", caller.principal.kind, caller.principal_id, permission, target.account)
        delegation: list[str] = []
        for delegate in delegates:
            delegation.append(delegate.account)
        key += tuple(delegation)
        decision: ChainDecision | None = None if memo is None else memo.get(key)
        if decision is None:
            decision = await self._decide(caller, target, delegates, delegation, permission)
            if memo is not None and not decision.conditional:
                if len(memo) >= MAX_REMEMBERED:
                    memo.clear()
                memo[key] = decision
        audit.note(resource=decision.resource, delegation=decision.delegation, authorization=decision.authorizations)
        account = decision.chain[-1]
        # Only once the chain is granted: a caller who may not use the account cannot spend its budget, nor
        # learn from a 429 which names belong to one account (nor from a 403 which project holds it).
        if self.core.settings.enforce_services:
            await require_service(self.core, caller, service, account.project_id)
        self.per_account.check(account.email, shown=target.account)
        return account

    async def _decide(self, caller: Caller, target: AccountRef, delegates: tuple[AccountRef, ...],
                      delegation: list[str], permission: str) -> ChainDecision:
        """Walk the chain: the caller needs ``iam.serviceAccounts.implicitDelegation`` on the first delegate, each
        delegate on the next, and the last ``permission`` on the target. A denial records the hops decided so
        far before it is raised."""
        hops = plan_chain(delegates, target, permission)
        core = self.core
        resolved_target = await core.resolve_account(target)
        resource = f"projects/-/serviceAccounts/{resolved_target.unique_id if resolved_target else target.account}"
        authorizations: list[tuple[str, str, bool]] = []
        accounts: list[ServiceAccount] = []
        seen: set[str] = set()
        conditional = False
        grantee = caller.principal
        identities = await core.identities(grantee)
        last = len(hops) - 1
        try:
            for index, hop in enumerate(hops):
                account = resolved_target if index == last else await core.resolve_account(hop.resource)
                # A missing account and one the caller may not use get the same denial, naming the account as
                # the caller did (as on Google, through the '-' wildcard): neither tells whether it exists, nor
                # its email when it is named by unique id. Only the owner learns which it was, and at which hop.
                if account is None:
                    await core.explain_missing_account(grantee.member, hop.resource, hop.permission,
                                                       _hop(index, len(hops)))
                    raise PermissionDenied.iam(hop.permission, hop.resource.name)
                if account.unique_id in seen:
                    raise InvalidArgument(f"The delegation chain names {hop.resource.account} more than once.",
                                          field="delegates")
                granted, depends_on_time = await core.decide_on_account(identities, hop.permission, account)
                conditional = conditional or depends_on_time
                authorizations.append((hop.permission, account_condition_name(account), granted))
                if not granted:
                    await core.explain_on_account(grantee.member, identities, hop.permission, account,
                                                  _hop(index, len(hops)))
                    raise PermissionDenied.iam(hop.permission, hop.resource.name)
                if account.disabled:
                    raise FailedPrecondition(f"Service account {account.email} is disabled.")
                accounts.append(account)
                seen.add(account.unique_id)
                if index != last:
                    grantee = Principal("serviceAccount", account.email)
                    identities = await core.identities(grantee)
        except KeylessError:
            audit.note(resource=resource, delegation=delegation, authorization=tuple(authorizations))
            raise
        return ChainDecision(tuple(accounts), resource, delegation, tuple(authorizations), conditional)

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

    async def generate_access_token(self, caller: Caller, request: GenerateAccessTokenRequest) -> AccessToken:
        # The scopes: at least one, at most max_scopes, none blank; stripped, each once, in their order.
        if not request.scopes:
            raise InvalidArgument("Scope required.", field="scope")
        if len(request.scopes) > self.limits.max_scopes:
            raise InvalidArgument(f"Too many scopes: {len(request.scopes)}; at most {self.limits.max_scopes} are "
                                  "allowed.", field="scope")
        stripped = []
        for scope in request.scopes:
            scope = scope.strip()
            if not scope:
                raise InvalidArgument("Each scope must be a non-empty string.", field="scope")
            stripped.append(scope)
        scopes = tuple(dict.fromkeys(stripped))
        account = await self.authorize(caller, request.account, request.delegates, roles.PERM_GET_ACCESS_TOKEN)
        if request.lifetime is None:
            lifetime = DEFAULT_LIFETIME
        else:
            extended = request.lifetime > MAX_LIFETIME and await lifetime_extension_allowed(self.core, account)
            lifetime = check_lifetime(request.lifetime, extended_allowed=extended)
        token = minting.access_token(self.core, "serviceAccount", account.unique_id, scopes, lifetime)
        return AccessToken(token.token, token.expires_at)

    async def generate_id_token(self, caller: Caller, request: GenerateIdTokenRequest) -> IdToken:
        if not request.audience.strip():
            raise InvalidArgument("Invalid value for audience: the audience must be a non-empty string.",
                                  field="audience")
        account = await self.authorize(caller, request.account, request.delegates, roles.PERM_GET_ID_TOKEN)
        claims = minting.account_id_claims(self.core, account, request.audience,
                                           include_email=request.include_email, azp_email=request.use_email_azp)
        if request.organization_number_included:
            org = await self.core.store.get_meta("organization_number")
            claims["google"] = {"organization_number": int(org) if org else None}
        return IdToken(await minting.id_token(self.core, claims))

    async def sign_blob(self, caller: Caller, request: SignBlobRequest) -> SignedBlob:
        if request.account.project != "-":  # a 404 for a project or account not there comes first, as on IAM v1
            await self.require_named_project(caller, request.account, roles.PERM_SIGN_BLOB, before_validation=True)
        field = "bytesToSign" if request.iam_v1 else "payload"
        if len(request.payload) > self.limits.max_sign_blob_bytes:
            raise InvalidArgument(f"The {field} is larger than {self.limits.max_sign_blob_bytes} bytes.",
                                  field=field)
        account = await self.authorize(caller, request.account, request.delegates, roles.PERM_SIGN_BLOB,
                                       service=IAM if request.iam_v1 else IAM_CREDENTIALS)
        key_id, signature = await self.core.keyring.sign(account.unique_id, account.email, request.payload)
        audit.note(keyId=key_id, payloadSha256=hashlib.sha256(request.payload).hexdigest())
        return SignedBlob(key_id, signature)

    async def sign_jwt(self, caller: Caller, request: SignJwtRequest) -> SignedJwt:
        """Sign the caller's claims with the account's current system-managed key.

        A payload without ``exp`` gets ``exp`` = now + 1 hour, as Google documents for signJwt ("this claim is
        added automatically, with a timestamp that is 1 hour in the future"; nothing else is added): a JWT
        signed with no expiry would be good for as long as its key is published. A given ``exp`` must be an
        integer, not in the past and at most 12 hours ahead; the payload is then signed as sent. A payload
        naming a member twice is refused: the 12-hour check and a relying party might read different values.
        """
        if request.account.project != "-":
            await self.require_named_project(caller, request.account, roles.PERM_SIGN_JWT, before_validation=True)
        encoded = request.payload.encode()
        if not encoded:
            raise InvalidArgument("The payload must be a JSON object serialized as a string.", field="payload")
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
        now = int(self.core.clock.now())
        if "exp" in claims:
            exp = claims["exp"]
            if not isinstance(exp, int) or isinstance(exp, bool):
                raise InvalidArgument("The exp claim must be an integer number of seconds since the epoch.",
                                      field="payload")
            if exp < now:
                raise InvalidArgument("The exp claim is in the past.", field="payload")
            if exp > now + MAX_SIGN_JWT_AHEAD:
                raise InvalidArgument("The exp claim must be at most 12 hours in the future.", field="payload")
        account = await self.authorize(caller, request.account, request.delegates, roles.PERM_SIGN_JWT,
                                       service=IAM if request.iam_v1 else IAM_CREDENTIALS)
        if "exp" not in claims:
            claims["exp"] = now + SIGN_JWT_DEFAULT_LIFETIME
            key_id, jwt = await self.core.keyring.sign_jwt(account.unique_id, account.email, claims)
        else:
            key_id, jwt = await self.core.keyring.sign_jwt(account.unique_id, account.email, encoded)
        audit.note(keyId=key_id, tokenHash=self.core.audit_hash(jwt))
        return SignedJwt(key_id, jwt)

