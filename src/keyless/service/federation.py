"""Workload identity federation: pools and providers (IAM v1, operations answered done) and the Security Token
Service's token exchange (``POST https://sts.googleapis.com/v1/token``), which turns an external OIDC token, or a
client certificate presented over mutual TLS to an X.509 provider (``sts.mtls.googleapis.com``), into a federated
access token for the subject the provider's mapping names.

What a federated token may do is what bindings on its ``principal://`` and ``principalSet://`` members grant
(``Principal.of_federated``): chiefly ``generateAccessToken`` on a service account where they hold
``roles/iam.workloadIdentityUser``, through the credential core unchanged.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography import x509

from keyless.crypto import x509_trust
from keyless.crypto.jwks import IssuerKey, parse_jwks, verify_external
from keyless.crypto.jwt import (
    BadSignature,
    ExpiredJwt,
    JwtError,
    JwtTimeError,
    MalformedJwt,
    PrematureJwt,
    UnacceptedAlgorithm,
    unverified_parts,
)
from keyless.domain import federation as fed
from keyless.domain.fields import check_fields
from keyless.domain.lifetimes import format_timestamp
from keyless.domain.numbers import parse_count
from keyless.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OAuthError,
    Unauthenticated,
)
from keyless.service import audit, minting, oidc_discovery
from keyless.service.authn import CLOUD_PLATFORM, authenticate_access_token
from keyless.service.core import Caller, Core
from keyless.storage.base import Conflict, Project, WorkloadPool, WorkloadProvider

STS_SERVICE = "sts.googleapis.com"
EXCHANGE_METHOD = "google.identity.sts.v1.SecurityTokenService.ExchangeToken"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPES = frozenset({"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"})
MTLS_TYPE = "urn:ietf:params:oauth:token-type:mtls"
NOT_SERVED_TYPES = frozenset({"urn:ietf:params:aws:token-type:aws4_request", "urn:ietf:params:oauth:token-type:saml2",
                              ACCESS_TOKEN_TYPE})
# The JSON form of the request spells its fields in camelCase.
_CAMEL = {"grantType": "grant_type", "subjectToken": "subject_token", "subjectTokenType": "subject_token_type",
          "requestedTokenType": "requested_token_type", "audience": "audience", "scope": "scope",
          "options": "options"}
MAX_SUBJECT_TOKEN = 16_384  # bytes of an external token (keyless's bound; a Kubernetes token is about 1 KB)
MAX_MTLS_SUBJECT_TOKEN = 65_536  # the mTLS exchange's list of certificates (a leaf and intermediates: a few KB)
MAX_TOKEN_SPAN = 48 * 3600  # exp at most this long after iat (Google's rule)
FEDERATED_TOKEN_LIFETIME = 3600
INVALID_TARGET = ('The target service indicated by the "audience" parameters is invalid. This might either be '
                  "because the pool or provider is disabled or deleted or because it doesn't exist.")

POOL_TYPE = "type.googleapis.com/google.iam.v1.WorkloadIdentityPool"
PROVIDER_TYPE = "type.googleapis.com/google.iam.v1.WorkloadIdentityPoolProvider"
POOL_FIELDS = ("name", "displayName", "description", "state", "disabled", "expireTime")
PROVIDER_FIELDS = (*POOL_FIELDS, "attributeMapping", "attributeCondition", "oidc", "x509")
NOT_SERVED_KINDS = ("aws", "saml")
# An X.509 provider's google.subject unless its mapping says otherwise (Google's default).
X509_DEFAULT_MAPPING = {"google.subject": "assertion.subject.dn.cn"}
NO_CLIENT_CERTIFICATE = ("The mTLS token exchange needs the client certificate presented on the TLS connection: send "
                         "it to keyless's mTLS listener (keyless serve --mtls-port), the "
                         "https://sts.mtls.googleapis.com/v1/token of keyless.")
OIDC_FIELDS = ("issuerUri", "allowedAudiences", "jwksJson")
# updateMask paths (snake_case or camelCase, as clients send them) and the columns they change.
POOL_MASK = {"display_name": "display_name", "displayName": "display_name", "description": "description",
             "disabled": "disabled"}
PROVIDER_MASK = {**POOL_MASK, "attribute_mapping": "attribute_mapping", "attributeMapping": "attribute_mapping",
                 "attribute_condition": "attribute_condition", "attributeCondition": "attribute_condition",
                 "oidc": "oidc", "oidc.issuer_uri": "oidc", "oidc.issuerUri": "oidc",
                 "oidc.allowed_audiences": "oidc", "oidc.allowedAudiences": "oidc", "oidc.jwks_json": "oidc",
                 "oidc.jwksJson": "oidc", "x509": "x509", "x509.trust_store": "x509", "x509.trustStore": "x509"}
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@functools.lru_cache(maxsize=256)
def _issuer_keys(jwks_json: str) -> tuple[IssuerKey, ...]:
    """A provider's keys, parsed once per JWKS text (stored JWKS were checked when written)."""
    return tuple(parse_jwks(jwks_json))


