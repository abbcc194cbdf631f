"""IAM v1: service accounts and their keys (create, read, update, delete, disable, enable, undelete)."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.crypto.keys import load_certificate
from keyless.domain.names import (
    AccountRef,
    KeyRef,
    new_key_id,
    new_unique_id,
    service_account_email,
    validate_account_id,
)
from keyless.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MalformedData,
    NotFound,
    PermissionDenied,
)
from keyless.service import audit, grants
from keyless.service.admin_requests import (
    AccountKey,
    AccountKeys,
    CreatedKey,
    CreateKeyRequest,
    CreateServiceAccountRequest,
    ListKeysRequest,
    ListServiceAccountsRequest,
    PatchServiceAccountRequest,
    ServiceAccountPage,
    UploadKeyRequest,
)
from keyless.service.core import Caller, Core, account_condition_name, in_named_project
from keyless.service.keyring import SYSTEM_MANAGED, USER_MANAGED
from keyless.service.orgpolicies import key_lifetime_limit, require_key_creation_allowed, require_key_upload_allowed
from keyless.storage.base import Conflict, KeyRecord, ServiceAccount

UNDELETE_WINDOW = 30 * 86400
UNDELETE = "iam.serviceAccounts.undelete"
MAX_USER_MANAGED_KEYS = 10
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_DISPLAY_NAME = 100  # bytes of UTF-8
MAX_DESCRIPTION = 256
_PAGE_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
# What an upload is told of its publicKeyData: the adapters refuse what is not base64 with the second message too.
PUBLIC_KEY_DATA_REQUIRED = "publicKeyData is required: the base64 of a PEM X.509 certificate."
PUBLIC_KEY_DATA_INVALID = ("publicKeyData is not a base64-encoded PEM X.509 certificate of an RSA key of at least "
                           "2048 bits.")


def _limited(value: str, limit: int, wire: str) -> str:
    if len(value.encode()) > limit:
        raise InvalidArgument(f"{wire} must be at most {limit} bytes.", field=wire)
    return value


class Accounts:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _project(self, project: str) -> str:
        found = await self.core.store.get_project(project)
        if found is None:
            raise NotFound(f"Project '{project}' not found or permission denied.")
        return found.project_id

    async def lookup(self, caller: Caller, ref: AccountRef, permission: str) -> ServiceAccount:
        """Resolve ``projects/{p|-}/serviceAccounts/{email|id}`` and check ``permission`` on it.

        What a caller without the permission learns (decided after Google, whose denial reads "or it may not
        exist"): nothing. For an account that exists, and for one that does not (or not in the project named),
        it gets the same 403 ``Permission '<permission>' denied on resource (or it may not exist).`` whose
        ErrorInfo names the permission and the resource as the caller wrote it, never the account's email or
        project. A caller who may learn which accounts the project named holds (it holds ``permission``, or
        ``iam.serviceAccounts.get`` or ``.list``, on that project) is told an account is missing: 404, as
        Google answers principals with project-level access; so is any caller naming a project that does not
        exist. Through the ``-`` wildcard no project is named, so a missing account is 403 for every caller, as
        Google documents ("the response contains an HTTP 403 Forbidden error instead of a 404"). The rule is
        ``Core.missing_account``."""
        account = await self._find(ref)
        if account is None:
            answer = await self.core.missing_account(caller, ref, permission)
            await self.core.explain_missing_account(caller.principal.member, ref, permission)
            raise answer
        audit.note(resource=account_condition_name(account))
        await self.core.require_on_account(caller, permission, account, ref.name)
        return account

    async def find(self, caller: Caller, ref: AccountRef) -> ServiceAccount | None:
        """The account ``ref`` names, without a permission check (testIamPermissions). None when it does
        not exist and the caller may not be told so: it then tests as an account the caller holds nothing on.
        NotFound when the caller may be told (see ``lookup``)."""
        account = await self._find(ref)
        if account is None:
            answer = await self.core.missing_account(caller, ref, "iam.serviceAccounts.get")
            if isinstance(answer, NotFound):
                raise answer
        return account

    async def _find(self, ref: AccountRef) -> ServiceAccount | None:
        account = await self.core.resolve_account(ref)
        return account if account is not None and await in_named_project(self.core, ref, account) else None

    async def create(self, caller: Caller, request: CreateServiceAccountRequest) -> ServiceAccount:
        project_id = await self._project(request.project)
        await self.core.require_on_project(caller, "iam.serviceAccounts.create", project_id)
        account_id = validate_account_id(request.account_id)
        display_name = _limited(request.display_name, MAX_DISPLAY_NAME, "service_account.display_name")
        description = _limited(request.description, MAX_DESCRIPTION, "service_account.description")
        email = service_account_email(account_id, project_id)
        account = ServiceAccount(unique_id=new_unique_id(), project_id=project_id, account_id=account_id, email=email,
                                 display_name=display_name, description=description, created_at=self.core.now())
        try:
            await self.core.store.create_service_account(account)
        except Conflict:
            raise AlreadyExists(f"Service account {account_id} already exists within project projects/{project_id}.",
                                resource_name=f"projects/{project_id}/serviceAccounts/{email}") from None
        audit.note(resource=account_condition_name(account))
        return account

    async def list_accounts(self, caller: Caller, request: ListServiceAccountsRequest) -> ServiceAccountPage:
        project_id = await self._project(request.project)
        await self.core.require_on_project(caller, "iam.serviceAccounts.list", project_id)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = ""
        page_token = request.page_token
        if page_token:
            try:
                if not _PAGE_TOKEN_RE.match(page_token):
                    raise MalformedData("not base64url")
                after = base64.urlsafe_b64decode(page_token.encode()).decode()
                if "@" not in after:
                    raise MalformedData("not a page token of this list")
            except ValueError:
                raise InvalidArgument("Invalid page token.", field="page_token") from None
        accounts = await self.core.store.list_service_accounts(project_id, after_email=after, limit=size + 1)
        next_token = ""
        if len(accounts) > size:
            accounts = accounts[:size]
            next_token = base64.urlsafe_b64encode(accounts[-1].email.encode()).decode()
        return ServiceAccountPage(tuple(accounts), next_token)

    async def patch(self, caller: Caller, request: PatchServiceAccountRequest) -> ServiceAccount:
        account = await self.lookup(caller, request.account, "iam.serviceAccounts.update")
        if not request.update_mask:
            raise InvalidArgument("updateMask is required: displayName, description.", field="update_mask")
        fields = set(request.update_mask)
        bad = fields - {"displayName", "description", "display_name"}
        if bad:
            raise InvalidArgument(f"Field(s) {', '.join(sorted(bad))} cannot be updated; only displayName "
                                  "and description can.", field="update_mask")
        changes: dict[str, Any] = {}
        if fields & {"displayName", "display_name"}:
            changes["display_name"] = _limited(request.display_name, MAX_DISPLAY_NAME, "service_account.display_name")
        if "description" in fields:
            changes["description"] = _limited(request.description, MAX_DESCRIPTION, "service_account.description")
        updated = await self.core.store.update_service_account(account.unique_id, **changes)
        assert updated is not None
        return updated

    async def delete(self, caller: Caller, ref: AccountRef) -> None:
        account = await self.lookup(caller, ref, "iam.serviceAccounts.delete")
        now = self.core.now()
        await self.core.store.update_service_account(account.unique_id, deleted_at=now, tokens_valid_after=now)
        # Bindings, group memberships, org-policy values and the attachment name it as deleted, as Google
        # rewrites bindings: an account re-created with this email inherits none of them.
        await grants.account_deleted(self.core, account)

    async def undelete(self, caller: Caller, ref: AccountRef) -> ServiceAccount:
        if not ref.is_unique_id:
            raise InvalidArgument("Undelete needs the account's unique id: projects/-/serviceAccounts/UNIQUE_ID.",
                                  field="name")
        # Deleted accounts too (by unique id); answered as lookup answers (a caller without the permission on
        # the account's project learns nothing of it).
        account = await self.core.store.get_service_account(ref.account)
        if account is None or not await in_named_project(self.core, ref, account):
            answer = await self.core.missing_account(caller, ref, UNDELETE)
            await self.core.explain_missing_account(caller.principal.member, ref, UNDELETE)
            raise answer
        audit.note(resource=account_condition_name(account))
        identities = await self.core.identities(caller.principal)
        if not await self.core.allowed_on_project(identities, UNDELETE, account.project_id):
            await self.core.explain_on_project(caller.principal.member, identities, UNDELETE, account.project_id)
            raise PermissionDenied.iam(UNDELETE, ref.name)
        if account.deleted_at is None:
            raise FailedPrecondition(f"Service account {account.email} is not deleted.")
        if self.core.now() - account.deleted_at > UNDELETE_WINDOW:
            raise NotFound(f"Service account {account.unique_id} was deleted more than 30 days ago.")
        try:
            restored = await self.core.store.update_service_account(account.unique_id, deleted_at=None)
        except Conflict:
            raise FailedPrecondition(f"An account with the email {account.email} exists again; "
                                     "delete it before undeleting this one.") from None
        assert restored is not None
        # Bindings, group memberships, org-policy values and the attachment follow the account back.
        await grants.account_undeleted(self.core, restored)
        return restored

    async def set_disabled(self, caller: Caller, ref: AccountRef, disabled: bool) -> None:
        permission = "iam.serviceAccounts.disable" if disabled else "iam.serviceAccounts.enable"
        account = await self.lookup(caller, ref, permission)
        await self.core.store.update_service_account(account.unique_id, disabled=disabled)

    # keys
    async def list_keys(self, caller: Caller, request: ListKeysRequest) -> AccountKeys:
        account = await self.lookup(caller, request.account, "iam.serviceAccountKeys.list")
        wanted = set(request.key_types) or {USER_MANAGED, SYSTEM_MANAGED}
        bad = wanted - {USER_MANAGED, SYSTEM_MANAGED, "KEY_TYPE_UNSPECIFIED"}
        if bad:
            raise InvalidArgument(f"Invalid keyTypes value(s): {', '.join(sorted(bad))}.", field="key_types")
        if "KEY_TYPE_UNSPECIFIED" in wanted:
            wanted = {USER_MANAGED, SYSTEM_MANAGED}
        now = self.core.now()
        keys = tuple(k for k in await self.core.store.list_keys(account.unique_id)
                     if k.key_type in wanted and (k.key_type == USER_MANAGED or self.core.keyring.is_published(k, now)))
        return AccountKeys(account, keys)

    async def get_key(self, caller: Caller, ref: KeyRef, permission: str = "iam.serviceAccountKeys.get"
                      ) -> AccountKey:
        account = await self.lookup(caller, ref.account, permission)
        audit.note(resource=f"{account_condition_name(account)}/keys/{ref.key_id}")
        key = await self.core.store.get_key(ref.key_id)
        if key is None or key.owner != account.unique_id:
            raise NotFound(f"Service account key {ref.name} does not exist.")
        return AccountKey(account, key)

    async def create_key(self, caller: Caller, request: CreateKeyRequest) -> CreatedKey:
        account = await self.lookup(caller, request.account, "iam.serviceAccountKeys.create")
        key_type = request.private_key_type or "TYPE_GOOGLE_CREDENTIALS_FILE"
        if key_type != "TYPE_GOOGLE_CREDENTIALS_FILE":
            raise InvalidArgument(f"privateKeyType {key_type} is not supported; use TYPE_GOOGLE_CREDENTIALS_FILE.",
                                  field="private_key_type")
        algorithm = request.key_algorithm or "KEY_ALG_RSA_2048"
        if algorithm not in ("KEY_ALG_RSA_2048", "KEY_ALG_UNSPECIFIED"):
            raise InvalidArgument(f"keyAlgorithm {algorithm} is not supported; use KEY_ALG_RSA_2048.",
                                  field="key_algorithm")
        await require_key_creation_allowed(self.core, account)
        await self._check_key_quota(account)
        created = await self.core.keyring.create_user_managed(account.unique_id, account.email,
                                                              MAX_USER_MANAGED_KEYS,
                                                              lifetime=await key_lifetime_limit(self.core, account))
        if created is None:
            raise _key_quota_reached(account)
        record, pem = created
        return CreatedKey(account, record, pem)

    async def _check_key_quota(self, account: ServiceAccount) -> None:
        """Refuse early, before a key pair is generated, when the account is at its quota. Only an early answer:
        concurrent creates all pass it, and the store's atomic count-and-insert is what holds the quota."""
        existing = [k for k in await self.core.store.list_keys(account.unique_id) if k.key_type == USER_MANAGED]
        if len(existing) >= MAX_USER_MANAGED_KEYS:
            raise _key_quota_reached(account)

    async def upload_key(self, caller: Caller, request: UploadKeyRequest) -> AccountKey:
        account = await self.lookup(caller, request.account, "iam.serviceAccountKeys.create")
        await require_key_upload_allowed(self.core, account)
        pem = request.public_key_data
        if not pem:
            raise InvalidArgument(PUBLIC_KEY_DATA_REQUIRED, field="public_key_data")
        try:
            cert = load_certificate(pem)
            public = cert.public_key()
            if not isinstance(public, rsa.RSAPublicKey) or public.key_size < 2048:
                raise MalformedData("not RSA-2048")
        except Exception:
            raise InvalidArgument(PUBLIC_KEY_DATA_INVALID, field="public_key_data") from None
        await self._check_key_quota(account)
        now = self.core.now()
        valid_before = cert.not_valid_after_utc.timestamp()
        lifetime = await key_lifetime_limit(self.core, account)
        if lifetime is not None:  # iam.serviceAccountKeyExpiryHours: the certificate may not outlive it
            valid_before = min(valid_before, now + lifetime)
        record = KeyRecord(key_id=new_key_id(), owner=account.unique_id, key_type=USER_MANAGED,
                           key_origin="USER_PROVIDED", certificate_pem=pem, private_key_enc=None,
                           valid_after=cert.not_valid_before_utc.timestamp(), valid_before=valid_before,
                           created_at=now)
        if not await self.core.store.create_key_within_quota(record, MAX_USER_MANAGED_KEYS):
            raise _key_quota_reached(account)
        return AccountKey(account, record)

    async def change_key(self, caller: Caller, ref: KeyRef, action: str) -> KeyRecord:
        permission = {"delete": "iam.serviceAccountKeys.delete", "disable": "iam.serviceAccountKeys.disable",
                      "enable": "iam.serviceAccountKeys.enable"}[action]
        key = (await self.get_key(caller, ref, permission)).key
        if key.key_type == SYSTEM_MANAGED and action == "delete":
            raise InvalidArgument("System-managed keys cannot be deleted.", field="name")
        if action == "delete":
            changed = await self.core.store.update_key(key.key_id, deleted_at=self.core.now())
            self.core.keyring.forget(key.key_id)
            return changed or replace(key, deleted_at=self.core.now())
        changed = await self.core.store.update_key(key.key_id, disabled=(action == "disable"))
        assert changed is not None
        return changed


def _key_quota_reached(account: ServiceAccount) -> FailedPrecondition:
    return FailedPrecondition(f"Precondition check failed: {account.email} already has "
                              f"{MAX_USER_MANAGED_KEYS} keys.")

