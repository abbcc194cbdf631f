"""The OpenAPI 3 description of the API port (``GET /openapi.json``).

It documents every route of :func:`keyless.http.app.routes` with the methods it serves, its path and query
parameters, the JSON (or form) body each method reads, and the two error shapes: Google's
``{"error": {"code", "message", "status", ...}}`` and, on the OAuth endpoints, ``{"error", "error_description"}``.
Request schemas follow what the handlers accept (unknown top-level fields are refused where the handler
refuses them), so a generator such as schemathesis produces requests the server treats as well-formed.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyless.http.common import JSONResponse, base_url

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Schema], *, required: tuple[str, ...] = (), closed: bool = True) -> Schema:
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


STRING: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
STRINGS: Schema = {"type": "array", "items": STRING}
ANY_OBJECT: Schema = {"type": "object"}
DURATION: Schema = {"type": "string", "pattern": r"^-?[0-9]{1,12}(\.[0-9]{1,9})?s$"}
BASE64: Schema = {"type": "string", "format": "byte"}
DELEGATES: Schema = {"type": "array", "items": {"type": "string", "pattern": r"^projects/-/serviceAccounts/.+$"},
                     "maxItems": 12}

SCHEMAS: dict[str, Schema] = {
    "GoogleError": _obj({
        "error": _obj({
            "code": {"type": "integer"},
            "message": STRING,
            "status": STRING,
            "errors": {"type": "array", "items": ANY_OBJECT},
            "details": {"type": "array", "items": ANY_OBJECT},
        }, required=("code", "message", "status"), closed=False),
    }, required=("error",), closed=False),
    "OAuthError": _obj({"error": STRING, "error_description": STRING}, required=("error",), closed=False),
    "Empty": ANY_OBJECT,
    "ServiceAccount": _obj({
        "name": STRING, "projectId": STRING, "uniqueId": STRING, "email": STRING,
        "displayName": {"type": "string", "maxLength": 100},
        "description": {"type": "string", "maxLength": 256},
        "etag": STRING, "oauth2ClientId": STRING, "disabled": BOOL,
    }),
    "CreateServiceAccountRequest": _obj({
        "accountId": {"type": "string", "pattern": r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"},
        "serviceAccount": _ref("ServiceAccount"),
    }, required=("accountId",)),
    "PatchServiceAccountRequest": _obj({
        "serviceAccount": _ref("ServiceAccount"),
        "updateMask": STRING,
    }),
    "Expr": _obj({
        "expression": STRING, "title": {"type": "string", "maxLength": 100}, "description": STRING,
        "location": STRING,
    }, required=("expression", "title")),
    "Binding": _obj({
        "role": STRING,
        "members": STRINGS,
        "condition": _ref("Expr"),
    }, required=("role",)),
    "Policy": _obj({
        "version": {"type": "integer", "enum": [0, 1, 3]},
        "bindings": {"type": "array", "items": _ref("Binding")},
        "etag": BASE64,
        "auditConfigs": {"type": "array", "items": ANY_OBJECT},
    }),
    "SetIamPolicyRequest": _obj({"policy": _ref("Policy"), "updateMask": STRING}, required=("policy",)),
    "GetIamPolicyRequest": _obj({
        "options": _obj({"requestedPolicyVersion": {"type": "integer", "enum": [0, 1, 3]}}),
    }),
    "TestIamPermissionsRequest": _obj({"permissions": STRINGS}),
    "TestIamPermissionsResponse": _obj({"permissions": STRINGS}, closed=False),
    "GenerateAccessTokenRequest": _obj({
        "delegates": DELEGATES,
        "scope": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "lifetime": DURATION,
    }, required=("scope",)),
    "GenerateAccessTokenResponse": _obj({"accessToken": STRING, "expireTime": STRING},
                                        required=("accessToken", "expireTime"), closed=False),
    "GenerateIdTokenRequest": _obj({
        "delegates": DELEGATES,
        "audience": {"type": "string", "minLength": 1},
        "includeEmail": BOOL,
        "useEmailAzp": BOOL,
        "organizationNumberIncluded": BOOL,
    }, required=("audience",)),
    "GenerateIdTokenResponse": _obj({"token": STRING}, required=("token",), closed=False),
    "SignBlobRequest": _obj({"delegates": DELEGATES, "payload": BASE64, "bytesToSign": BASE64}),
    "SignBlobResponse": _obj({"keyId": STRING, "signedBlob": STRING, "signature": STRING}, closed=False),
    "SignJwtRequest": _obj({"delegates": DELEGATES, "payload": {"type": "string", "minLength": 1}},
                           required=("payload",)),
    "SignJwtResponse": _obj({"keyId": STRING, "signedJwt": STRING}, closed=False),
    "CreateKeyRequest": _obj({
        "privateKeyType": {"type": "string", "enum": ["TYPE_GOOGLE_CREDENTIALS_FILE", "TYPE_PKCS12_FILE",
                                                      "TYPE_UNSPECIFIED"]},
        "keyAlgorithm": {"type": "string", "enum": ["KEY_ALG_RSA_2048", "KEY_ALG_UNSPECIFIED", "KEY_ALG_RSA_1024"]},
    }),
    "UploadKeyRequest": _obj({"publicKeyData": BASE64}, required=("publicKeyData",)),
    "DisableKeyRequest": _obj({"serviceAccountKeyDisableReason": STRING, "extendedStatusMessage": STRING}),
    "ServiceAccountKey": _obj({
        "name": STRING, "validAfterTime": STRING, "validBeforeTime": STRING, "keyAlgorithm": STRING,
        "keyOrigin": STRING, "keyType": STRING, "disabled": BOOL, "publicKeyData": STRING,
        "privateKeyType": STRING, "privateKeyData": STRING,
    }, closed=False),
    "OrgPolicySpec": _obj({
        "rules": {"type": "array", "items": _obj({
            "values": _obj({"allowedValues": STRINGS, "deniedValues": STRINGS}),
            "allowAll": BOOL,
            "denyAll": BOOL,
            "enforce": BOOL,
        })},
        "etag": STRING,
        "inheritFromParent": BOOL,
        "reset": BOOL,
    }, closed=False),
    "OrgPolicy": _obj({"name": STRING, "spec": _ref("OrgPolicySpec"), "dryRunSpec": _ref("OrgPolicySpec"),
                       "etag": STRING}),
    "CreateOrgPolicyRequest": _obj({"name": STRING, "spec": _ref("OrgPolicySpec")}, required=("name", "spec")),
    "V1OrgPolicy": _obj({
        "constraint": STRING, "etag": STRING, "version": {"type": "integer"}, "updateTime": STRING,
        "listPolicy": _obj({"allowedValues": STRINGS, "deniedValues": STRINGS, "allValues": {
            "type": "string", "enum": ["ALL_VALUES_UNSPECIFIED", "ALLOW", "DENY"]}, "suggestedValue": STRING,
            "inheritFromParent": BOOL}),
        "booleanPolicy": _obj({"enforced": BOOL}),
        "restoreDefault": _obj({}),
    }),
    "ConstraintRequest": _obj({"constraint": STRING}, required=("constraint",)),
    "SetOrgPolicyRequest": _obj({"policy": _ref("V1OrgPolicy"), "updateMask": STRING}, required=("policy",)),
    "ClearOrgPolicyRequest": _obj({"constraint": STRING, "etag": STRING}, required=("constraint",)),
    "PageRequest": _obj({"pageSize": {"type": "integer"}, "pageToken": STRING}),
    "BatchEnableRequest": _obj({"serviceIds": {"type": "array", "items": STRING, "minItems": 1, "maxItems": 20}},
                               required=("serviceIds",)),
    "DisableServiceRequest": _obj({"disableDependentServices": BOOL, "checkIfServiceHasUsage": {
        "type": "string", "enum": ["CHECK_IF_SERVICE_HAS_USAGE_UNSPECIFIED", "SKIP", "CHECK"]}}),
    "Service": _obj({"name": STRING, "parent": STRING, "config": ANY_OBJECT, "state": STRING}, closed=False),
    "Operation": _obj({"name": STRING, "done": BOOL, "metadata": ANY_OBJECT, "response": ANY_OBJECT},
                      closed=False),
    "User": _obj({"email": STRING, "clientId": STRING, "disabled": {"type": "boolean"},
                  "hasPassword": {"type": "boolean"}}, closed=False),
    "CreateUserRequest": _obj({"email": {"type": "string", "format": "email"}}, required=("email",)),
    "SetGroupRequest": _obj({"members": STRINGS, "email": STRING}),
    "CreateProjectRequest": _obj({"projectId": {"type": "string", "pattern": r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$"}},
                                 required=("projectId",)),
    "MetadataAttachment": _obj({"serviceAccount": STRING}, required=("serviceAccount",)),
    "AdvanceClockRequest": _obj({
        "seconds": {"anyOf": [{"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 10 * 365 * 86400},
                              {"type": "string", "pattern": r"^[0-9]{1,9}s$"}]},
    }, required=("seconds",)),
    "TokenForm": _obj({
        "grant_type": {"type": "string", "enum": ["urn:ietf:params:oauth:grant-type:jwt-bearer", "refresh_token",
                                                  "authorization_code"]},
        "assertion": STRING,
        "refresh_token": STRING,
        "client_id": STRING,
        "client_secret": STRING,
        "scope": STRING,
        "code": STRING,
        "redirect_uri": STRING,
        "code_verifier": STRING,
    }, required=("grant_type",)),
    "SignInForm": _obj({name: STRING for name in (
        "client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge", "code_challenge_method",
        "access_type", "nonce", "login_hint", "csrf_token", "email", "password", "action")}),
    "SetPasswordRequest": _obj({"password": STRING}, required=("password",)),
    "TokenInfoForm": _obj({"access_token": STRING, "id_token": STRING}),
    "RevokeForm": _obj({"token": STRING}, required=("token",)),
}


def _param(name: str, where: str = "path", schema: Schema | None = None, *, required: bool | None = None
           ) -> Schema:
    return {"name": name, "in": where, "required": where == "path" if required is None else required,
            "schema": schema or STRING}


PROJECT = _param("project", schema={"type": "string", "pattern": r"^(-|[a-z][-a-z0-9]{4,28}[a-z0-9])$"})
ACCOUNT = _param("account", schema={"type": "string", "minLength": 1, "pattern": r"^[^/:]+$"})
KEY = _param("key", schema={"type": "string", "minLength": 1, "pattern": r"^[^/:]+$"})
EMAIL = _param("email", schema={"type": "string", "minLength": 1, "pattern": r"^[^/]+$"})
CONSTRAINT = _param("constraint", schema={"type": "string", "minLength": 1, "pattern": r"^[^/]+$"})
ORGANIZATION = _param("organization", schema={"type": "string", "pattern": r"^[0-9]{1,20}$"})
SERVICE = _param("service", schema={"type": "string", "minLength": 1, "pattern": r"^[^/:]+$"})
OPERATION = _param("operation", schema={"type": "string", "minLength": 1, "pattern": r"^[^/]+$"})
USER = _param("user", schema={"type": "string", "minLength": 1, "pattern": r"^[^/:]+$"})
GROUP = _param("group", schema={"type": "string", "minLength": 1, "pattern": r"^[^/]+$"})
POLICY_VERSION_QUERY = _param("options.requestedPolicyVersion", "query", {"type": "integer", "enum": [0, 1, 3]})


def _json_body(schema: str | Schema, *, required: bool = False) -> Schema:
    resolved = _ref(schema) if isinstance(schema, str) else schema
    return {"required": required, "content": {JSON: {"schema": resolved}}}


def _ok(schema: str | Schema = "Empty", media: str = JSON) -> Schema:
    resolved = _ref(schema) if isinstance(schema, str) else schema
    return {"description": "Success.", "content": {media: {"schema": resolved}}}


def _op(op_id: str, summary: str, *, params: list[Schema] | None = None, body: Schema | None = None,
        ok: Schema | None = None, oauth: bool = False, public: bool = False) -> Schema:
    error = {"$ref": "#/components/responses/OAuthError" if oauth else "#/components/responses/GoogleError"}
    op: Schema = {
        "operationId": op_id,
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": ok or _ok(), "4XX": error},
    }
    if oauth:
        # A body over the size limit is refused before the OAuth layer, in Google's shape.
        op["responses"]["413"] = {"$ref": "#/components/responses/GoogleError"}
    if body is not None:
        op["requestBody"] = body
    if public:
        op["security"] = []
    return op


def _account_paths() -> dict[str, Schema]:
    base = "/v1/projects/{project}/serviceAccounts"
    acct = base + "/{account}"
    p = [PROJECT, ACCOUNT]
    paths: dict[str, Schema] = {
        base: {
            "get": _op("iam.projects.serviceAccounts.list", "List service accounts.",
                       params=[PROJECT, _param("pageSize", "query", {"type": "integer"}),
                               _param("pageToken", "query")],
                       ok=_ok(_obj({"accounts": {"type": "array", "items": _ref("ServiceAccount")},
                                    "nextPageToken": STRING}, closed=False))),
            "post": _op("iam.projects.serviceAccounts.create", "Create a service account.", params=[PROJECT],
                        body=_json_body("CreateServiceAccountRequest", required=True), ok=_ok("ServiceAccount")),
        },
        acct: {
            "get": _op("iam.projects.serviceAccounts.get", "Get a service account.", params=p,
                       ok=_ok("ServiceAccount")),
            "patch": _op("iam.projects.serviceAccounts.patch", "Update displayName/description (updateMask).",
                         params=p, body=_json_body("PatchServiceAccountRequest", required=True),
                         ok=_ok("ServiceAccount")),
            "put": _op("iam.projects.serviceAccounts.update", "Deprecated update (displayName).", params=p,
                       body=_json_body("ServiceAccount", required=True), ok=_ok("ServiceAccount")),
            "delete": _op("iam.projects.serviceAccounts.delete", "Delete a service account.", params=p),
        },
        acct + "/allowedLocations": {
            "get": _op("iamcredentials.serviceAccounts.allowedLocations", "Allowed locations (none bound).",
                       params=p, ok=_ok(_obj({"locations": STRINGS, "encodedLocations": STRING}, closed=False))),
        },
        acct + "/keys": {
            "get": _op("iam.projects.serviceAccounts.keys.list", "List keys.",
                       params=[*p, {**_param("keyTypes", "query", {"type": "array", "items": {
                           "type": "string", "enum": ["KEY_TYPE_UNSPECIFIED", "USER_MANAGED", "SYSTEM_MANAGED"]}}),
                                    "style": "form", "explode": True}],
                       ok=_ok(_obj({"keys": {"type": "array", "items": _ref("ServiceAccountKey")}},
                                   closed=False))),
            "post": _op("iam.projects.serviceAccounts.keys.create", "Create a key (answers its key file).",
                        params=p, body=_json_body("CreateKeyRequest"), ok=_ok("ServiceAccountKey")),
        },
        acct + "/keys:upload": {
            "post": _op("iam.projects.serviceAccounts.keys.upload", "Upload an X.509 certificate as a key.",
                        params=p, body=_json_body("UploadKeyRequest", required=True), ok=_ok("ServiceAccountKey")),
        },
        acct + "/keys/{key}": {
            "get": _op("iam.projects.serviceAccounts.keys.get", "Get a key.",
                       params=[*p, KEY, _param("publicKeyType", "query", {"type": "string", "enum": [
                           "TYPE_NONE", "TYPE_X509_PEM_FILE", "TYPE_RAW_PUBLIC_KEY"]})],
                       ok=_ok("ServiceAccountKey")),
            "delete": _op("iam.projects.serviceAccounts.keys.delete", "Delete a key.", params=[*p, KEY]),
        },
    }
    for verb in ("disable", "enable"):
        paths[f"{acct}/keys/{{key}}:{verb}"] = {
            "post": _op(f"iam.projects.serviceAccounts.keys.{verb}", f"{verb.capitalize()} a key.",
                        params=[*p, KEY], body=_json_body("DisableKeyRequest")),
        }
        paths[f"{acct}:{verb}"] = {
            "post": _op(f"iam.projects.serviceAccounts.{verb}", f"{verb.capitalize()} a service account.",
                        params=p, body=_json_body(_obj({}))),
        }
    paths[f"{acct}:undelete"] = {
        "post": _op("iam.projects.serviceAccounts.undelete", "Undelete (by unique id, within 30 days).", params=p,
                    body=_json_body(_obj({})),
                    ok=_ok(_obj({"restoredAccount": _ref("ServiceAccount")}, closed=False))),
    }
    paths.update(_policy_paths(acct, p, "iam.projects.serviceAccounts"))
    credentials = {
        "generateAccessToken": ("GenerateAccessTokenRequest", "GenerateAccessTokenResponse",
                                "A short-lived OAuth 2.0 access token for the account."),
        "generateIdToken": ("GenerateIdTokenRequest", "GenerateIdTokenResponse", "A Google-signed ID token."),
        "signBlob": ("SignBlobRequest", "SignBlobResponse",
                     "Sign bytes with the account's system-managed key (payload; IAM v1: bytesToSign)."),
        "signJwt": ("SignJwtRequest", "SignJwtResponse", "Sign a JWT claim set with the account's key."),
    }
    for verb, (request, response, summary) in credentials.items():
        paths[f"{acct}:{verb}"] = {
            "post": _op(f"iamcredentials.serviceAccounts.{verb}", summary, params=p,
                        body=_json_body(request, required=True), ok=_ok(response)),
        }
    return paths


def _policy_paths(resource: str, params: list[Schema], prefix: str) -> dict[str, Schema]:
    return {
        f"{resource}:getIamPolicy": {
            "post": _op(f"{prefix}.getIamPolicy", "Get the allow policy.", params=[*params, POLICY_VERSION_QUERY],
                        body=_json_body("GetIamPolicyRequest"), ok=_ok("Policy")),
        },
        f"{resource}:setIamPolicy": {
            "post": _op(f"{prefix}.setIamPolicy", "Replace the allow policy (etag-checked).", params=params,
                        body=_json_body("SetIamPolicyRequest", required=True), ok=_ok("Policy")),
        },
        f"{resource}:testIamPermissions": {
            "post": _op(f"{prefix}.testIamPermissions", "Which of these permissions the caller has.",
                        params=params, body=_json_body("TestIamPermissionsRequest"),
                        ok=_ok("TestIamPermissionsResponse")),
        },
    }


def _project_paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {"/v1/projects": {
        "get": _op("cloudresourcemanager.v1.projects.list", "List the projects the caller may get.",
                   params=[_param("filter", "query"), _param("pageSize", "query", {"type": "integer"}),
                           _param("pageToken", "query")],
                   ok=_ok(_obj({"projects": {"type": "array", "items": ANY_OBJECT}, "nextPageToken": STRING},
                               closed=False))),
    }}
    for version in ("v1", "v3"):
        resource = f"/{version}/projects/{{project}}"
        paths[resource] = {
            "get": _op(f"cloudresourcemanager.{version}.projects.get", "Get a project.", params=[PROJECT],
                       ok=_ok(ANY_OBJECT)),
        }
        paths.update(_policy_paths(resource, [PROJECT], f"cloudresourcemanager.{version}.projects"))
    for kind, param in (("projects", PROJECT), ("organizations", ORGANIZATION)):
        paths.update(_org_policy_paths(kind, param))
    paths.update(_service_usage_paths())
    return paths


def _org_policy_paths(kind: str, param: Schema) -> dict[str, Schema]:
    """Org Policy v2 under ``/v2/{kind}/{id}``, and Resource Manager v1's org-policy verbs."""
    single = kind.removesuffix("s")
    parent = f"/v2/{kind}/{{{single}}}/policies"
    named = [param, CONSTRAINT]
    paths: dict[str, Schema] = {
        parent: {
            "get": _op(f"orgpolicy.{kind}.policies.list", "List org policies.", params=[param],
                       ok=_ok(_obj({"policies": {"type": "array", "items": _ref("OrgPolicy")}}, closed=False))),
            "post": _op(f"orgpolicy.{kind}.policies.create", "Create an org policy (409 if there is one).",
                        params=[param], body=_json_body("CreateOrgPolicyRequest", required=True),
                        ok=_ok("OrgPolicy")),
        },
        parent + "/{constraint}": {
            "get": _op(f"orgpolicy.{kind}.policies.get", "Get an org policy.", params=named, ok=_ok("OrgPolicy")),
            "patch": _op(f"orgpolicy.{kind}.policies.patch", "Set an org policy.", params=named,
                         body=_json_body("OrgPolicy", required=True), ok=_ok("OrgPolicy")),
            "put": _op(f"orgpolicy.{kind}.policies.put", "Set an org policy.", params=named,
                       body=_json_body("OrgPolicy", required=True), ok=_ok("OrgPolicy")),
            "delete": _op(f"orgpolicy.{kind}.policies.delete", "Delete an org policy (etag-checked).",
                          params=[*named, _param("etag", "query")]),
        },
        parent + "/{constraint}:getEffectivePolicy": {
            "get": _op(f"orgpolicy.{kind}.policies.getEffectivePolicy", "The policy in force.", params=named,
                       ok=_ok("OrgPolicy")),
        },
        f"/v2/{kind}/{{{single}}}/constraints": {
            "get": _op(f"orgpolicy.{kind}.constraints.list", "The constraints keyless emulates.", params=[param],
                       ok=_ok(ANY_OBJECT)),
        },
    }
    v1 = {"getOrgPolicy": ("ConstraintRequest", "V1OrgPolicy", "Get an org policy (v1)."),
          "getEffectiveOrgPolicy": ("ConstraintRequest", "V1OrgPolicy", "The org policy in force (v1)."),
          "setOrgPolicy": ("SetOrgPolicyRequest", "V1OrgPolicy", "Set an org policy (v1, etag-checked)."),
          "clearOrgPolicy": ("ClearOrgPolicyRequest", "Empty", "Clear an org policy (v1)."),
          "listOrgPolicies": ("PageRequest", "Empty", "List org policies (v1)."),
          "listAvailableOrgPolicyConstraints": ("PageRequest", "Empty", "The constraints keyless emulates (v1).")}
    for verb, (request, response, summary) in v1.items():
        paths[f"/v1/{kind}/{{{single}}}:{verb}"] = {
            "post": _op(f"cloudresourcemanager.v1.{kind}.{verb}", summary, params=[param],
                        body=_json_body(request, required=verb in ("getOrgPolicy", "getEffectiveOrgPolicy",
                                                                   "setOrgPolicy", "clearOrgPolicy")),
                        ok=_ok(response)),
        }
    return paths