def _check_oidc(raw: object) -> dict[str, Any]:
    """A provider's ``oidc`` block. With ``jwksJson`` keyless verifies tokens with those keys only; without it,
    it discovers the issuer's keys (``keyless.service.oidc_discovery``), so the issuer must be one it may fetch
    from: https, or plain http to a loopback host."""
    field = "workloadIdentityPoolProvider.oidc"
    if not isinstance(raw, Mapping):
        raise InvalidArgument("An OIDC provider needs an oidc object.", field=field)
    check_fields(raw, OIDC_FIELDS, field)
    issuer = raw.get("issuerUri")
    if not isinstance(issuer, str) or len(issuer) > 2048 or not oidc_discovery.check_issuer_uri(issuer):
        raise InvalidArgument("The oidc.issuerUri must be an https:// URL (plain http:// only for a loopback "
                              "issuer: 127.0.0.1, [::1] or localhost).", field=f"{field}.issuerUri")
    audiences = raw.get("allowedAudiences") or []
    if (not isinstance(audiences, list) or len(audiences) > fed.MAX_AUDIENCES
            or not all(isinstance(a, str) and 0 < len(a) <= fed.MAX_AUDIENCE_LENGTH for a in audiences)):
        raise InvalidArgument(f"The oidc.allowedAudiences must be at most {fed.MAX_AUDIENCES} strings of at most "
                              f"{fed.MAX_AUDIENCE_LENGTH} characters.", field=f"{field}.allowedAudiences")
    jwks = raw.get("jwksJson")
    out: dict[str, Any] = {"issuerUri": issuer}
    if jwks is not None and jwks != "":
        if not isinstance(jwks, str):
            raise InvalidArgument("The oidc.jwksJson must be a string holding a JWKS.", field=f"{field}.jwksJson")
        _issuer_keys(jwks)
        out["jwksJson"] = jwks
    if audiences:
        out["allowedAudiences"] = list(audiences)
    return out


def _state(deleted_at: float | None, disabled: bool, out: dict[str, Any]) -> dict[str, Any]:
    out["state"] = "DELETED" if deleted_at is not None else "ACTIVE"
    if disabled:
        out["disabled"] = True
    if deleted_at is not None:
        out["expireTime"] = format_timestamp(deleted_at + fed.UNDELETE_WINDOW)
    return out


