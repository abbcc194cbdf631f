"""The one error hierarchy: every error knows its HTTP status, canonical status, headers and wire shape.

API errors render as Google's JSON error body (``{"error": {"code", "message", "status", "details"}}``);
``OAuthError``, a branch of the same tree, renders in the OAuth 2.0 shape used by the token endpoint. Whatever
layer raises, one renderer (``to_json``, ``headers``) answers.
"""

from __future__ import annotations

from typing import Any

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RESOURCE_INFO = "type.googleapis.com/google.rpc.ResourceInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
PRECONDITION_FAILURE = "type.googleapis.com/google.rpc.PreconditionFailure"
HELP = "type.googleapis.com/google.rpc.Help"
LOCALIZED_MESSAGE = "type.googleapis.com/google.rpc.LocalizedMessage"
CONSOLE = "https://console.developers.google.com"


class KeylessError(Exception):
    """Base of every error keyless reports to a caller."""

    http_status = 500
    status = "INTERNAL"
    legacy_reason = "backendError"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the error's status calls for."""
        return {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.http_status,
            "message": self.message,
            "status": self.status,
            # google-api-python-client and gax surface the legacy array too.
            "errors": [{"message": self.message, "domain": "global", "reason": self.legacy_reason}],
        }
        if self.details:
            body["details"] = self.details
        return {"error": body}


class InvalidArgument(KeylessError):
    http_status = 400
    status = "INVALID_ARGUMENT"
    legacy_reason = "badRequest"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        details = None
        if field:
            details = [{"@type": BAD_REQUEST, "fieldViolations": [{"field": field, "description": message}]}]
        super().__init__(message, details=details)
        self.field = field


class FailedPrecondition(KeylessError):
    http_status = 400
    status = "FAILED_PRECONDITION"
    legacy_reason = "failedPrecondition"

    @classmethod
    def violation(cls, message: str, *, kind: str, subject: str, description: str) -> FailedPrecondition:
        """A refusal for a precondition, with Google's ``PreconditionFailure`` detail (an org policy constraint
        names itself as the violation's type)."""
        return cls(message, details=[{"@type": PRECONDITION_FAILURE, "violations": [
            {"type": kind, "subject": subject, "description": description}]}])


class Unauthenticated(KeylessError):
    http_status = 401
    status = "UNAUTHENTICATED"
    legacy_reason = "authError"

    DEFAULT_MESSAGE = ("Request had invalid authentication credentials. Expected OAuth 2 access token, "
                       "login cookie or other valid authentication credential.")

    def __init__(self, message: str = DEFAULT_MESSAGE, *, reason: str = "ACCESS_TOKEN_TYPE_UNSUPPORTED") -> None:
        super().__init__(message, details=[{"@type": ERROR_INFO, "reason": reason, "domain": "googleapis.com"}])

    @property
    def headers(self) -> dict[str, str]:
        # RFC 6750: a 401 names the scheme it wants (Google's APIs answer this realm).
        return {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}


class PermissionDenied(KeylessError):
    http_status = 403
    status = "PERMISSION_DENIED"
    legacy_reason = "forbidden"

    @classmethod
    def iam(cls, permission: str, resource: str | None = None) -> PermissionDenied:
        """The denial Google's IAM returns: it names the permission in text and in an ErrorInfo."""
        message = f"Permission '{permission}' denied on resource (or it may not exist)."
        metadata = {"permission": permission}
        if resource:
            metadata["resource"] = resource
        return cls(message, details=[{"@type": ERROR_INFO, "reason": "IAM_PERMISSION_DENIED",
                                      "domain": "iam.googleapis.com", "metadata": metadata}])


class InsufficientScopes(PermissionDenied):
    """The caller's token carries none of the scopes the API accepts."""

    def __init__(self) -> None:
        super().__init__("Request had insufficient authentication scopes.", details=[
            {"@type": ERROR_INFO, "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "domain": "googleapis.com",
             "metadata": {"method": "keyless", "service": "iamcredentials.googleapis.com"}}])


class ServiceDisabled(PermissionDenied):
    """Google's answer when the consumer project of a request has not enabled the API it calls."""

    def __init__(self, service: str, title: str, project_number: str) -> None:
        url = f"{CONSOLE}/apis/api/{service}/overview?project={project_number}"
        message = (f"{title} has not been used in project {project_number} before or it is disabled. Enable it by "
                   f"visiting {url} then retry. If you enabled this API recently, wait a few minutes for the action "
                   "to propagate to our systems and retry.")
        super().__init__(message, details=[
            {"@type": ERROR_INFO, "reason": "SERVICE_DISABLED", "domain": "googleapis.com",
             "metadata": {"activationUrl": url, "consumer": f"projects/{project_number}",
                          "containerInfo": project_number, "service": service, "serviceTitle": title}},
            {"@type": LOCALIZED_MESSAGE, "locale": "en-US", "message": message},
            {"@type": HELP, "links": [{"description": "Google developers console API activation", "url": url}]},
        ])

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["error"]["errors"] = [{"message": self.message, "domain": "usageLimits", "reason": "accessNotConfigured",
                                    "extendedHelp": CONSOLE}]
        return body


