"""The typed requests and results of the policy operations on projects and organizations: a project's allow policy
(Resource Manager's getIamPolicy, setIamPolicy, testIamPermissions) and the organization policies (Org Policy v2,
Resource Manager v1's org-policy verbs).

A wire adapter (REST in ``keyless.http.projects`` and ``keyless.http.orgpolicy``, gRPC in ``keyless.grpc.projects``)
parses its format into one of these requests, calls the core (``keyless.service.policies.Policies``,
``keyless.service.orgpolicies.OrgPolicies``) and renders the result. What an adapter has checked is the form (an
object, a list of strings, base64 etags, no unknown field); what the core checks is the substance (which project or
organization, which constraint, the spec's rules for that constraint, permissions, etags), in the order it always
has. An org policy's spec stays the object sent until the core knows its constraint: its rules depend on it.

Operations that name only a parent (list the policies, list the constraints) take the parent's name as sent
(``projects/ID``, ``projects/NUMBER`` or ``organizations/NUMBER``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyless.domain.constraints import Constraint
from keyless.domain.policy import Policy
from keyless.storage.base import OrgPolicy

# ---------------------------------------------------------------- a project's allow policy


@dataclass(frozen=True, slots=True)
class GetProjectIamPolicyRequest:
    project: str  # the project id or number, as the request named it
    requested_version: int = 0  # 0, 1 or 3 (the adapter has refused any other)


@dataclass(frozen=True, slots=True)
class SetProjectIamPolicyRequest:
    project: str
    policy: Policy  # parsed once by the adapter, with the domain's rules
    update_mask: tuple[str, ...] | None = None  # None: no mask, the policy replaces everything


@dataclass(frozen=True, slots=True)
class TestProjectIamPermissionsRequest:
    __test__ = False  # not a pytest class, whatever its name

    project: str
    permissions: tuple[str, ...] = ()


# ---------------------------------------------------------------- organization policies


@dataclass(frozen=True, slots=True)
class OrgPolicyRequest:
    """One constraint's policy on a parent: v2's get, getEffectivePolicy and delete (``etag``), v1's
    getOrgPolicy, getEffectiveOrgPolicy and clearOrgPolicy (``etag``)."""

    parent: str
    constraint: str  # as named, short or full ("" when the request named none: the core says it is required)
    etag: str | None = None  # canonical base64 (the adapter has refused any other); None: any


@dataclass(frozen=True, slots=True)
class WriteOrgPolicyRequest:
    """v2's CreatePolicy (the constraint from ``name``) and UpdatePolicy (the constraint from the path)."""

    parent: str
    constraint: str  # UpdatePolicy's path segment; "" for CreatePolicy
    name: str | None  # the Policy's name as sent (None: absent; "" when it is not text, refused by the core)
    spec: Mapping[str, Any] | None  # the spec as sent, parsed by the core for its constraint; None: absent
    etag: str | None = None  # the Policy's etag, canonical base64
    spec_etag: str | None = None  # its spec's etag (where GET answers it)
    unsupported: tuple[str, ...] = ()  # fields set that keyless does not support (dryRunSpec, alternate)


@dataclass(frozen=True, slots=True)
class SetOrgPolicyV1Request:
    """Resource Manager v1's setOrgPolicy."""

    parent: str
    constraint: str  # the policy's constraint ("" when not text)
    policy: Mapping[str, Any]  # the v1 OrgPolicy as sent, parsed by the core for its constraint
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class PlacedOrgPolicy:
    """A constraint's policy and how answers name its parent (``projects/ID``, ``organizations/NUMBER``); no policy
    (v1's getOrgPolicy of a constraint that has none) is None."""

    where: str
    constraint: Constraint
    policy: OrgPolicy | None


@dataclass(frozen=True, slots=True)
class EffectiveOrgPolicy:
    where: str
    constraint: Constraint
    spec: dict[str, Any] | None  # None: the constraint's default


@dataclass(frozen=True, slots=True)
class OrgPolicyList:
    where: str
    policies: tuple[PlacedOrgPolicy, ...]


@dataclass(frozen=True, slots=True)
class ConstraintList:
    where: str
    constraints: tuple[Constraint, ...]
