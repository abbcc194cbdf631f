"""IAM allow policies: parsing and validation, versions, etags, member matching and evaluation."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyless.domain import federation, roles
from keyless.domain.conditions import CompiledCondition, RequestContext, compile_condition, load_condition
from keyless.domain.fields import check_fields
from keyless.domain.numbers import is_ascii_digits, shown
from keyless.errors import InvalidArgument

VALID_VERSIONS = (0, 1, 3)
EMPTY_ETAG = "ACAB"  # what Google returns for a resource whose policy was never set
_EMAIL_RE = re.compile(r"^[^@\s:/]+@[^@\s:/]+\.[^@\s:/]+$")
_DOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")
_DELETED_RE = re.compile(r"^deleted:(user|serviceAccount|group):[^@\s:/]+@[^@\s:/?]+\?uid=[0-9]+$")
MAX_MEMBERS = 1500  # Google's limit on principals in one policy
POLICY_FIELDS = ("version", "bindings", "etag", "auditConfigs")
BINDING_FIELDS = ("role", "members", "condition")
CONDITION_FIELDS = ("expression", "title", "description", "location")


@dataclass(frozen=True, slots=True)
class Condition:
    expression: str
    title: str
    description: str = ""
    location: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"expression": self.expression, "title": self.title}
        if self.description:
            out["description"] = self.description
        if self.location:
            out["location"] = self.location
        return out


@dataclass(frozen=True, slots=True)
class Binding:
    role: str
    members: frozenset[str]
    condition: Condition | None = None
    # Compiled lazily: bindings are parsed on every policy read, conditions rarely evaluated.
    _compiled: list[CompiledCondition] = field(default_factory=list, compare=False, repr=False)

    def compiled_condition(self) -> CompiledCondition | None:
        """The condition ready to evaluate. It was checked when the policy was written, but is loaded leniently
        (the store may hold one from before a limit existed): one that breaks a rule grants nothing, under the
        evaluation budget, instead of failing every request that reads the policy."""
        if self.condition is None:
            return None
        if not self._compiled:
            self._compiled.append(load_condition(self.condition.expression))
        return self._compiled[0]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "members": sorted(self.members)}
        if self.condition is not None:
            out["condition"] = self.condition.to_json()
        return out


@dataclass(frozen=True, slots=True)
class Policy:
    version: int
    bindings: tuple[Binding, ...]
    etag: str = EMPTY_ETAG
    # Whether any binding is conditional: read on every credential decision, so worked out once.
    has_conditions: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        conditional = False
        for binding in self.bindings:
            if binding.condition is not None:
                conditional = True
                break
        object.__setattr__(self, "has_conditions", conditional)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.effective_version, "etag": self.etag}
        if self.bindings:
            out["bindings"] = [b.to_json() for b in self.bindings]
        return out

    @property
    def effective_version(self) -> int:
        # Google answers version 1 for any policy without conditional bindings.
        return 3 if self.has_conditions else 1

    def members_of(self, role: str) -> frozenset[str]:
        out: set[str] = set()
        for b in self.bindings:
            if b.role == role and b.condition is None:
                out |= b.members
        return frozenset(out)

    def map_members(self, fn: Any) -> Policy:
        """A copy with every member passed through ``fn`` (used for delete/undelete rewrites)."""
        return Policy(self.version, tuple(Binding(b.role, frozenset(fn(m) for m in b.members), b.condition)
                                          for b in self.bindings), self.etag)


EMPTY_POLICY = Policy(version=1, bindings=())


def new_etag() -> str:
    return base64.b64encode(secrets.token_bytes(8)).decode()


def canonical_etag(text: str) -> str | None:
    """An etag in the standard base64 alphabet, or None if it is not base64. Etags are bytes on the wire:
    gcloud decodes one and sends it back URL-safe ("CtA4C2S+eaU=" as "CtA4C2S-eaU="), with or without padding,
    and equal bytes are the same etag."""
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        return None
    return base64.b64encode(raw).decode()


def validate_member(member: object) -> str:
    if not isinstance(member, str) or not member:
        raise InvalidArgument("A member must be a non-empty string.", field="policy.bindings.members")
    if member in ("allUsers", "allAuthenticatedUsers"):
        return member
    kind, sep, rest = member.partition(":")
    if sep and kind in ("user", "serviceAccount", "group") and _EMAIL_RE.match(rest):
        return f"{kind}:{rest.lower()}"
    if sep and kind == "domain" and _DOMAIN_RE.match(rest.lower()):
        return f"domain:{rest.lower()}"
    if kind == "deleted" and _DELETED_RE.match(member):
        return member
    if member.startswith(("principal://", "principalSet://")) and len(member) > 16:
        federation.validate_member(member)  # a workload identity pool's members are checked to the letter
        return member
    raise InvalidArgument(f"Invalid member '{member}': use user:, serviceAccount:, group:, domain:, deleted:, "
                          "principal://, principalSet://, allUsers or allAuthenticatedUsers.",
                          field="policy.bindings.members")


def _parse_condition(raw: object) -> Condition | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidArgument("Invalid value at 'policy.bindings.condition': expected an object.",
                              field="policy.bindings.condition")
    check_fields(raw, CONDITION_FIELDS, "policy.bindings.condition")
    expression = raw.get("expression")
    title = raw.get("title")
    # A value that is not text is refused as an empty one is, with the same message.
    expression = expression if isinstance(expression, str) else ""
    title = title if isinstance(title, str) else ""
    _check_condition_text(expression, title)
    description = raw.get("description") or ""
    location = raw.get("location") or ""
    if not isinstance(description, str) or not isinstance(location, str):
        raise InvalidArgument("Condition description and location must be strings.", field="policy.bindings.condition")
    compile_condition(expression)
    return Condition(expression, title, description, location)


def _check_condition_text(expression: str, title: str) -> None:
    if not expression.strip():
        raise InvalidArgument("A condition needs a non-empty expression.", field="policy.bindings.condition.expression")
    if not title.strip():
        raise InvalidArgument("A condition needs a title.", field="policy.bindings.condition.title")
    if len(title) > 100:
        raise InvalidArgument("A condition title must be at most 100 characters.",
                              field="policy.bindings.condition.title")


def _check_condition(condition: Condition) -> Condition:
    _check_condition_text(condition.expression, condition.title)
    compile_condition(condition.expression)
    return condition


def _check_role(role: str, known: Collection[str]) -> str:
    if not role:
        raise InvalidArgument("A binding needs a role.", field="policy.bindings.role")
    if role not in known:
        raise InvalidArgument(f"Role ({role}) does not exist in the resource's hierarchy.",
                              field="policy.bindings.role")
    return role


Merged = dict[tuple[str, Condition | None], set[str]]


def _add_binding(merged: Merged, version: int, role: str, condition: Condition | None, members: Iterable[object]
                 ) -> None:
    if condition is not None and version != 3:
        raise InvalidArgument(
            "Conditional role bindings require policy version 3; set \"version\": 3 in the policy.",
            field="policy.version",
        )
    merged.setdefault((role, condition), set()).update(validate_member(m) for m in members)


def _merged_bindings(merged: Merged) -> tuple[Binding, ...]:
    bindings = tuple(Binding(role, frozenset(ms), cond) for (role, cond), ms in merged.items() if ms)
    total = sum(len(b.members) for b in bindings)
    if total > MAX_MEMBERS:
        raise InvalidArgument(f"The policy has {total} principals; at most {MAX_MEMBERS} are allowed.",
                              field="policy.bindings.members")
    return bindings


def parse_policy(raw: object, *, known_roles: Iterable[str] | None = None) -> Policy:
    """Validate a Policy as sent to ``setIamPolicy`` as proto3 JSON; merges duplicate bindings and drops empty
    ones. The same rules as ``build_policy``, after the JSON's own form checks, in the same order."""
    if not isinstance(raw, Mapping):
        raise InvalidArgument("Invalid value at 'policy': expected an object.", field="policy")
    check_fields(raw, POLICY_FIELDS, "policy")
    version = parse_version(raw.get("version", 0), what="policy version", field="policy.version")
    raw_bindings = raw.get("bindings") or []
    if not isinstance(raw_bindings, list):
        raise InvalidArgument("Invalid value at 'policy.bindings': expected a list.", field="policy.bindings")
    roles_ok = set(known_roles) if known_roles is not None else set(roles.ROLES)
    merged: Merged = {}
    for rb in raw_bindings:
        if not isinstance(rb, Mapping):
            raise InvalidArgument("Invalid value at 'policy.bindings': expected objects.", field="policy.bindings")
        check_fields(rb, BINDING_FIELDS, "policy.bindings")
        role = rb.get("role")
        role = _check_role(role if isinstance(role, str) else "", roles_ok)
        members = rb.get("members") or []
        if not isinstance(members, list):
            raise InvalidArgument("Invalid value at 'policy.bindings.members': expected a list.",
                                  field="policy.bindings.members")
        _add_binding(merged, version, role, _parse_condition(rb.get("condition")), members)
    bindings = _merged_bindings(merged)
    etag = raw.get("etag")
    canonical = canonical_etag(etag) if isinstance(etag, str) else None
    if etag is not None and canonical is None:
        raise InvalidArgument(f"Invalid value at 'policy.etag' (TYPE_BYTES), {etag!r}: expected base64.",
                              field="policy.etag")
    return Policy(version=version, bindings=bindings, etag=canonical or "")


