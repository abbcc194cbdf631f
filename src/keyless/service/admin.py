"""Installation state the owner manages: projects, users and their OAuth credentials, groups."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from keyless.clock import OffsetClock
from keyless.crypto.passwords import hash_password, password_problem
from keyless.domain.lifetimes import parse_duration, parse_timestamp
from keyless.domain.names import EMAIL_RE, new_project_number, validate_project_id
from keyless.domain.numbers import is_ascii_digits, parse_count
from keyless.domain.policy import Binding, Policy, validate_member
from keyless.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from keyless.service import audit, grants
from keyless.service.core import Caller, Core, account_condition_name, project_resource
from keyless.service.owner_requests import (
    AdvanceClockRequest,
    AttachToMetadataRequest,
    AuditLogRequest,
    AuditPage,
    CreateProjectRequest,
    CreateUserRequest,
    ListProjectsRequest,
    ProjectPage,
    SetGroupRequest,
    SetPasswordRequest,
    UserCredentials,
)
from keyless.service.policies import store_policy
from keyless.service.usage import enable_defaults
from keyless.storage.base import AuditQuery, Conflict, Project, User

ADMIN_PERMISSION = "keyless.admin"
# The owner's client secret and refresh token, encrypted with the master key: each start writes owner.json.
OWNER_CREDENTIAL_META = "owner_credential"
MAX_CLOCK_ADVANCE = 100 * 366 * 86400.0
MAX_CLOCK_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: timestamps must stay formattable
GROUP_MEMBER_KINDS = ("user:", "serviceAccount:", "deleted:user:", "deleted:serviceAccount:")
AUDIT_FILTER_KEYS = {
    "protoPayload.authenticationInfo.principalEmail": "principal", "caller": "principal",
    "protoPayload.resourceName": "resource", "protoPayload.methodName": "method", "timestamp": "since",
}


PROJECT_PAGE_SIZE = 500
# projects.list filter fields: keyless's projects are all ACTIVE, named by their id, and have no labels.
_PROJECT_FILTER_TERM = re.compile(r"^(lifecycleState|id|projectId|name|labels\.[\w-]+)[:=](\S+)$")


def _project_filter(text: object) -> Callable[[Project], bool]:
    """A ``projects.list`` filter: space-separated ``FIELD:VALUE`` (or ``=``) terms, all of which must match."""
    if text is None or text == "":
        return lambda project: True
    if not isinstance(text, str):
        raise InvalidArgument("filter must be a string.", field="filter")
    terms = [t for t in text.split() if t != "AND"]
    parsed = [_PROJECT_FILTER_TERM.match(t) for t in terms]
    if not all(parsed):
        raise InvalidArgument(f"Invalid filter '{text[:200]}': use lifecycleState, id, name or labels.KEY terms "
                              "(FIELD:VALUE), all of which must match.", field="filter")

    def matches(project: Project) -> bool:
        for match in parsed:
            assert match is not None
            field, value = match.group(1), match.group(2).strip('"')
            if field == "lifecycleState" and value != "ACTIVE":
                return False
            if field in ("id", "projectId", "name") and value != project.project_id:
                return False
            if field.startswith("labels."):
                return False
        return True

    return matches


def new_client_secret() -> str:
    return "KLSPX-" + secrets.token_urlsafe(24)


def new_refresh_token() -> str:
    return "1//kl" + secrets.token_urlsafe(40)


def secret_hash(value: str) -> str:
    # The secrets are 256-bit random strings, so an unsalted SHA-256 is enough to make a stolen
    # database useless for authentication.
    return hashlib.sha256(value.encode()).hexdigest()


def authorized_user_file(user: User, client_secret: str, refresh_token: str, token_uri: str,
                         project_id: str) -> dict[str, str]:
    """The ``authorized_user`` credentials file google-auth and gcloud read."""
    return {
        "type": "authorized_user",
        "client_id": user.client_id,
        "client_secret": client_secret,
        "refresh_token": refresh_token,
        "token_uri": token_uri,
        "quota_project_id": project_id,
        "account": user.email,
        "universe_domain": "googleapis.com",
    }


def _audit_order(order_by: object) -> bool:
    """Whether Cloud Logging's ``orderBy`` asks for the newest entries first."""
    words = str(order_by or "timestamp asc").lower().split()
    if words in (["timestamp"], ["timestamp", "asc"]):
        return False
    if words == ["timestamp", "desc"]:
        return True
    raise InvalidArgument('orderBy must be "timestamp asc" (the default) or "timestamp desc".', field="orderBy")