def _service_usage_paths() -> dict[str, Schema]:
    base = "/v1/projects/{project}/services"
    named = [PROJECT, SERVICE]
    return {
        base: {
            "get": _op("serviceusage.services.list", "List services (filter state:ENABLED or state:DISABLED).",
                       params=[PROJECT, _param("filter", "query"), _param("pageSize", "query", {"type": "integer"}),
                               _param("pageToken", "query")],
                       ok=_ok(_obj({"services": {"type": "array", "items": _ref("Service")}, "nextPageToken": STRING},
                                   closed=False))),
        },
        base + ":batchEnable": {
            "post": _op("serviceusage.services.batchEnable", "Enable up to 20 services.", params=[PROJECT],
                        body=_json_body("BatchEnableRequest", required=True), ok=_ok("Operation")),
        },
        base + "/{service}": {
            "get": _op("serviceusage.services.get", "A service's state on the project.", params=named,
                       ok=_ok("Service")),
        },
        base + "/{service}:enable": {
            "post": _op("serviceusage.services.enable", "Enable a service (a done operation).", params=named,
                        body=_json_body(_obj({})), ok=_ok("Operation")),
        },
        base + "/{service}:disable": {
            "post": _op("serviceusage.services.disable", "Disable a service (a done operation).", params=named,
                        body=_json_body("DisableServiceRequest"), ok=_ok("Operation")),
        },
        "/v1/operations/{operation}": {
            "get": _op("serviceusage.operations.get", "An operation (every one is done).", params=[OPERATION],
                       ok=_ok("Operation")),
        },
    }