def build_policy(version: int, bindings: Iterable[tuple[str, Iterable[str], Condition | None]], etag: bytes
                 ) -> Policy:
    """Validate a Policy given as typed parts (a protobuf ``google.iam.v1.Policy``: each binding's role, members
    and condition as sent, the etag's bytes): ``parse_policy``'s rules in its order, without JSON's form checks."""
    checked = parse_version(version, what="policy version", field="policy.version")
    roles_ok = set(roles.ROLES)
    merged: Merged = {}
    for role, members, condition in bindings:
        role = _check_role(role, roles_ok)
        _add_binding(merged, checked, role, None if condition is None else _check_condition(condition), members)
    return Policy(version=checked, bindings=_merged_bindings(merged),
                  etag=base64.b64encode(etag).decode() if etag else "")


def load_stored_policy(raw: Mapping[str, Any], etag: str) -> Policy:
    """A policy as the store keeps it (already validated when it was written)."""
    bindings = []
    for rb in raw.get("bindings", ()):
        cond = rb.get("condition")
        bindings.append(Binding(rb["role"], frozenset(rb["members"]),
                                Condition(cond["expression"], cond.get("title", ""), cond.get("description", ""),
                                          cond.get("location", "")) if cond else None))
    return Policy(int(raw.get("version", 1)), tuple(bindings), etag)


