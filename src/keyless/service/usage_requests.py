"""The typed requests and results of Service Usage v1 (``keyless.service.usage.ServiceUsage``).

REST's adapter (``keyless.http.usage``) parses the path, the query and the JSON body into these, checking their form
(a list of strings, a boolean, an enum by name, a count, no unknown field); the core checks the substance (which
project and who may, service names, filters, page tokens, how many services) and answers with the services' state,
which the adapter renders. ``operations.get`` takes the operation's name as its request.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyless.storage.base import Project


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """services.get and services.enable."""

    project: str  # the project id or number, as the path named it
    service: str  # as named: its form is the core's to check


@dataclass(frozen=True, slots=True)
class BatchEnableRequest:
    project: str
    service_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DisableServiceRequest:
    project: str
    service: str
    disable_dependent_services: bool = False
    check_if_service_has_usage: str = "CHECK_IF_SERVICE_HAS_USAGE_UNSPECIFIED"


@dataclass(frozen=True, slots=True)
class ListServicesRequest:
    project: str
    filter: str = ""  # "", state:ENABLED or state:DISABLED (the core refuses any other)
    page_size: int | None = None  # None asks for the default
    page_token: str = ""  # the core's own token, read by the core


@dataclass(frozen=True, slots=True)
class ServiceState:
    project: Project
    service: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class ServicePage:
    services: tuple[ServiceState, ...]
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class ServiceOperation:
    """A done operation: its name (which carries what it did, for operations.get), the verb (``enable``,
    ``disable``, ``batchEnable``) and the services' state once it is done."""

    name: str
    project: Project
    verb: str
    services: tuple[ServiceState, ...]
