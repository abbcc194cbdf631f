"""keyless's own owner API: users, groups, projects, the metadata attachment, the audit log, the clock.

Each handler reads the path, the query and the JSON body into the core's typed request
(``keyless.service.owner_requests``) and renders what ``keyless.service.admin.Admin`` answers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.domain.lifetimes import format_timestamp
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.service import audit
from keyless.service.admin import authorized_user_file
from keyless.service.grants import ATTACHED_META
from keyless.service.owner_requests import (
    AdvanceClockRequest,
    AttachToMetadataRequest,
    AuditLogRequest,
    CreateProjectRequest,
    CreateUserRequest,
    SetGroupRequest,
    SetPasswordRequest,
)
from keyless.storage.base import User


def _text(value: object) -> str | None:
    """A body field that must be text: None when it is absent or not (the core says it is required)."""
    return value if isinstance(value, str) else None


def _user_json(user: User) -> dict[str, object]:
    return {"email": user.email, "clientId": user.client_id, "disabled": user.disabled,
            "hasPassword": bool(user.password_hash)}


async def list_users(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    return JSONResponse({"users": [_user_json(u) for u in await kl.admin.list_users(caller)]})


async def create_user(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    audit.begin("keyless.CreateUser", "keyless")
    data = await read_json(request, ("email",))
    audit.note(resource=f"users/{data.get('email')}")
    user, secret, refresh = await kl.admin.add_user(caller, CreateUserRequest(_text(data.get("email"))))
    return JSONResponse({
        "user": {"email": user.email, "clientId": user.client_id},
        "credentials": authorized_user_file(user, secret, refresh, kl.settings.token_uri, kl.settings.default_project),
    })


def _user_email(request: Request, method: str | None = None) -> str:
    """The email a ``/keyless/v1/users/{user}`` request names; ``method``: the audited change it begins."""
    email: str = request.path_params["user"]
    if method is not None:
        audit.begin(method, "keyless")
    audit.note(resource=f"users/{email.lower()}")
    return email


async def get_user(request: Request) -> Response:
    email = _user_email(request)
    kl = keyless_of(request)
    return JSONResponse(_user_json(await kl.admin.get_user(await api_caller(request), email)))


async def delete_user(request: Request) -> Response:
    email = _user_email(request, "keyless.DeleteUser")
    kl = keyless_of(request)
    await kl.admin.delete_user(await api_caller(request), email)
    return JSONResponse({})


async def _set_user_disabled(request: Request, disabled: bool) -> Response:
    email = _user_email(request, "keyless.DisableUser" if disabled else "keyless.EnableUser")
    kl = keyless_of(request)
    caller = await api_caller(request)
    await read_json(request, ())
    return JSONResponse(_user_json(await kl.admin.set_user_disabled(caller, email, disabled)))


async def disable_user(request: Request) -> Response:
    return await _set_user_disabled(request, True)


async def enable_user(request: Request) -> Response:
    return await _set_user_disabled(request, False)


async def reset_user_secret(request: Request) -> Response:
    email = _user_email(request, "keyless.ResetUserSecret")
    kl = keyless_of(request)
    caller = await api_caller(request)
    await read_json(request, ())
    found, secret, refresh = await kl.admin.reset_user_secret(caller, email)
    return JSONResponse({
        "user": _user_json(found),
        "credentials": authorized_user_file(found, secret, refresh, kl.settings.token_uri,
                                            kl.settings.default_project),
    })


async def set_user_password(request: Request) -> Response:
    email = _user_email(request, "keyless.SetUserPassword")
    kl = keyless_of(request)
    caller = await api_caller(request)
    # The body's password is never recorded (the audit entry notes no request field of this verb).
    data = await read_json(request, ("password",))
    user = await kl.admin.set_password(caller, SetPasswordRequest(email, _text(data.get("password"))))
    return JSONResponse(_user_json(user))


async def list_groups(request: Request) -> Response:
    kl = keyless_of(request)
    found = await kl.admin.list_groups(await api_caller(request))
    return JSONResponse({"groups": [{"email": g, "members": m} for g, m in found.items()]})


async def get_group(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    email: str = request.path_params["group"]
    return JSONResponse({"email": email.lower(), "members": await kl.admin.get_group(caller, email)})


async def set_group(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    email: str = request.path_params["group"]
    audit.begin("keyless.SetGroup", "keyless")
    audit.note(resource=f"groups/{email}")
    data = await read_json(request, ("members", "email"))
    raw = data.get("members", [])
    listed = tuple(m if isinstance(m, str) else "" for m in raw) if isinstance(raw, list) else None
    members = await kl.admin.set_group(caller, SetGroupRequest(email, listed))
    return JSONResponse({"email": email.lower(), "members": members})


async def delete_group(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    email: str = request.path_params["group"]
    audit.begin("keyless.DeleteGroup", "keyless")
    audit.note(resource=f"groups/{email}")
    await kl.admin.delete_group(caller, email)
    return JSONResponse({})


async def list_projects(request: Request) -> Response:
    kl = keyless_of(request)
    await kl.admin.require_admin(await api_caller(request))
    return JSONResponse({"projects": [{"projectId": p.project_id, "projectNumber": p.number}
                                      for p in await kl.store.list_projects()]})


async def create_project(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    audit.begin("keyless.CreateProject", "keyless")
    data = await read_json(request, ("projectId",))
    project_id = data.get("projectId")
    audit.note_request(projectId=project_id)
    if isinstance(project_id, str):
        audit.note(resource=f"projects/{project_id}")
    project = await kl.admin.create_project(caller, CreateProjectRequest(_text(project_id)))
    return JSONResponse({"projectId": project.project_id, "projectNumber": project.number})


async def advance_clock(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    # Moving the clock changes what every time-bound grant (a condition, a key's validity) allows.
    audit.begin("keyless.AdvanceClock", "keyless")
    data = await read_json(request, ("seconds",))
    audit.note_request(seconds=data.get("seconds"))
    seconds = data.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | str):
        seconds = None  # refused by the core, once the caller is known to be the owner
    now = format_timestamp(await kl.admin.advance_clock(caller, AdvanceClockRequest(seconds)))
    audit.note(now=now)
    return JSONResponse({"now": now})


async def audit_log(request: Request) -> Response:
    """``GET /v1/auditLog?pageSize=&pageToken=&filter=&orderBy=`` (owner only)."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    params = request.query_params
    page = await kl.admin.query_audit(caller, AuditLogRequest(params.get("filter", ""), params.get("pageSize"),
                                                              params.get("pageToken"), params.get("orderBy")))
    body: dict[str, object] = {"entries": await kl.audit.rendered(list(page.entries))}
    if page.next_page_token:
        body["nextPageToken"] = page.next_page_token
    return JSONResponse(body)


async def _attachment(request: Request) -> Response:
    return JSONResponse({"serviceAccount": await keyless_of(request).store.get_meta(ATTACHED_META) or ""})


async def get_metadata_attachment(request: Request) -> Response:
    """``GET /keyless/v1/metadata``: the account the metadata server serves."""
    await keyless_of(request).admin.require_admin(await api_caller(request))
    return await _attachment(request)


async def set_metadata_attachment(request: Request) -> Response:
    """``PUT /keyless/v1/metadata {"serviceAccount": EMAIL}``."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    audit.begin("keyless.SetMetadataAttachment", "keyless")
    data = await read_json(request, ("serviceAccount",))
    audit.note_request(serviceAccount=data.get("serviceAccount"))
    await kl.admin.attach_to_metadata(caller, AttachToMetadataRequest(_text(data.get("serviceAccount"))))
    return await _attachment(request)


async def delete_metadata_attachment(request: Request) -> Response:
    """``DELETE /keyless/v1/metadata``: the metadata server serves no account."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    audit.begin("keyless.DeleteMetadataAttachment", "keyless")
    await kl.admin.detach_from_metadata(caller)
    return await _attachment(request)