def parse_version(raw: object, *, what: str, field: str) -> int:
    """A policy version, 0, 1 or 3: a JSON integer or a string of ASCII digits (proto3 JSON int32)."""
    version = int(raw) if isinstance(raw, str) and len(raw) <= 2 and is_ascii_digits(raw) else raw
    if isinstance(version, int) and not isinstance(version, bool) and version in VALID_VERSIONS:
        return version
    raise InvalidArgument(f"Invalid {what} {shown(raw)}: it must be 0, 1 or 3.", field=field)


def check_requested_version(policy: Policy, requested: int) -> None:
    if requested not in VALID_VERSIONS:
        raise InvalidArgument(f"Invalid requestedPolicyVersion {requested}: it must be 0, 1 or 3.",
                              field="options.requestedPolicyVersion")
    if policy.has_conditions and requested < 3:
        raise InvalidArgument(
            "The policy contains conditional role bindings; request it with options.requestedPolicyVersion 3.",
            field="options.requestedPolicyVersion",
        )


def apply_update_mask(current: Policy, new: Policy, mask: object) -> Policy:
    """``setIamPolicy`` updateMask as proto3 JSON writes it (a comma-separated string; default ``bindings,etag``)."""
    return apply_mask_fields(current, new, update_mask_fields(mask))


def update_mask_fields(mask: object) -> tuple[str, ...] | None:
    """The fields of a JSON ``updateMask``: None when there is none (None or ""), else its comma-separated names."""
    if mask is None or mask == "":
        return None
    if not isinstance(mask, str):
        raise InvalidArgument("updateMask must be a comma-separated string.", field="updateMask")
    return tuple(f.strip() for f in mask.split(",") if f.strip())