def _federation_paths() -> dict[str, Schema]:
    """Workload identity pools and providers (IAM v1), and the STS token exchange."""
    pools = "/v1/projects/{project}/locations/global/workloadIdentityPools"
    pool_id = _param("pool", schema={"type": "string", "minLength": 1, "pattern": r"^[^/:]+$"})
    provider_id = _param("provider", schema={"type": "string", "minLength": 1, "pattern": r"^[^/:]+$"})
    listing = [_param("showDeleted", "query"), _param("pageSize", "query", {"type": "integer"}),
               _param("pageToken", "query")]
    mask = _param("updateMask", "query")
    paths: dict[str, Schema] = {}
    for kind, base, named, id_param in (
            ("workloadIdentityPools", pools, [PROJECT, pool_id], "workloadIdentityPoolId"),
            ("workloadIdentityPools.providers", pools + "/{pool}/providers", [PROJECT, pool_id, provider_id],
             "workloadIdentityPoolProviderId")):
        op = f"iam.projects.locations.{kind}"
        leaf = base + ("/{pool}" if kind == "workloadIdentityPools" else "/{provider}")
        paths[base] = {
            "get": _op(f"{op}.list", "List (showDeleted for the deleted ones too).", params=[*named[:-1], *listing],
                       ok=_ok(ANY_OBJECT)),
            "post": _op(f"{op}.create", "Create (a done operation).", params=[*named[:-1], _param(id_param, "query")],
                        body=_json_body(ANY_OBJECT), ok=_ok(ANY_OBJECT)),
        }
        paths[leaf] = {
            "get": _op(f"{op}.get", "Get.", params=named, ok=_ok(ANY_OBJECT)),
            "patch": _op(f"{op}.patch", "Update the fields updateMask names (a done operation).",
                         params=[*named, mask], body=_json_body(ANY_OBJECT), ok=_ok(ANY_OBJECT)),
            "delete": _op(f"{op}.delete", "Delete (undeletable for 30 days; a done operation).", params=named,
                          ok=_ok(ANY_OBJECT)),
        }
        paths[leaf + ":undelete"] = {
            "post": _op(f"{op}.undelete", "Undelete (a done operation).", params=named, body=_json_body(_obj({})),
                        ok=_ok(ANY_OBJECT)),
        }
    form = _obj({name: STRING for name in ("grant_type", "subject_token_type", "subject_token", "audience", "scope",
                                            "requested_token_type", "options")}, closed=False)
    paths["/v1/token"] = {"post": _op(
        "sts.token", "STS token exchange: an OIDC token (or, on the mTLS listener, a client certificate) for a "
        "federated access token.",
        body={"required": True, "content": {FORM: {"schema": form}, JSON: {"schema": ANY_OBJECT}}},
        ok=_ok(_obj({"access_token": STRING, "issued_token_type": STRING, "token_type": STRING,
                     "expires_in": {"type": "integer"}}, closed=False)), oauth=True, public=True)}
    introspect = _obj({"token": STRING, "token_type_hint": STRING}, closed=False)
    paths["/v1/introspect"] = {"post": _op(
        "sts.introspect", "STS token introspection (RFC 7662): whether a token is active, and its principal.",
        body={"required": True, "content": {FORM: {"schema": introspect}}},
        ok=_ok(_obj({"active": {"type": "boolean"}}, closed=False)), oauth=True, public=True)}
    return paths