def pool_json(pool: WorkloadPool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": pool.name}
    if pool.display_name:
        out["displayName"] = pool.display_name
    if pool.description:
        out["description"] = pool.description
    return _state(pool.deleted_at, pool.disabled, out)


def provider_json(provider: WorkloadProvider) -> dict[str, Any]:
    out: dict[str, Any] = {"name": provider.name}
    if provider.display_name:
        out["displayName"] = provider.display_name
    if provider.description:
        out["description"] = provider.description
    _state(provider.deleted_at, provider.disabled, out)
    out["attributeMapping"] = dict(provider.attribute_mapping)
    if provider.attribute_condition:
        out["attributeCondition"] = provider.attribute_condition
    if provider.x509:
        out["x509"] = dict(provider.x509)
    else:
        out["oidc"] = dict(provider.oidc)
    return out


def _operation(resource: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A long-running operation, answered done with its response (every change takes effect at once)."""
    return {"name": f"{resource}/operations/{secrets.token_hex(12)}", "done": True,
            "response": {"@type": kind, **body}}


def _mask(raw: object, paths: Mapping[str, str]) -> set[str]:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidArgument("The updateMask is required.", field="updateMask")
    columns = set()
    for path in (p.strip() for p in raw.split(",") if p.strip()):
        if path not in paths:
            raise InvalidArgument(f"Invalid updateMask path: {path[:100]}.", field="updateMask")
        columns.add(paths[path])
    return columns


def _page(raw_size: str | None, token: str | None) -> tuple[int, str]:
    size = parse_count(raw_size, field="pageSize", wire="pageSize") or DEFAULT_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE), token or ""


class Federation:
    def __init__(self, core: Core) -> None:
        self.core = core
        # Told the CA certificates of an X.509 provider this process writes (the mTLS listener asks clients'
        # certificates of them from the next handshake on); None when no mTLS listener runs here.
        self.trust_added: Callable[[Sequence[str]], None] | None = None
        # The keys of issuers discovered for providers without jwksJson, fetched on demand.
        self.issuer_keys = oidc_discovery.IssuerKeyCache(core.now)

    # ------------------------------------------------------------ pools and providers

    async def _project(self, caller: Caller, project: str, permission: str) -> Project:
        found = await self.core.store.get_project(project)
        if found is None:
            raise NotFound(f"Project {project[:100]} not found.")
        await self.core.require_on_project(caller, permission, found.project_id)
        return found

    def _deleted_for_good(self, deleted_at: float | None) -> bool:
        return deleted_at is not None and self.core.now() >= deleted_at + fed.UNDELETE_WINDOW

    async def _pool(self, name: str) -> WorkloadPool:
        pool = await self.core.store.get_workload_pool(name)
        if pool is None or self._deleted_for_good(pool.deleted_at):
            raise NotFound(f"Requested entity was not found: {name}.")
        return pool

    async def _provider(self, name: str) -> WorkloadProvider:
        provider = await self.core.store.get_workload_provider(name)
        if provider is None or self._deleted_for_good(provider.deleted_at):
            raise NotFound(f"Requested entity was not found: {name}.")
        return provider

    async def create_pool(self, caller: Caller, project: str, pool_id: object, body: Mapping[str, Any]
                          ) -> dict[str, Any]:
        found = await self._project(caller, project, "iam.workloadIdentityPools.create")
        check_fields(body, POOL_FIELDS, "workloadIdentityPool")
        fed.check_id(pool_id, "workload identity pool", "workloadIdentityPoolId")
        name = fed.pool_name(found.number, str(pool_id))
        audit.note(resource=name)
        pool = WorkloadPool(name, found.number,
                            fed.check_text(body.get("displayName"), fed.MAX_DISPLAY_NAME, "displayName"),
                            fed.check_text(body.get("description"), fed.MAX_DESCRIPTION, "description"),
                            body.get("disabled") is True, None, self.core.now())
        try:
            await self.core.store.create_workload_pool(pool)
        except Conflict:
            raise AlreadyExists("Requested entity already exists", resource_name=name) from None
        return _operation(name, POOL_TYPE, pool_json(pool))

    async def get_pool(self, caller: Caller, project: str, pool_id: str) -> dict[str, Any]:
        found = await self._project(caller, project, "iam.workloadIdentityPools.get")
        return pool_json(await self._pool(fed.pool_name(found.number, pool_id)))

    async def list_pools(self, caller: Caller, project: str, *, show_deleted: bool, page_size: str | None,
                         page_token: str | None) -> dict[str, Any]:
        found = await self._project(caller, project, "iam.workloadIdentityPools.list")
        return self._page_of("workloadIdentityPools", await self.core.store.list_workload_pools(found.number),
                             pool_json, show_deleted=show_deleted, page_size=page_size, page_token=page_token)

    async def patch_pool(self, caller: Caller, project: str, pool_id: str, body: Mapping[str, Any],
                         update_mask: str | None) -> dict[str, Any]:
        found = await self._project(caller, project, "iam.workloadIdentityPools.update")
        name = fed.pool_name(found.number, pool_id)
        audit.note(resource=name)
        check_fields(body, POOL_FIELDS, "workloadIdentityPool")
        columns = _mask(update_mask, POOL_MASK)
        pool = await self._pool(name)
        if pool.deleted_at is not None:
            raise FailedPrecondition(f"The workload identity pool {name} is deleted; undelete it first.")
        changes: dict[str, Any] = {}
        if "display_name" in columns:
            changes["display_name"] = fed.check_text(body.get("displayName"), fed.MAX_DISPLAY_NAME, "displayName")
        if "description" in columns:
            changes["description"] = fed.check_text(body.get("description"), fed.MAX_DESCRIPTION, "description")
        if "disabled" in columns:
            changes["disabled"] = body.get("disabled") is True
        updated = await self.core.store.update_workload_pool(name, **changes)
        assert updated is not None
        return _operation(name, POOL_TYPE, pool_json(updated))

    async def delete_pool(self, caller: Caller, project: str, pool_id: str) -> dict[str, Any]:
        found = await self._project(caller, project, "iam.workloadIdentityPools.delete")
        name = fed.pool_name(found.number, pool_id)
        audit.note(resource=name)
        pool = await self._pool(name)
        if pool.deleted_at is not None:
            raise FailedPrecondition(f"The workload identity pool {name} is already deleted.")
        updated = await self.core.store.update_workload_pool(name, deleted_at=self.core.now())
        assert updated is not None
        return _operation(name, POOL_TYPE, pool_json(updated))

    async def undelete_pool(self, caller: Caller, project: str, pool_id: str) -> dict[str, Any]:
        found = await self._project(caller, project, "iam.workloadIdentityPools.undelete")
        name = fed.pool_name(found.number, pool_id)
        audit.note(resource=name)
        pool = await self._pool(name)
        if pool.deleted_at is None:
            raise FailedPrecondition(f"The workload identity pool {name} is not deleted.")
        updated = await self.core.store.update_workload_pool(name, deleted_at=None)
        assert updated is not None
        return _operation(name, POOL_TYPE, pool_json(updated))

    def _provider_fields(self, body: Mapping[str, Any], columns: set[str], kind: str) -> dict[str, Any]:
        check_fields(body, (*PROVIDER_FIELDS, *NOT_SERVED_KINDS), "workloadIdentityPoolProvider")
        for other in NOT_SERVED_KINDS:
            if other in body:
                raise InvalidArgument(f"keyless serves OIDC and X.509 workload identity providers; {other} providers "
                                      "are not supported by keyless.", field=f"workloadIdentityPoolProvider.{other}")
        if {"oidc", "x509"} <= columns and "oidc" in body and "x509" in body:
            raise InvalidArgument("A provider is either oidc or x509, not both.", field="workloadIdentityPoolProvider")
        changed_kind = "x509" if kind == "oidc" else "oidc"
        if changed_kind in columns - {kind} and changed_kind in body and body.get(changed_kind) is not None:
            raise InvalidArgument(f"This provider is an {kind} provider; its kind cannot change.",
                                  field=f"workloadIdentityPoolProvider.{changed_kind}")
        changes: dict[str, Any] = {}
        if "display_name" in columns:
            changes["display_name"] = fed.check_text(body.get("displayName"), fed.MAX_DISPLAY_NAME, "displayName")
        if "description" in columns:
            changes["description"] = fed.check_text(body.get("description"), fed.MAX_DESCRIPTION, "description")
        if "disabled" in columns:
            changes["disabled"] = body.get("disabled") is True
        if "attribute_mapping" in columns:
            mapping = fed.check_attribute_mapping(body.get("attributeMapping"), required=kind == "oidc")
            changes["attribute_mapping"] = mapping or (dict(X509_DEFAULT_MAPPING) if kind == "x509" else mapping)
        if "attribute_condition" in columns:
            changes["attribute_condition"] = fed.check_attribute_condition(body.get("attributeCondition"))
        if "oidc" in columns and kind == "oidc":
            changes["oidc"] = _check_oidc(body.get("oidc"))
        if "x509" in columns and kind == "x509":
            changes["x509"] = x509_trust.check_trust_store(body.get("x509"))
        return changes

    def _trust_changed(self, provider: WorkloadProvider) -> None:
        if provider.x509 and self.trust_added is not None:
            anchors, intermediates = x509_trust.store_pems(provider.x509)
            self.trust_added([*anchors, *intermediates])

    async def create_provider(self, caller: Caller, project: str, pool_id: str, provider_id: object,
                              body: Mapping[str, Any]) -> dict[str, Any]:
        found = await self._project(caller, project, "iam.workloadIdentityPoolProviders.create")
        pool = await self._pool(fed.pool_name(found.number, pool_id))
        fed.check_id(provider_id, "workload identity pool provider", "workloadIdentityPoolProviderId")
        name = fed.provider_name(pool.name, str(provider_id))
        audit.note(resource=name)
        if pool.deleted_at is not None:
            raise FailedPrecondition(f"The workload identity pool {pool.name} is deleted.")
        if not any(kind in body for kind in ("oidc", "x509", *NOT_SERVED_KINDS)):
            raise InvalidArgument("A provider needs oidc or x509 settings.", field="workloadIdentityPoolProvider.oidc")
        kind = "x509" if "x509" in body and "oidc" not in body else "oidc"
        fields = self._provider_fields(body, set(PROVIDER_MASK.values()), kind)
        provider = WorkloadProvider(name, pool.name, created_at=self.core.now(), **fields)
        try:
            await self.core.store.create_workload_provider(provider)
        except Conflict:
            raise AlreadyExists("Requested entity already exists", resource_name=name) from None
        self._trust_changed(provider)
        return _operation(name, PROVIDER_TYPE, provider_json(provider))

    async def get_provider(self, caller: Caller, project: str, pool_id: str, provider_id: str) -> dict[str, Any]:
        found = await self._project(caller, project, "iam.workloadIdentityPoolProviders.get")
        return provider_json(await self._provider(fed.provider_name(fed.pool_name(found.number, pool_id),
                                                                    provider_id)))

    async def list_providers(self, caller: Caller, project: str, pool_id: str, *, show_deleted: bool,
                             page_size: str | None, page_token: str | None) -> dict[str, Any]:
        found = await self._project(caller, project, "iam.workloadIdentityPoolProviders.list")
        pool = await self._pool(fed.pool_name(found.number, pool_id))
        return self._page_of("workloadIdentityPoolProviders", await self.core.store.list_workload_providers(pool.name),
                             provider_json, show_deleted=show_deleted, page_size=page_size, page_token=page_token)

    def _page_of(self, field: str, records: Sequence[Any], render: Callable[[Any], dict[str, Any]], *,
                 show_deleted: bool, page_size: str | None, page_token: str | None) -> dict[str, Any]:
        """One page of pools or providers (in name order), deleted ones with ``show_deleted`` while they may still
        be undeleted; the next page starts after the last name shown."""
        size, after = _page(page_size, page_token)
        listed = [r for r in records if r.name > after and not self._deleted_for_good(r.deleted_at)
                  and (show_deleted or r.deleted_at is None)]
        out: dict[str, Any] = {field: [render(r) for r in listed[:size]]}
        if len(listed) > size:
            out["nextPageToken"] = listed[size - 1].name
        return out

    async def _change_provider(self, caller: Caller, project: str, pool_id: str, provider_id: str,
                               permission: str) -> WorkloadProvider:
        found = await self._project(caller, project, permission)
        name = fed.provider_name(fed.pool_name(found.number, pool_id), provider_id)
        audit.note(resource=name)
        return await self._provider(name)

    async def patch_provider(self, caller: Caller, project: str, pool_id: str, provider_id: str,
                             body: Mapping[str, Any], update_mask: str | None) -> dict[str, Any]:
        provider = await self._change_provider(caller, project, pool_id, provider_id,
                                               "iam.workloadIdentityPoolProviders.update")
        if provider.deleted_at is not None:
            raise FailedPrecondition(f"The provider {provider.name} is deleted; undelete it first.")
        columns = _mask(update_mask, PROVIDER_MASK)
        kind = "x509" if provider.x509 else "oidc"
        if "oidc" in columns and kind == "oidc":  # a path inside oidc changes that field; the rest of the block stays
            body = {**body, "oidc": {**provider.oidc, **(body.get("oidc") or {})}}
        updated = await self.core.store.update_workload_provider(provider.name,
                                                                 **self._provider_fields(body, columns, kind))
        assert updated is not None
        self._trust_changed(updated)
        return _operation(provider.name, PROVIDER_TYPE, provider_json(updated))

    async def delete_provider(self, caller: Caller, project: str, pool_id: str, provider_id: str
                              ) -> dict[str, Any]:
        provider = await self._change_provider(caller, project, pool_id, provider_id,
                                               "iam.workloadIdentityPoolProviders.delete")
        if provider.deleted_at is not None:
            raise FailedPrecondition(f"The provider {provider.name} is already deleted.")
        updated = await self.core.store.update_workload_provider(provider.name, deleted_at=self.core.now())
        assert updated is not None
        return _operation(provider.name, PROVIDER_TYPE, provider_json(updated))

    async def undelete_provider(self, caller: Caller, project: str, pool_id: str, provider_id: str
                                ) -> dict[str, Any]:
        provider = await self._change_provider(caller, project, pool_id, provider_id,
                                               "iam.workloadIdentityPoolProviders.undelete")
        if provider.deleted_at is None:
            raise FailedPrecondition(f"The provider {provider.name} is not deleted.")
        updated = await self.core.store.update_workload_provider(provider.name, deleted_at=None)
        assert updated is not None
        return _operation(provider.name, PROVIDER_TYPE, provider_json(updated))

    # ------------------------------------------------------------ token introspection

    async def introspect(self, token: str | None) -> dict[str, Any]:
        """STS ``IntrospectToken`` (RFC 7662), which gcloud calls to name an external account it signs in with:
        an access token keyless minted and still honours is ``active``, with ``username`` (and ``sub``) its
        principal: a federated token's ``principal://`` identifier, an account's or user's email. Anything else
        is ``{"active": false}``. It tells the token's holder only what the token already lets it learn
        (tokeninfo answers the same), so client authentication, which gcloud sends, is not required."""
        if not token:
            raise OAuthError("invalid_request", "Missing required parameter: token.")
        try:
            caller = await authenticate_access_token(self.core, token)
        except Unauthenticated:
            return {"active": False}
        claims = self.core.minter.parse(token)
        assert claims is not None
        out: dict[str, Any] = {"active": True, "scope": " ".join(caller.scopes), "exp": int(claims.expires_at),
                               "iat": int(claims.issued_at), "sub": caller.principal.email,
                               "username": caller.principal.email}
        if claims.client_id:
            out["client_id"] = claims.client_id
        return out

    # ------------------------------------------------------------ the token exchange

    async def exchange(self, raw_form: Mapping[str, str], *, client_certificate: bytes | None = None
                       ) -> dict[str, Any]:
        """STS ``ExchangeToken``: an external OIDC token, or (``subject_token_type`` mtls) the client certificate
        presented on the TLS connection (``client_certificate``, DER, from keyless's mTLS listener only), for a
        federated access token. Every refusal is an ``OAuthError`` in Google's STS wording; the request's audit
        entry names the provider and, once the credential is verified, the federated principal and its
        attributes."""
        form = {_CAMEL.get(key, key): value for key, value in raw_form.items()}
        audience = form.get("audience") or ""
        audit.note_request(grant_type=form.get("grant_type"), subject_token_type=form.get("subject_token_type"),
                           audience=audience[:300], scope=form.get("scope"))
        if form.get("grant_type") != TOKEN_EXCHANGE:
            raise OAuthError("unsupported_grant_type",
                             f"Unsupported grant type: {str(form.get('grant_type'))[:100]}. Use {TOKEN_EXCHANGE}.")
        requested = form.get("requested_token_type")
        if requested != ACCESS_TOKEN_TYPE:
            raise OAuthError("invalid_request", f"Invalid requested_token_type: {str(requested)[:100]}. Only "
                             f"{ACCESS_TOKEN_TYPE} is supported.")
        token_type = form.get("subject_token_type")
        if token_type in NOT_SERVED_TYPES:
            raise OAuthError("invalid_request", f"The subject_token_type {token_type} is not supported by keyless: it "
                             "exchanges OIDC tokens (urn:ietf:params:oauth:token-type:jwt or id_token) and client "
                             f"certificates ({MTLS_TYPE}).")
        if token_type not in JWT_TYPES and token_type != MTLS_TYPE:
            raise OAuthError("invalid_request", f"Invalid subject_token_type: {str(token_type)[:100]}.")
        subject_token = form.get("subject_token") or ""
        if not subject_token:
            raise OAuthError("invalid_request", "Missing required parameter: subject_token.")
        limit = MAX_MTLS_SUBJECT_TOKEN if token_type == MTLS_TYPE else MAX_SUBJECT_TOKEN
        if len(subject_token) > limit:
            raise OAuthError("invalid_request", f"The subject_token is larger than {limit} bytes.")
        provider_name = fed.provider_of_audience(audience)
        if provider_name is None:
            raise OAuthError("invalid_request", "Invalid value for \"audience\". The audience must be the full "
                             "resource name of a workload identity pool provider, "
                             "//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/"
                             "providers/PROVIDER.")
        audit.note(resource=provider_name)
        provider = await self.core.store.get_workload_provider(provider_name)
        pool = await self.core.store.get_workload_pool(fed.pool_of(provider_name))
        if (provider is None or pool is None or provider.deleted_at is not None or pool.deleted_at is not None
                or provider.disabled or pool.disabled):
            raise OAuthError("invalid_target", INVALID_TARGET)
        if (token_type == MTLS_TYPE) != bool(provider.x509):
            raise OAuthError("invalid_request", f"The subject_token_type {token_type} does not match the provider: "
                             f"an {'X.509' if provider.x509 else 'OIDC'} provider exchanges "
                             f"{MTLS_TYPE if provider.x509 else 'OIDC tokens (jwt or id_token)'}.")
        if provider.x509:
            claims = self._verify_certificate(provider, subject_token, client_certificate)
        else:
            claims = await self._verify(provider, subject_token)
        identity = fed.map_assertion(provider.name, provider.attribute_mapping, claims)
        audit.note(principal=identity.member, federatedIdentity=identity.to_json())
        fed.check_condition(provider.attribute_condition, identity, claims)
        scopes = tuple((form.get("scope") or "").split()) or (CLOUD_PLATFORM,)
        recorded = {k: v for k, v in identity.to_json().items() if k != "provider"}
        minted = minting.access_token(self.core, "federated", provider.name, scopes, FEDERATED_TOKEN_LIFETIME,
                                      federated=recorded)
        return {"access_token": minted.token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                "expires_in": FEDERATED_TOKEN_LIFETIME}

    def _verify_certificate(self, provider: WorkloadProvider, token: str, presented: bytes | None
                            ) -> dict[str, Any]:
        """The assertion of the client certificate presented over mutual TLS (the private key's proof is the TLS
        handshake's): the subject token's first certificate must be it, and its chain (the provider's intermediate
        CAs and those the token adds) must reach one of the provider's trust anchors at keyless's time."""
        if presented is None:
            raise OAuthError("invalid_request", NO_CLIENT_CERTIFICATE)
        try:
            chain = x509_trust.parse_subject_token(token)
            leaf = x509.load_der_x509_certificate(presented)
            if chain[0] != leaf:
                raise x509_trust.ChainRefused("The subject_token's first certificate is not the client certificate "
                                              "presented on the TLS connection.")
            x509_trust.verify_client_chain(leaf, chain[1:], provider.x509, self.core.now())
        except x509_trust.ChainRefused as exc:
            raise OAuthError("invalid_grant", str(exc)) from None
        except ValueError:
            raise OAuthError("invalid_grant", "The client certificate cannot be read.") from None
        return x509_trust.assertion_of(leaf)

    async def _verify(self, provider: WorkloadProvider, token: str) -> dict[str, Any]:
        """The claims of an external token the provider accepts: signed by a key of its JWKS (its ``jwksJson``, or
        the issuer's discovered one) with the key's pinned algorithm, from its issuer, for one of its audiences,
        within its times."""
        oidc = provider.oidc
        try:
            header, _ = unverified_parts(token)
            jwks = oidc.get("jwksJson")
            if jwks:
                keys = _issuer_keys(str(jwks))
            else:
                kid = header.get("kid")
                keys = await self.issuer_keys.keys(str(oidc.get("issuerUri")), kid if isinstance(kid, str) else None)
            claims = verify_external(token, header, keys, now=self.core.now(), leeway=self.core.settings.clock_skew)
        except (MalformedJwt, InvalidArgument):
            raise OAuthError("invalid_grant", "Unable to parse the ID Token.") from None
        except UnacceptedAlgorithm as exc:
            raise OAuthError("invalid_grant", f"The ID Token's {exc.message}.") from None
        except BadSignature:
            raise OAuthError("invalid_grant", "Invalid ID Token signature: no key of the provider's JWKS verifies "
                             "it.") from None
        except ExpiredJwt:
            raise OAuthError("invalid_grant", "The ID Token has expired.") from None
        except PrematureJwt:
            raise OAuthError("invalid_grant", "The ID Token was issued in the future (iat or nbf is still to "
                             "come).") from None
        except (JwtTimeError, JwtError) as exc:
            raise OAuthError("invalid_grant", f"Invalid ID Token: {exc.message[:200]}.") from None
        iat, exp = claims["iat"], claims["exp"]
        if exp - iat > MAX_TOKEN_SPAN:
            raise OAuthError("invalid_grant", "The ID Token's lifetime (exp - iat) exceeds 48 hours.")
        issuer = oidc.get("issuerUri")
        if claims.get("iss") != issuer:
            raise OAuthError("invalid_grant", f"The issuer in ID Token {str(claims.get('iss'))[:200]} does not match "
                             f"the expected ISSUER {issuer}.")
        accepted = oidc.get("allowedAudiences") or [f"//{fed.IAM_HOST}/{provider.name}",
                                                     f"https://{fed.IAM_HOST}/{provider.name}"]
        aud = claims.get("aud")
        given = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in accepted for a in given):
            raise OAuthError("invalid_grant", f"The audience in ID Token {str(aud)[:200]} does not match the "
                             "expected audience.")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise OAuthError("invalid_grant", "The ID Token has no sub claim.")
        return claims