def apply_mask_fields(current: Policy, new: Policy, mask: tuple[str, ...] | None) -> Policy:
    """``setIamPolicy`` with the update mask's fields (None: no mask, the new policy replaces everything); only
    those fields are replaced."""
    if mask is None:
        return new
    fields = set(mask)
    unknown = fields - {"bindings", "etag", "version", "auditConfigs"}
    if unknown:
        raise InvalidArgument(f"Invalid updateMask field(s): {', '.join(sorted(unknown))}.", field="updateMask")
    bindings = new.bindings if "bindings" in fields else current.bindings
    version = new.version if ("version" in fields or "bindings" in fields) else current.version
    if any(b.condition is not None for b in bindings) and version != 3:
        version = 3
    return Policy(version, bindings, new.etag if "etag" in fields else "")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as the member strings a binding may name."""

    kind: str  # "user" | "serviceAccount" | "federated"
    email: str  # a federated principal's: its principal:// member
    groups: frozenset[str] = frozenset()
    federated: federation.FederatedIdentity | None = None  # a workload identity pool's subject

    @property
    def member(self) -> str:
        if self.federated is not None:
            return self.email
        return f"{self.kind}:{self.email}"

    def identities(self) -> frozenset[str]:
        if self.federated is not None:
            return self.federated.identities() | {f"group:{g}" for g in self.groups}
        ids = {self.member, "allUsers", "allAuthenticatedUsers"}
        if self.groups:
            ids.update(f"group:{g}" for g in self.groups)
        if self.kind == "user":
            ids.add(f"domain:{self.email.rpartition('@')[2]}")
        return frozenset(ids)

    @classmethod
    def of_federated(cls, identity: federation.FederatedIdentity) -> Principal:
        return cls("federated", identity.member, federated=identity)


def is_allowed(policies: Iterable[Policy], identities: frozenset[str], permission: str,
               ctx: RequestContext) -> bool:
    """True when any binding in any of the policies grants ``permission`` to one of ``identities``."""
    for policy in policies:
        for binding in policy.bindings:
            if permission not in roles.ROLES.get(binding.role, ()):
                continue
            if binding.members.isdisjoint(identities):
                continue
            if binding.condition is None:
                return True
            compiled = binding.compiled_condition()
            if compiled is not None and compiled.run(ctx).granted:
                return True
    return False


# ---------------------------------------------------------------- why a permission was denied
# Computed only on a denial, for the owner's audit log: a caller is never told (its 403 stays Google's).

MAX_ROLES_SHOWN = 6


@dataclass(frozen=True, slots=True)
class UnmetCondition:
    """A binding that names the principal, with a role that grants the permission, whose condition did not
    hold: it evaluated false (``error`` empty), or could not be evaluated (an error grants nothing)."""

    title: str
    role: str
    error: str = ""

    def describe(self) -> str:
        if self.error:
            return f"condition '{self.title}' could not be evaluated ({self.error})"
        return f"condition '{self.title}' evaluated false"

    def to_json(self) -> dict[str, str]:
        out = {"title": self.title, "role": self.role, "result": "error" if self.error else "false"}
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why ``is_allowed`` refused ``permission``: the conditional bindings that would have granted it, and the
    roles that grant it. ``granted`` when a binding grants it after all (the policy or the time changed between
    the check and the explanation)."""

    permission: str
    granted: bool
    unmet: tuple[UnmetCondition, ...]
    granting_roles: tuple[str, ...]

    @property
    def reason(self) -> str:
        if self.granted:
            return "GRANTED_ON_RECHECK"
        return "CONDITION_NOT_MET" if self.unmet else "NO_MATCHING_BINDING"

    def describe(self, member: str, resource: str) -> str:
        """One line for the owner; ``resource`` as the owner knows it (an account's email, a project's name)."""
        if self.granted:
            return (f"{member} holds {self.permission} on {resource} now (the policy or the time changed since "
                    "the request was refused)")
        if self.unmet:
            roles_named = ", ".join(dict.fromkeys(c.role for c in self.unmet))
            return (f"{'; '.join(c.describe() for c in self.unmet)} (the binding of {roles_named} that would grant "
                    f"{self.permission} to {member} on {resource})")
        if not self.granting_roles:
            would = "no role grants it"
        else:
            more = ", ..." if len(self.granting_roles) > MAX_ROLES_SHOWN else ""
            would = f"roles that would: {', '.join(self.granting_roles[:MAX_ROLES_SHOWN])}{more}"
        return f"no binding grants {self.permission} to {member} on {resource} ({would})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "permission": self.permission}
        if self.unmet:
            out["conditions"] = [c.to_json() for c in self.unmet]
        else:
            out["grantingRoles"] = list(self.granting_roles)
        return out


_BASIC_ROLES = ("roles/viewer", "roles/editor", "roles/owner")


def granting_roles(permission: str) -> tuple[str, ...]:
    """The roles that grant ``permission``: the predefined roles first, in the order the role table lists them
    (the usual grant for a task before rarer ones), then the basic roles, which grant much else besides."""
    order = [role for role in roles.ROLES if role not in _BASIC_ROLES] + list(_BASIC_ROLES)
    return tuple(role for role in order if permission in roles.ROLES.get(role, ()))


def explain(policies: Iterable[Policy], identities: frozenset[str], permission: str,
            ctx: RequestContext) -> Explanation:
    """Why ``is_allowed`` with the same arguments is False. It walks the bindings as ``is_allowed`` does, but
    all of them, and evaluates each condition that could have granted, to say how it did not."""
    unmet: list[UnmetCondition] = []
    for policy in policies:
        for binding in policy.bindings:
            if permission not in roles.ROLES.get(binding.role, ()) or binding.members.isdisjoint(identities):
                continue
            compiled = binding.compiled_condition()
            if compiled is None or binding.condition is None:
                return Explanation(permission, True, (), ())
            outcome = compiled.run(ctx)
            if outcome.granted:
                return Explanation(permission, True, (), ())
            unmet.append(UnmetCondition(binding.condition.title, binding.role, outcome.error))
    return Explanation(permission, False, tuple(unmet), granting_roles(permission))