def _oauth_paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    token_body = {"required": True, "content": {FORM: {"schema": _ref("TokenForm")},
                                                JSON: {"schema": _ref("TokenForm")}}}
    token_ok = _ok(_obj({"access_token": STRING, "expires_in": {"type": "integer"}, "token_type": STRING,
                         "scope": STRING, "id_token": STRING}, closed=False))
    for i, path in enumerate(("/token", "/oauth2/v4/token", "/o/oauth2/token")):
        paths[path] = {"post": _op(f"oauth2.token.{i}", "OAuth 2.0 token endpoint (JWT-bearer, refresh_token, "
                                   "authorization_code).",
                                   body=token_body, ok=token_ok, oauth=True, public=True)}
    info_query = [_param("access_token", "query"), _param("id_token", "query")]
    info_body = {"required": False, "content": {FORM: {"schema": _ref("TokenInfoForm")}}}
    for i, path in enumerate(("/tokeninfo", "/oauth2/v1/tokeninfo", "/oauth2/v3/tokeninfo")):
        paths[path] = {
            "get": _op(f"oauth2.tokeninfo.get.{i}", "Describe an access token or ID token.", params=info_query,
                       ok=_ok(ANY_OBJECT), oauth=True, public=True),
            "post": _op(f"oauth2.tokeninfo.post.{i}", "Describe an access token or ID token.", body=info_body,
                        ok=_ok(ANY_OBJECT), oauth=True, public=True),
        }
    for i, path in enumerate(("/revoke", "/o/oauth2/revoke")):
        paths[path] = {
            "get": _op(f"oauth2.revoke.get.{i}", "Revoke an access token or a refresh token.",
                       params=[_param("token", "query")], oauth=True, public=True),
            "post": _op(f"oauth2.revoke.post.{i}", "Revoke an access token or a refresh token.",
                        body={"required": True, "content": {FORM: {"schema": _ref("RevokeForm")}}},
                        oauth=True, public=True),
        }
    page = {"description": "The sign-in page (HTML).", "content": {HTML: {"schema": STRING}}}
    redirect = {"description": "The code (or the error) sent to the client's loopback redirect URI."}
    auth_query = [_param(name, "query") for name in (
        "client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge", "code_challenge_method",
        "access_type", "prompt", "nonce", "login_hint")]
    for i, path in enumerate(("/o/oauth2/auth", "/o/oauth2/v2/auth")):
        paths[path] = {method: {
            "operationId": f"oauth2.authorize.{method}.{i}",
            "summary": "The sign-in page of the authorization-code flow (gcloud auth login)." if method == "get"
            else "The sign-in page's form: a code for the user who signs in.",
            "parameters": auth_query if method == "get" else [],
            **({"requestBody": {"required": True, "content": {FORM: {"schema": _ref("SignInForm")}}}}
               if method == "post" else {}),
            # Errors are shown on the page (HTML); the router and the body limit answer in Google's shape.
            "responses": {"200": page, "303": redirect, "4XX": {"description": "The page, showing the error.",
                                                                "content": {HTML: {"schema": STRING},
                                                                            JSON: {"schema": _ref("GoogleError")}}}},
            "security": [],
        } for method in ("get", "post")}
    return paths