class UserProjectDenied(PermissionDenied):
    """The caller may not bill the project its ``x-goog-user-project`` header names (or there is no such project)."""

    def __init__(self, project: str, service: str) -> None:
        url = f"{CONSOLE}/iam-admin/iam/project?project={project}"
        super().__init__(
            f"Caller does not have required permission to use project {project}. Grant the caller the "
            "roles/serviceusage.serviceUsageConsumer role, or a custom role with the serviceusage.services.use "
            f"permission, by visiting {url} and then retry. Propagation of the new permission may take a few "
            "minutes.",
            details=[{"@type": ERROR_INFO, "reason": "USER_PROJECT_DENIED", "domain": "googleapis.com",
                      "metadata": {"consumer": f"projects/{project}", "service": service}},
                     {"@type": HELP, "links": [{"description": "Google developer console IAM admin", "url": url}]}])


class NotFound(KeylessError):
    http_status = 404
    status = "NOT_FOUND"
    legacy_reason = "notFound"


class AlreadyExists(KeylessError):
    http_status = 409
    status = "ALREADY_EXISTS"
    legacy_reason = "alreadyExists"

    def __init__(self, message: str, *, resource_name: str | None = None) -> None:
        details = [{"@type": RESOURCE_INFO, "resourceName": resource_name}] if resource_name else None
        super().__init__(message, details=details)


class Aborted(KeylessError):
    http_status = 409
    status = "ABORTED"
    legacy_reason = "aborted"


class ResourceExhausted(KeylessError):
    http_status = 429
    status = "RESOURCE_EXHAUSTED"
    legacy_reason = "rateLimitExceeded"


class MethodNotAllowed(KeylessError):
    http_status = 405
    status = "UNIMPLEMENTED"
    legacy_reason = "methodNotAllowed"


class Unimplemented(KeylessError):
    """A method of a Google service that keyless does not serve (gRPC's ``UNIMPLEMENTED``, HTTP 501)."""

    http_status = 501
    status = "UNIMPLEMENTED"
    legacy_reason = "notImplemented"


class DeadlineExceeded(KeylessError):
    """A gRPC call whose request message did not arrive within the request deadline (``--body-timeout``): REST
    closes such a connection, a gRPC stream is ended with ``DEADLINE_EXCEEDED`` (HTTP 504 in Google's mapping)."""

    http_status = 504
    status = "DEADLINE_EXCEEDED"
    legacy_reason = "deadlineExceeded"


class PayloadTooLarge(KeylessError):
    http_status = 413
    status = "INVALID_ARGUMENT"
    legacy_reason = "badRequest"


class Internal(KeylessError):
    http_status = 500
    status = "INTERNAL"


class MalformedData(Internal, ValueError):
    """Data keyless holds or was handed is not what it must be (a key that is not RSA, a ciphertext of an unknown
    version, a page token of another list). Callers that take such data from a request catch it and answer
    with an error of their own; one that escapes is an internal error. A ``ValueError`` too, as the library
    errors it stands beside."""


class NotReady(Internal, RuntimeError):
    """keyless used in a state it cannot serve from (a store that is not open, no signing key after a rotation):
    a fault of keyless, not of the request."""


class BindFailed(Internal, OSError):
    """A listener's address cannot be bound (in use, not local): ``keyless serve`` ends with one line naming the
    option. An ``OSError`` too, as a socket's own bind failure is."""


class Unavailable(KeylessError):
    """The database cannot be reached, accepts no writes (a standby, during a failover) or did not answer in
    time: nothing was done that the caller can rely on, and the request may be retried."""

    http_status = 503
    status = "UNAVAILABLE"
    legacy_reason = "backendError"

    DEFAULT_MESSAGE = "The service is currently unavailable."

    def __init__(self, message: str = DEFAULT_MESSAGE) -> None:
        super().__init__(message)

    def oauth(self) -> OAuthError:
        """The same, in the OAuth 2.0 shape of the token, tokeninfo and revoke endpoints."""
        return OAuthError("temporarily_unavailable", self.message, http_status=self.http_status)
class SignInError(KeylessError):
    """What the sign-in page (``/o/oauth2/auth``) answers on itself, never by redirecting: an unknown client, a
    redirect URI the client may not use (the page must not send anyone there), a form that was not this page's,
    a wrong password. ``error`` is the OAuth error code Google's page shows (``Error 400: redirect_uri_mismatch``)."""

    http_status = 400
    status = "INVALID_ARGUMENT"
    legacy_reason = "badRequest"

    def __init__(self, error: str, message: str, *, http_status: int = 400) -> None:
        super().__init__(message)
        self.error = error
        self.http_status = http_status
        self.status = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}.get(
            http_status, "INVALID_ARGUMENT")


class OAuthError(KeylessError):
    """An error of the OAuth 2.0 token, tokeninfo and revoke endpoints: ``{"error", "error_description"}``."""

    status = "INVALID_ARGUMENT"

    def __init__(self, error: str, description: str, *, http_status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.http_status = http_status
        if http_status == 401:
            self.status = "UNAUTHENTICATED"
        elif http_status == 429:
            self.status = "RESOURCE_EXHAUSTED"
        elif http_status >= 500:
            self.status = "UNAVAILABLE" if http_status == 503 else "INTERNAL"

    @property
    def headers(self) -> dict[str, str]:
        # RFC 6749 section 5.2: a 401 for client authentication names the scheme.
        return {"WWW-Authenticate": 'Basic realm="oauth2"'} if self.http_status == 401 else {}

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)