def _audit_page_token(seq: int, newest_first: bool) -> str:
    # A newest-first token is marked, so that it cannot be used to page the other way.
    return base64.urlsafe_b64encode(f"{'-' if newest_first else ''}{seq}".encode()).decode()


def _audit_page_position(page_token: object, newest_first: bool = False) -> int:
    """The sequence number a ``nextPageToken`` of the audit log carries (base64url of its ASCII digits, after a
    ``-`` in the newest-first order)."""
    try:
        text = base64.urlsafe_b64decode(str(page_token)).decode("ascii")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text to decode
        text = ""
    marked = text.startswith("-")
    digits = text[1:] if marked else text
    if marked != newest_first or not (len(digits) <= 18 and is_ascii_digits(digits)):
        raise InvalidArgument("Invalid pageToken.", field="pageToken")
    return int(digits)


def owner_delta(member: str) -> dict[str, Any]:
    """The audit entry's record of a roles/owner binding added (the shape of Cloud Audit Logs' policyDelta)."""
    return {"bindingDeltas": [{"action": "ADD", "role": "roles/owner", "member": member}]}


class Admin:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def require_admin(self, caller: Caller) -> None:
        await self.core.require_on_project(caller, ADMIN_PERMISSION, self.core.settings.default_project)

    async def query_audit(self, caller: Caller, request: AuditLogRequest) -> AuditPage:
        """A page of the audit log and the token of the next page (``""``: none). ``order_by`` is Cloud
        Logging's ``orderBy``: ``timestamp asc`` (the default) or ``timestamp desc``."""
        await self.require_admin(caller)
        query = await self._parse_audit_filter(request.filter or "")
        newest_first = _audit_order(request.order_by)
        size = min(parse_count(request.page_size, field="pageSize", wire="pageSize") or 100, 1000)
        page_token = request.page_token
        query = replace(query, newest_first=newest_first, limit=size + 1)
        if page_token:
            position = _audit_page_position(page_token, newest_first)
            query = replace(query, before_seq=position) if newest_first else replace(query, after_seq=position)
        entries = await self.core.store.query_audit(query)
        if len(entries) > size:
            entries = entries[:size]
            return AuditPage(tuple(entries), _audit_page_token(entries[-1].seq, newest_first))
        return AuditPage(tuple(entries))

    async def _parse_audit_filter(self, text: str) -> AuditQuery:
        """A small subset of the Cloud Logging filter language: terms joined by AND (or spaces)."""
        query = AuditQuery()
        for term in re.split(r"\s+AND\s+|\s+", text.strip(), flags=re.IGNORECASE):
            if not term:
                continue
            match = re.fullmatch(r'([\w.]+)\s*(>=|=|:)\s*"?([^"]*)"?', term)
            if not match:
                raise InvalidArgument(f"Invalid filter term '{term}'.", field="filter")
            key, op, value = match.groups()
            key = AUDIT_FILTER_KEYS.get(key, key)
            if key == "principal" and op != ">=":
                query = replace(query, principal=value)
            elif key == "resource" and op != ">=":
                query = replace(query, resource=value)
            elif key == "account" and op != ">=":
                account = await self.core.resolve_account(value)
                uid = account.unique_id if account else value
                query = replace(query, resource=f"projects/-/serviceAccounts/{uid}")
            elif key == "method" and op != ">=":
                query = replace(query, method=value)
            elif key == "since" and op in (">=", "="):
                try:
                    query = replace(query, since=parse_timestamp(value))
                except ValueError:
                    raise InvalidArgument(f"Invalid timestamp '{value}'.", field="filter") from None
            elif key == "severity" and op == ">=" and value.upper() == "ERROR":
                query = replace(query, denied=True)
            elif key == "denied" and op == "=" and value.lower() in ("true", "false"):
                query = replace(query, denied=value.lower() == "true")
            else:
                raise InvalidArgument(f"Unsupported filter term '{term}'.", field="filter")
        return query

    async def advance_clock(self, caller: Caller, request: AdvanceClockRequest) -> float:
        """Move the server's clock forward (only with ``--allow-time-travel``)."""
        await self.require_admin(caller)
        seconds = request.seconds
        clock = self.core.clock
        if not isinstance(clock, OffsetClock):
            raise FailedPrecondition("Time travel is off: start the server with --allow-time-travel.")
        if isinstance(seconds, str):
            seconds = parse_duration(seconds, field="seconds")
        if (not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= MAX_CLOCK_ADVANCE
                or clock.now() + seconds >= MAX_CLOCK_TIME):
            raise InvalidArgument("seconds must be a positive number of at most 100 years, or a duration such as "
                                  "\"3600s\".",
                                  field="seconds")
        clock.advance(float(seconds))
        return clock.now()

    async def attach_to_metadata(self, caller: Caller, request: AttachToMetadataRequest) -> None:
        """Make the request's account the one the metadata server serves (to whoever can reach it)."""
        await self.require_admin(caller)
        email = request.service_account
        account = await self.core.resolve_account(email) if email is not None else None
        if account is None:
            raise InvalidArgument(f"Service account {email} does not exist.", field="serviceAccount")
        audit.note(resource=account_condition_name(account))
        await self.core.store.set_meta(grants.ATTACHED_META, account.email)

    async def detach_from_metadata(self, caller: Caller) -> None:
        """Serve no account from the metadata server (clients there then find no credentials)."""
        await self.require_admin(caller)
        previous = await self.core.store.get_meta(grants.ATTACHED_META)
        if previous:
            account = await self.core.resolve_account(previous)
            if account is not None:
                audit.note(resource=account_condition_name(account))
        await self.core.store.set_meta(grants.ATTACHED_META, "")

    async def ensure_project(self, project_id: str) -> Project:
        found = await self.core.store.get_project(project_id)
        if found is not None:
            return found
        validate_project_id(project_id)
        project = Project(project_id, new_project_number(), self.core.now())
        try:
            await self.core.store.create_project(project)
        except Conflict:
            existing = await self.core.store.get_project(project_id)
            assert existing is not None
            return existing
        await enable_defaults(self.core, project.project_id)
        return project

    async def create_project(self, caller: Caller, request: CreateProjectRequest) -> Project:
        await self.require_admin(caller)
        project_id = request.project_id
        if project_id is None:
            raise InvalidArgument("projectId is required.", field="projectId")
        validate_project_id(project_id)
        if await self.core.store.get_project(project_id) is not None:
            raise AlreadyExists(f"Project {project_id} already exists.", resource_name=f"projects/{project_id}")
        project = await self.ensure_project(project_id)
        # The creator owns what it creates, as on Google.
        await self.grant(project_resource(project.project_id), "roles/owner", caller.principal.member)
        audit.note(policyDelta=owner_delta(caller.principal.member))
        return project

    async def get_project(self, caller: Caller, project: str) -> Project:
        """Resource Manager ``projects.get`` of a project id or number: a project that does not exist is refused as
        one the caller may not see (403), as Resource Manager answers. (REST's route, ``http/projects.py``, does
        the same inline.)"""
        found = await self.core.store.get_project(project)
        if found is None:
            raise PermissionDenied("The caller does not have permission")
        await self.core.require_on_project(caller, "resourcemanager.projects.get", found.project_id)
        return found

    async def list_projects(self, caller: Caller, request: ListProjectsRequest) -> ProjectPage:
        """Resource Manager v1 ``projects.list``: by project id, the projects on which the caller holds
        ``resourcemanager.projects.get`` and that ``filter_text`` matches; a page of them and the next page's token."""
        matches = _project_filter(request.filter)
        page_token = request.page_token
        size = min(parse_count(request.page_size, field="page_size", wire="pageSize") or PROJECT_PAGE_SIZE,
                   PROJECT_PAGE_SIZE)
        after = ""
        if page_token:
            try:
                after = base64.urlsafe_b64decode(str(page_token).encode()).decode()
                validate_project_id(after)
            except (ValueError, InvalidArgument):  # binascii.Error and UnicodeDecodeError are ValueErrors
                raise InvalidArgument("Invalid page token.", field="page_token") from None
        identities = await self.core.identities(caller.principal)
        visible = []
        for project in sorted(await self.core.store.list_projects(), key=lambda p: p.project_id):
            if project.project_id > after and matches(project) and await self.core.allowed_on_project(
                    identities, "resourcemanager.projects.get", project.project_id):
                visible.append(project)
                if len(visible) > size:
                    break
        if len(visible) > size:
            visible = visible[:size]
            return ProjectPage(tuple(visible), base64.urlsafe_b64encode(visible[-1].project_id.encode()).decode())
        return ProjectPage(tuple(visible))

    async def grant(self, resource: str, role: str, member: str) -> None:
        policy = await self.core.load_policy(resource)
        if member in policy.members_of(role):
            return
        bindings = [b for b in policy.bindings if not (b.role == role and b.condition is None)]
        bindings.append(Binding(role, policy.members_of(role) | {member}))
        await store_policy(self.core, resource, Policy(policy.version, tuple(bindings), policy.etag),
                           expected_etag=None)

    async def create_user(self, email: str) -> UserCredentials:
        """Register a user; returns it with its client secret and refresh token (shown only now)."""
        if not isinstance(email, str) or not EMAIL_RE.match(email):
            raise InvalidArgument(f"Invalid email '{email}'.", field="email")
        email = email.lower()
        if await self.core.store.find_user(email) is not None:
            raise AlreadyExists(f"User {email} already exists.", resource_name=f"users/{email}")
        client_secret, refresh_token = new_client_secret(), new_refresh_token()
        user = User(
            user_id=str(secrets.randbelow(9 * 10**20) + 10**20),
            email=email,
            client_id=f"{secrets.randbelow(9 * 10**11) + 10**11}-{secrets.token_hex(8)}.apps.keyless.local",
            client_secret_hash=secret_hash(client_secret),
            refresh_token_hash=secret_hash(refresh_token),
            created_at=self.core.now(),
        )
        try:
            await self.core.store.create_user(user)
        except Conflict:
            raise AlreadyExists(f"User {email} already exists.", resource_name=f"users/{email}") from None
        return UserCredentials(user, client_secret, refresh_token)

    async def add_user(self, caller: Caller, request: CreateUserRequest) -> UserCredentials:
        await self.require_admin(caller)
        if request.email is None:
            raise InvalidArgument("email is required.", field="email")
        return await self.create_user(request.email)

    async def list_users(self, caller: Caller) -> list[User]:
        await self.require_admin(caller)
        return await self.core.store.list_users()

    async def get_user(self, caller: Caller, email: str) -> User:
        await self.require_admin(caller)
        user = await self.core.store.find_user(email)
        if user is None:
            raise NotFound(f"User {email} does not exist.")
        return user

    def _is_owner(self, user: User) -> bool:
        return user.email == self.core.settings.owner_email.lower()

    def _keep_owner(self, user: User, change: str) -> None:
        # The installation would lose its way in (bootstrap would not bring the owner back).
        if self._is_owner(user):
            raise FailedPrecondition(f"The owner {user.email} cannot be {change}; reset its secret instead.")

    async def set_user_disabled(self, caller: Caller, email: str, disabled: bool) -> User:
        """A disabled user gets no token, and the access tokens it holds are refused, until it is enabled."""
        user = await self.get_user(caller, email)
        if disabled:
            self._keep_owner(user, "disabled")
        updated = await self.core.store.update_user(user.user_id, disabled=disabled)
        if updated is None:
            raise NotFound(f"User {email} does not exist.")
        return updated

    async def delete_user(self, caller: Caller, email: str) -> None:
        user = await self.get_user(caller, email)
        self._keep_owner(user, "deleted")
        if not await self.core.store.delete_user(user.user_id):
            raise NotFound(f"User {email} does not exist.")
        # Its grants name it as deleted, as Google does: a user added later with this email inherits none.
        member = f"user:{user.email}"
        await grants.rewrite_member(self.core, member, grants.deleted_member(member, user.user_id))

    async def reset_user_secret(self, caller: Caller, email: str) -> UserCredentials:
        user = await self.get_user(caller, email)
        if not self._is_owner(user):
            return await self.renew_credentials(user)
        # The owner's hashes and its stored copy change together, not while a replica bootstraps.
        async with self.core.store.lock("bootstrap"):
            return await self.renew_credentials(user)

    async def renew_credentials(self, user: User) -> UserCredentials:
        """A new client secret and refresh token for ``user``: the old ones stop working, and so do the access
        tokens minted from the old refresh token, and every refresh token the user got by signing in (gcloud
        auth login) with the access tokens minted from those. The owner's stored copy (owner.json's source)
        follows."""
        client_secret, refresh_token = new_client_secret(), new_refresh_token()
        updated = await self.core.store.update_user(user.user_id, client_secret_hash=secret_hash(client_secret),
                                                    refresh_token_hash=secret_hash(refresh_token))
        if updated is None:
            raise NotFound(f"User {user.email} does not exist.")
        await self.core.store.delete_sign_in_grants(user.user_id)
        if self._is_owner(updated):
            await self.core.store.set_meta(OWNER_CREDENTIAL_META, self.seal_owner_credential(client_secret,
                                                                                             refresh_token))
        return UserCredentials(updated, client_secret, refresh_token)

    def seal_owner_credential(self, client_secret: str, refresh_token: str) -> str:
        """The owner's credentials as stored in the database (encrypted with the master key)."""
        return self.core.master.encrypt(json.dumps([client_secret, refresh_token]).encode(),
                                        context=OWNER_CREDENTIAL_META).hex()

    def open_owner_credential(self, sealed: str) -> tuple[str, str]:
        client_secret, refresh_token = json.loads(self.core.master.decrypt(bytes.fromhex(sealed),
                                                                           context=OWNER_CREDENTIAL_META))
        return str(client_secret), str(refresh_token)

    async def set_password(self, caller: Caller, request: SetPasswordRequest) -> User:
        """Set the password the request's user proves on the sign-in page (gcloud auth login) when the server is
        reachable off loopback. Stored as a salted scrypt hash; the password itself is never stored or logged."""
        email, password = request.email, request.password
        user = await self.get_user(caller, email)
        if password is None:
            raise InvalidArgument("password is required.", field="password")
        problem = password_problem(password)
        if problem is not None:
            raise InvalidArgument(problem, field="password")
        hashed = await asyncio.to_thread(hash_password, password)  # tens of milliseconds: off the event loop
        updated = await self.core.store.update_user(user.user_id, password_hash=hashed)
        if updated is None:
            raise NotFound(f"User {email} does not exist.")
        return updated

    async def set_group(self, caller: Caller, request: SetGroupRequest) -> list[str]:
        await self.require_admin(caller)
        group, members = request.group, request.members
        if not EMAIL_RE.match(group):
            raise InvalidArgument(f"Invalid group email '{group}'.", field="group")
        if members is None:
            raise InvalidArgument("members must be a list of user: or serviceAccount: members.", field="members")
        checked = []
        for member in members:
            value = validate_member(member)
            # deleted: members are what deleting a principal leaves (a group read back can be written back).
            if not value.startswith(GROUP_MEMBER_KINDS):
                raise InvalidArgument(f"Group members must be user: or serviceAccount: members, not '{member}'.",
                                      field="members")
            checked.append(value)
        await self.core.store.set_group(group.lower(), sorted(set(checked)))
        return sorted(set(checked))

    async def get_group(self, caller: Caller, group: str) -> list[str]:
        await self.require_admin(caller)
        members = await self.core.store.get_group(group.lower())
        if members is None:
            raise NotFound(f"Group {group} does not exist.")
        return members

    async def list_groups(self, caller: Caller) -> dict[str, list[str]]:
        await self.require_admin(caller)
        return await self.core.store.list_groups()

    async def delete_group(self, caller: Caller, group: str) -> None:
        await self.require_admin(caller)
        if not await self.core.store.delete_group(group.lower()):
            raise NotFound(f"Group {group} does not exist.")