def _public_key_paths() -> dict[str, Schema]:
    cert_map = _ok({"type": "object", "additionalProperties": STRING})
    jwks = _ok(_obj({"keys": {"type": "array", "items": ANY_OBJECT}}, required=("keys",), closed=False))
    paths: dict[str, Schema] = {
        "/oauth2/v1/certs": {"get": _op("oauth2.v1.certs", "ID-token certificates (kid -> PEM).", ok=cert_map,
                                        public=True)},
        "/oauth2/v3/certs": {"get": _op("oauth2.v3.certs", "ID-token keys as JWKS.", ok=jwks, public=True)},
        "/.well-known/openid-configuration": {
            "get": _op("oidc.discovery", "OpenID Connect discovery document.", ok=_ok(ANY_OBJECT), public=True)},
    }
    for kind, ok in (("x509", cert_map), ("jwk", jwks), ("raw", cert_map)):
        paths[f"/service_accounts/v1/metadata/{kind}/{{email}}"] = {
            "get": _op(f"metadata.{kind}", f"An account's public keys ({kind}).", params=[EMAIL], ok=ok,
                       public=True)}
    paths["/robot/v1/metadata/x509/{email}"] = {
        "get": _op("robot.x509", "An account's certificates (kid -> PEM).", params=[EMAIL], ok=cert_map,
                   public=True)}
    return paths


