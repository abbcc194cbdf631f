"""Service Usage v1: which APIs each project has enabled, and (``keyless serve --enforce-services``) refusing a
call whose consumer project has not enabled the API it calls.

Enabling and disabling take effect at once: every operation is answered done, with its response. An operation's
name carries what it did (the project's number, the verb, the services), so ``operations.get`` answers it again
from the current state without anything stored.

The consumer project of a request (whose enabled APIs decide) is, as on Google, the project its
``x-goog-user-project`` header names (the caller must hold ``serviceusage.services.use`` there), else the project
of a service-account caller. A user's request without the header is charged, on Google, to its OAuth client's
project; keyless's OAuth clients have none, so the project the request acts on stands in: the project in the path,
or for the IAM Credentials verbs the target account's project, checked once the caller is authorized for it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from keyless.domain.services import (
    CATALOGUE,
    DEFAULT_ENABLED,
    MAX_BATCH,
    MAX_ENABLED,
    NEVER_DISABLED,
    check_service_name,
    title_of,
)
from keyless.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceDisabled,
    UserProjectDenied,
)
from keyless.service import audit
from keyless.service.core import Caller, Core
from keyless.service.usage_requests import (
    BatchEnableRequest,
    DisableServiceRequest,
    ListServicesRequest,
    ServiceOperation,
    ServicePage,
    ServiceRequest,
    ServiceState,
)
from keyless.storage.base import Project

PERM_ENABLE = "serviceusage.services.enable"
PERM_DISABLE = "serviceusage.services.disable"
PERM_GET = "serviceusage.services.get"
PERM_LIST = "serviceusage.services.list"
PERM_USE = "serviceusage.services.use"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
OPERATION_PREFIX = "operations/acf.p2-"
FILTERS = {"": None, "state:ENABLED": True, "state:DISABLED": False}


async def enable_defaults(core: Core, project_id: str) -> None:
    """What a new project starts with: the APIs Google enables on a project made with gcloud or the console."""
    await core.store.enable_services(project_id, sorted(DEFAULT_ENABLED))


async def consumer_project(core: Core, caller: Caller, service: str, project_id: str | None) -> Project | None:
    """The project whose enabled APIs decide a request (see the module's docstring); None when there is none."""
    if caller.user_project is not None:
        project = await core.store.get_project(caller.user_project)
        # A project that does not exist gets the answer one the caller may not use gets.
        if project is None or not await core.allowed_on_project(await core.identities(caller.principal), PERM_USE,
                                                                project.project_id):
            raise UserProjectDenied(caller.user_project, service)
        return project
    if caller.principal.kind == "serviceAccount":
        account = await core.store.get_service_account(caller.principal_id)
        return await core.store.get_project(account.project_id) if account is not None else None
    return await core.store.get_project(project_id) if project_id and project_id != "-" else None


async def require_service(core: Core, caller: Caller, service: str, project_id: str | None) -> None:
    """With ``--enforce-services``: 403 SERVICE_DISABLED unless the request's consumer project has ``service``."""
    if not core.settings.enforce_services or service in NEVER_DISABLED:
        return
    consumer = await consumer_project(core, caller, service, project_id)
    if consumer is not None and service not in await core.store.list_enabled_services(consumer.project_id):
        raise ServiceDisabled(service, title_of(service), consumer.number)


def _encode(payload: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def _decode(text: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return None


class ServiceUsage:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _project(self, caller: Caller, project: str, permission: str) -> Project:
        """The project a name gives (id or number) where the caller holds ``permission``; a project that does not
        exist gets the same 403 as one the caller may not use."""
        found = await self.core.store.get_project(project)
        resource = f"projects/{project}"
        if found is None:
            audit.note_authorization(permission, resource, False)
            raise PermissionDenied.iam(permission, resource)
        await self.core.require_on_project(caller, permission, found.project_id)
        return found

    async def _enabled(self, project: Project) -> list[str]:
        return await self.core.store.list_enabled_services(project.project_id)

    async def _operation(self, project: Project, verb: str, services: list[str]) -> ServiceOperation:
        """A done operation for ``verb`` on ``services``, with the services' current state."""
        enabled = set(await self._enabled(project))
        name = f"{OPERATION_PREFIX}{project.number}-{_encode({'v': verb, 's': services})}"
        return ServiceOperation(name, project, verb, tuple(ServiceState(project, s, s in enabled) for s in services))

    async def _enable(self, project: Project, services: list[str]) -> None:
        enabled = set(await self._enabled(project))
        if len(enabled | set(services)) > MAX_ENABLED:
            raise FailedPrecondition(f"A project has at most {MAX_ENABLED} services enabled.")
        await self.core.store.enable_services(project.project_id, [s for s in services if s not in enabled])

    async def enable(self, caller: Caller, request: ServiceRequest) -> ServiceOperation:
        found = await self._project(caller, request.project, PERM_ENABLE)
        name = check_service_name(request.service)
        await self._enable(found, [name])
        return await self._operation(found, "enable", [name])

    async def batch_enable(self, caller: Caller, request: BatchEnableRequest) -> ServiceOperation:
        found = await self._project(caller, request.project, PERM_ENABLE)
        ids = request.service_ids
        if not ids:
            raise InvalidArgument("serviceIds must name at least one service.", field="serviceIds")
        if len(ids) > MAX_BATCH:
            raise InvalidArgument(f"At most {MAX_BATCH} services can be enabled at once.", field="serviceIds")
        names = list(dict.fromkeys(check_service_name(s, field="serviceIds") for s in ids))
        await self._enable(found, names)
        return await self._operation(found, "batchEnable", names)

    async def disable(self, caller: Caller, request: DisableServiceRequest) -> ServiceOperation:
        found = await self._project(caller, request.project, PERM_DISABLE)
        name = check_service_name(request.service)
        await self.core.store.disable_service(found.project_id, name)
        return await self._operation(found, "disable", [name])

    async def get(self, caller: Caller, request: ServiceRequest) -> ServiceState:
        found = await self._project(caller, request.project, PERM_GET)
        name = check_service_name(request.service)
        return ServiceState(found, name, name in await self._enabled(found))

    async def list_services(self, caller: Caller, request: ListServicesRequest) -> ServicePage:
        found = await self._project(caller, request.project, PERM_LIST)
        filter_text = request.filter
        if filter_text.strip() not in FILTERS:
            raise InvalidArgument(f"Invalid filter '{filter_text}': use state:ENABLED or state:DISABLED.",
                                  field="filter")
        wanted = FILTERS[filter_text.strip()]
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = ""
        if request.page_token:
            decoded = _decode(request.page_token)
            if not isinstance(decoded, str):
                raise InvalidArgument("Invalid pageToken.", field="pageToken")
            after = decoded
        enabled = set(await self._enabled(found))
        if wanted is None:  # available: what keyless knows of, and whatever was enabled
            names = sorted(enabled | set(CATALOGUE))
        else:
            names = sorted(enabled) if wanted else sorted(set(CATALOGUE) - enabled)
        page = [n for n in names if n > after][:size + 1]
        return ServicePage(tuple(ServiceState(found, n, n in enabled) for n in page[:size]),
                           _encode(page[size - 1]) if len(page) > size else "")

    async def operation(self, caller: Caller, name: str) -> ServiceOperation:
        """``operations.get``: the operation a name describes, answered from the current state."""
        number, _, payload = name.removeprefix(OPERATION_PREFIX).partition("-")
        decoded = _decode(payload) if name.startswith(OPERATION_PREFIX) else None
        verb = decoded.get("v") if isinstance(decoded, dict) else None
        services = decoded.get("s") if isinstance(decoded, dict) else None
        if not isinstance(services, list) or not services or verb not in ("enable", "disable", "batchEnable"):
            raise NotFound(f"Operation {name} not found.")
        found = await self._project(caller, number, PERM_GET)
        names = [check_service_name(s) for s in services[:MAX_BATCH]]
        return await self._operation(found, str(verb), names)
