"""The typed requests and results of keyless's own owner API (``/keyless/v1/...``, ``/v1/auditLog``) and of Resource
Manager v1's ``projects.list`` (``keyless.service.admin.Admin``).

REST's adapters (``keyless.http.admin``, ``keyless.http.projects``) read the path, the query and the JSON body into
these; the core checks everything else, the owner's permission first, so a caller who is not the owner learns
nothing about what it sent. A value that is absent or of the wrong JSON type is None (the core answers that it is
required); query parameters stay the text sent, read by the core (page sizes, page tokens, filters, orders).
Operations that name only a user or a group take its email as their request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from keyless.storage.base import AuditEntry, Project, User


@dataclass(frozen=True, slots=True)
class CreateUserRequest:
    email: str | None


@dataclass(frozen=True, slots=True)
class SetPasswordRequest:
    email: str  # the user, as the path named it
    password: str | None  # never recorded nor logged


@dataclass(frozen=True, slots=True)
class SetGroupRequest:
    group: str  # the group's email, as the path named it
    members: tuple[str, ...] | None  # None: not a list; a member that is not text is "" (refused as empty)


@dataclass(frozen=True, slots=True)
class CreateProjectRequest:
    project_id: str | None


@dataclass(frozen=True, slots=True)
class AdvanceClockRequest:
    seconds: float | str | None  # a number, or a Duration's text ("3600s"); None: not either


@dataclass(frozen=True, slots=True)
class AttachToMetadataRequest:
    service_account: str | None  # an email or unique id


@dataclass(frozen=True, slots=True)
class AuditLogRequest:
    filter: str = ""
    page_size: str | None = None
    page_token: str | None = None
    order_by: str | None = None  # "timestamp asc" (the default) or "timestamp desc"


@dataclass(frozen=True, slots=True)
class ListProjectsRequest:
    filter: str | None = None
    page_size: str | None = None
    page_token: str | None = None


class UserCredentials(NamedTuple):
    """A user with its new client secret and refresh token, shown only now (the store keeps their hashes)."""

    user: User
    client_secret: str
    refresh_token: str


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: tuple[AuditEntry, ...]
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class ProjectPage:
    projects: tuple[Project, ...]
    next_page_token: str = ""