def _troubleshooting_paths() -> dict[str, Schema]:
    """Policy Troubleshooter (v3, v2alpha1), keyless's chain explanation, Policy Analyzer and the transitive view."""
    access_tuple = _obj({"principal": STRING, "fullResourceName": STRING, "permission": STRING,
                         "permissionFqdn": STRING, "conditionContext": ANY_OBJECT})
    troubleshoot_body = _json_body(_obj({"accessTuple": access_tuple}, required=("accessTuple",)), required=True)
    query = [_param(f"analysisQuery.{name}", "query") for name in (
        "identitySelector.identity", "resourceSelector.fullResourceName", "accessSelector.permissions",
        "accessSelector.roles", "conditionContext.accessTime", "options.expandGroups", "options.expandRoles",
        "options.expandResources", "options.outputGroupEdges", "options.outputResourceEdges",
        "options.analyzeServiceAccountImpersonation")]
    return {
        "/v3/iam:troubleshoot": {"post": _op(
            "policytroubleshooter.iam.troubleshoot", "Why a principal holds a permission on a resource, or not "
            "(Policy Troubleshooter v3).", body=troubleshoot_body, ok=_ok(ANY_OBJECT))},
        "/v2alpha1/iam:troubleshoot": {"post": _op(
            "policytroubleshooter.v2alpha1.iam.troubleshoot", "The same in v2alpha1's shape (gcloud "
            "policy-troubleshoot iam).", body=troubleshoot_body, ok=_ok(ANY_OBJECT))},
        "/keyless/v1/iam:troubleshootChain": {"post": _op(
            "keyless.iam.troubleshootChain", "A credentials call explained hop by hop, naming the failing hop.",
            body=_json_body(_obj({"principal": STRING, "serviceAccount": STRING, "method": STRING,
                                  "delegates": {"type": "array", "items": STRING}}, required=("principal",)),
                            required=True), ok=_ok(ANY_OBJECT))},
        "/v1/projects/{project}:analyzeIamPolicy": {"get": _op(
            "cloudasset.analyzeIamPolicy", "Which bindings give whom what (Cloud Asset Inventory v1).",
            params=[PROJECT, *query], ok=_ok(ANY_OBJECT))},
        "/keyless/v1/serviceAccounts/{account}:whoCanImpersonate": {"get": _op(
            "keyless.serviceAccounts.whoCanImpersonate", "Every principal that can obtain the account's "
            "credentials, directly or through chains, with its path.", params=[ACCOUNT], ok=_ok(ANY_OBJECT))},
        "/keyless/v1/projects/{project}:impersonationGraph": {"get": _op(
            "keyless.projects.impersonationGraph", "The project's impersonation graph in one answer: principals, "
            "groups, accounts and projects as nodes, the grants giving credentials and group memberships as "
            "edges, conditional grants marked.", params=[PROJECT], ok=_ok(ANY_OBJECT))},
    }


