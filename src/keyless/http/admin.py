"""keyless's own owner API: users, groups, projects, the metadata attachment, the audit log, the clock."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.domain.lifetimes import format_timestamp
from keyless.errors import MethodNotAllowed, NotFound
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.service import audit
from keyless.service.admin import authorized_user_file
from keyless.service.grants import ATTACHED_META
from keyless.storage.base import User

USER_VERBS = {"disable": "keyless.DisableUser", "enable": "keyless.EnableUser",
              "resetSecret": "keyless.ResetUserSecret", "setPassword": "keyless.SetUserPassword"}


def _user_json(user: User) -> dict[str, object]:
    return {"email": user.email, "clientId": user.client_id, "disabled": user.disabled,
            "hasPassword": bool(user.password_hash)}


async def users(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    if request.method == "GET":
        return JSONResponse({"users": [_user_json(u) for u in await kl.admin.list_users(caller)]})
    if request.method == "POST":
        audit.begin("keyless.CreateUser", "keyless")
        data = await read_json(request, ("email",))
        audit.note(resource=f"users/{data.get('email')}")
        user, secret, refresh = await kl.admin.add_user(caller, data.get("email"))
        return JSONResponse({
            "user": {"email": user.email, "clientId": user.client_id},
            "credentials": authorized_user_file(user, secret, refresh, kl.settings.token_uri,
                                                kl.settings.default_project),
        })
    raise MethodNotAllowed(f"Method {request.method} is not allowed here.")


async def user(request: Request) -> Response:
    """``/keyless/v1/users/{email}``: GET, DELETE; ``:disable``, ``:enable``, ``:resetSecret``, ``:setPassword``
    (POST)."""
    email, sep, verb = request.path_params["user"].partition(":")
    if sep:
        if verb not in USER_VERBS:
            raise NotFound(f"Unknown method :{verb}.")
        if request.method != "POST":
            raise MethodNotAllowed(f"Method {request.method} is not allowed for :{verb}; use POST.")
        audit.begin(USER_VERBS[verb], "keyless")
    elif request.method == "DELETE":
        audit.begin("keyless.DeleteUser", "keyless")
    elif request.method != "GET":
        raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
    audit.note(resource=f"users/{email.lower()}")
    kl = keyless_of(request)
    caller = await api_caller(request)
    if verb in ("disable", "enable"):
        await read_json(request, ())
        return JSONResponse(_user_json(await kl.admin.set_user_disabled(caller, email, verb == "disable")))
    if verb == "resetSecret":
        await read_json(request, ())
        found, secret, refresh = await kl.admin.reset_user_secret(caller, email)
        return JSONResponse({
            "user": _user_json(found),
            "credentials": authorized_user_file(found, secret, refresh, kl.settings.token_uri,
                                                kl.settings.default_project),
        })
    if verb == "setPassword":
        # The body's password is never recorded (the audit entry notes no request field of this verb).
        data = await read_json(request, ("password",))
        return JSONResponse(_user_json(await kl.admin.set_password(caller, email, data.get("password"))))
    if request.method == "DELETE":
        await kl.admin.delete_user(caller, email)
        return JSONResponse({})
    return JSONResponse(_user_json(await kl.admin.get_user(caller, email)))


async def groups(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    if request.method != "GET":
        raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
    found = await kl.admin.list_groups(caller)
    return JSONResponse({"groups": [{"email": g, "members": m} for g, m in found.items()]})


async def group(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    email: str = request.path_params["group"]
    if request.method in ("PUT", "DELETE"):
        audit.begin("keyless.SetGroup" if request.method == "PUT" else "keyless.DeleteGroup", "keyless")
        audit.note(resource=f"groups/{email}")
    if request.method == "GET":
        return JSONResponse({"email": email.lower(), "members": await kl.admin.get_group(caller, email)})
    if request.method == "PUT":
        data = await read_json(request, ("members", "email"))
        members = await kl.admin.set_group(caller, email, data.get("members", []))
        return JSONResponse({"email": email.lower(), "members": members})
    if request.method == "DELETE":
        await kl.admin.delete_group(caller, email)
        return JSONResponse({})
    raise MethodNotAllowed(f"Method {request.method} is not allowed here.")


async def projects(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    if request.method == "POST":
        audit.begin("keyless.CreateProject", "keyless")
        data = await read_json(request, ("projectId",))
        project_id = data.get("projectId")
        audit.note_request(projectId=project_id)
        if isinstance(project_id, str):
            audit.note(resource=f"projects/{project_id}")
        project = await kl.admin.create_project(caller, project_id)
        return JSONResponse({"projectId": project.project_id, "projectNumber": project.number})
    if request.method == "GET":
        await kl.admin.require_admin(caller)
        return JSONResponse({"projects": [{"projectId": p.project_id, "projectNumber": p.number}
                                          for p in await kl.store.list_projects()]})
    raise MethodNotAllowed(f"Method {request.method} is not allowed here.")


async def advance_clock(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    if request.method != "POST":
        raise MethodNotAllowed("Use POST.")
    # Moving the clock changes what every time-bound grant (a condition, a key's validity) allows.
    audit.begin("keyless.AdvanceClock", "keyless")
    data = await read_json(request, ("seconds",))
    audit.note_request(seconds=data.get("seconds"))
    now = format_timestamp(await kl.admin.advance_clock(caller, data.get("seconds")))
    audit.note(now=now)
    return JSONResponse({"now": now})


async def audit_log(request: Request) -> Response:
    """``GET /v1/auditLog?pageSize=&pageToken=&filter=&orderBy=`` (owner only)."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    if request.method != "GET":
        raise MethodNotAllowed("Use GET.")
    params = request.query_params
    entries, token = await kl.admin.query_audit(caller, params.get("filter", ""), params.get("pageSize"),
                                                params.get("pageToken"), params.get("orderBy"))
    body: dict[str, object] = {"entries": await kl.audit.rendered(entries)}
    if token:
        body["nextPageToken"] = token
    return JSONResponse(body)


async def metadata_attachment(request: Request) -> Response:
    """``GET|PUT|DELETE /keyless/v1/metadata {"serviceAccount": EMAIL}``: the account the metadata server serves
    (``DELETE``: none)."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    if request.method == "PUT":
        audit.begin("keyless.SetMetadataAttachment", "keyless")
        data = await read_json(request, ("serviceAccount",))
        audit.note_request(serviceAccount=data.get("serviceAccount"))
        await kl.admin.attach_to_metadata(caller, data.get("serviceAccount"))
    elif request.method == "DELETE":
        audit.begin("keyless.DeleteMetadataAttachment", "keyless")
        await kl.admin.detach_from_metadata(caller)
    elif request.method == "GET":
        await kl.admin.require_admin(caller)
    else:
        raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
    return JSONResponse({"serviceAccount": await kl.store.get_meta(ATTACHED_META) or ""})