def _admin_paths() -> dict[str, Schema]:
    return {
        "/keyless/v1/users": {
            "get": _op("keyless.users.list", "List users (owner only).", ok=_ok(ANY_OBJECT)),
            "post": _op("keyless.users.create", "Register a user; answers its authorized_user file once.",
                        body=_json_body("CreateUserRequest", required=True), ok=_ok(ANY_OBJECT)),
        },
        "/keyless/v1/users/{user}": {
            "get": _op("keyless.users.get", "A user (owner only).", params=[USER], ok=_ok("User")),
            "delete": _op("keyless.users.delete", "Delete a user (not the owner): its credentials and tokens stop "
                          "working.", params=[USER]),
        },
        "/keyless/v1/users/{user}:disable": {
            "post": _op("keyless.users.disable", "Disable a user (not the owner): no token, its tokens refused.",
                        params=[USER], body=_json_body(_obj({})), ok=_ok("User")),
        },
        "/keyless/v1/users/{user}:enable": {
            "post": _op("keyless.users.enable", "Enable a user.", params=[USER], body=_json_body(_obj({})),
                        ok=_ok("User")),
        },
        "/keyless/v1/users/{user}:resetSecret": {
            "post": _op("keyless.users.resetSecret", "New client secret and refresh token (the old ones and their "
                        "access tokens stop working); answers the authorized_user file once.", params=[USER],
                        body=_json_body(_obj({})), ok=_ok(ANY_OBJECT)),
        },
        "/keyless/v1/users/{user}:setPassword": {
            "post": _op("keyless.users.setPassword", "Set the password the user proves on the sign-in page when the "
                        "server is reachable off loopback.", params=[USER],
                        body=_json_body("SetPasswordRequest", required=True), ok=_ok("User")),
        },
        "/keyless/v1/groups": {
            "get": _op("keyless.groups.list", "List groups (owner only).", ok=_ok(ANY_OBJECT)),
        },
        "/keyless/v1/groups/{group}": {
            "get": _op("keyless.groups.get", "A group's members.", params=[GROUP], ok=_ok(ANY_OBJECT)),
            "put": _op("keyless.groups.set", "Set a group's members.", params=[GROUP],
                       body=_json_body("SetGroupRequest", required=True), ok=_ok(ANY_OBJECT)),
            "delete": _op("keyless.groups.delete", "Delete a group.", params=[GROUP]),
        },
        "/keyless/v1/projects": {
            "get": _op("keyless.projects.list", "List projects (owner only).", ok=_ok(ANY_OBJECT)),
            "post": _op("keyless.projects.create", "Create a project (the creator gets roles/owner).",
                        body=_json_body("CreateProjectRequest", required=True), ok=_ok(ANY_OBJECT)),
        },
        "/keyless/v1/metadata": {
            "get": _op("keyless.metadata.get", "The account the metadata server serves.",
                       ok=_ok("MetadataAttachment")),
            "put": _op("keyless.metadata.set", "Attach an account to the metadata server.",
                       body=_json_body("MetadataAttachment", required=True), ok=_ok("MetadataAttachment")),
            "delete": _op("keyless.metadata.delete", "Attach no account to the metadata server.",
                          ok=_ok("MetadataAttachment")),
        },
        "/v1/auditLog": {
            "get": _op("keyless.auditLog.list",
                       "Audit entries, oldest first, or newest first with orderBy=timestamp desc (owner only).",
                       params=[_param("filter", "query"), _param("pageSize", "query", {"type": "integer"}),
                               _param("pageToken", "query"), _param("orderBy", "query")],
                       ok=_ok(_obj({"entries": {"type": "array", "items": ANY_OBJECT}, "nextPageToken": STRING},
                                   closed=False))),
        },
        "/keyless/v1/debug/clock:advance": {
            "post": _op("keyless.debug.advanceClock", "Move the clock forward (--allow-time-travel only).",
                        body=_json_body("AdvanceClockRequest", required=True),
                        ok=_ok(_obj({"now": STRING}, closed=False))),
        },
        "/healthz": {
            "get": _op("keyless.healthz", "Liveness.", ok=_ok(STRING, "text/plain"), public=True),
        },
        "/openapi.json": {
            "get": _op("keyless.openapi", "This document.", ok=_ok(ANY_OBJECT), public=True),
        },
    }


def _console_paths() -> dict[str, Schema]:
    """The web console's static files (``keyless.console``): pages, not API; listed so that the table and this
    document stay one."""
    page = {"description": "A file of the console (HTML, JavaScript or CSS).",
            "content": {HTML: {"schema": STRING}, "text/javascript": {"schema": STRING},
                        "text/css": {"schema": STRING}}}
    return {
        "/console": {"get": {"operationId": "keyless.console.redirect", "summary": "To /console/.",
                             "parameters": [], "responses": {"308": {"description": "To /console/."}},
                             "security": []}},
        "/console/": {"get": {**_op("keyless.console.index", "The web console.", public=True),
                              "responses": {"200": page, "304": {"description": "Not modified."}}}},
        "/console/{asset}": {"get": {**_op("keyless.console.asset", "A file of the web console.",
                                           params=[_param("asset", "path")], public=True),
                                     "responses": {"200": page, "304": {"description": "Not modified."},
                                                   "4XX": {"$ref": "#/components/responses/GoogleError"}}}},
    }


def build_openapi(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document; ``server_url`` (the URL the caller used) becomes its one server."""
    paths: dict[str, Schema] = {}
    for part in (_account_paths(), _project_paths(), _federation_paths(), _troubleshooting_paths(), _oauth_paths(),
                 _public_key_paths(), _admin_paths(), _console_paths()):
        paths.update(part)
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "keyless",
            "version": "1",
            "description": "Self-hosted IAM, IAM Credentials, OAuth 2.0 and public-key endpoints of Google Cloud.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                "GoogleError": {"description": "Google's error body.",
                                "content": {JSON: {"schema": _ref("GoogleError")}}},
                "OAuthError": {"description": "OAuth 2.0 error body.",
                               "content": {JSON: {"schema": _ref("OAuthError")}}},
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "A keyless access token or a self-signed JWT."}},
        },
        "security": [{"bearer": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url.rstrip("/")}]
    return doc


async def openapi_document(request: Request) -> Response:
    return JSONResponse(build_openapi(base_url(request)))
