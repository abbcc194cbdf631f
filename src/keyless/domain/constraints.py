"""The organization-policy constraints keyless emulates: their catalogue, the checks a policy's spec must pass,
the Resource Manager v1 and Org Policy v2 views of one stored spec, and the effective policy.

A policy is stored once, as Org Policy v2's ``spec`` (``rules``, ``inheritFromParent``, ``reset``); the v1
``OrgPolicy`` (``listPolicy``/``booleanPolicy``/``restoreDefault``) is another view of it. Rules carry no
conditions (keyless has no tags).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyless.domain.fields import check_fields
from keyless.domain.lifetimes import LIFETIME_EXTENSION_CONSTRAINT
from keyless.errors import InvalidArgument

BOOLEAN = "boolean"
LIST = "list"
KEY_CREATION_CONSTRAINT = "constraints/iam.disableServiceAccountKeyCreation"
KEY_UPLOAD_CONSTRAINT = "constraints/iam.disableServiceAccountKeyUpload"
KEY_EXPIRY_CONSTRAINT = "constraints/iam.serviceAccountKeyExpiryHours"
KEY_EXPIRY_VALUES = ("1h", "8h", "24h", "168h", "336h", "720h", "1440h", "2160h")
MAX_RULES = 10
MAX_VALUES = 500  # allowed plus denied values of one policy
MAX_VALUE_LENGTH = 1024
SPEC_FIELDS = ("etag", "updateTime", "rules", "inheritFromParent", "reset")
RULE_FIELDS = ("values", "allowAll", "denyAll", "enforce", "condition", "parameters")
VALUES_FIELDS = ("allowedValues", "deniedValues")
V1_FIELDS = ("version", "constraint", "etag", "updateTime", "listPolicy", "booleanPolicy", "restoreDefault")
V1_LIST_FIELDS = ("allowedValues", "deniedValues", "allValues", "suggestedValue", "inheritFromParent")


@dataclass(frozen=True, slots=True)
class Constraint:
    name: str  # constraints/...
    display_name: str
    description: str
    kind: str  # BOOLEAN or LIST
    default: str  # constraintDefault: what applies where no policy is set, "ALLOW" or "DENY"
    values: tuple[str, ...] = ()  # the only values a policy may name (empty: any)
    one_value: bool = False  # a policy names exactly one allowed value and no denied ones

    @property
    def short(self) -> str:
        return self.name.removeprefix("constraints/")


CONSTRAINTS: dict[str, Constraint] = {c.name: c for c in (
    Constraint(
        LIFETIME_EXTENSION_CONSTRAINT, "Allow extending lifetime of OAuth 2.0 access tokens to up to 12 hours",
        "This list constraint, when enforced, allows extending the lifetime of OAuth 2.0 access tokens to up to 12 "
        "hours for the service accounts listed as allowed values (their email addresses).", LIST, "DENY"),
    Constraint(
        KEY_CREATION_CONSTRAINT, "Disable service account key creation",
        "This boolean constraint disables the creation of service account external keys where this constraint is "
        "set to `True`. By default, service account key creation is allowed based on IAM roles and permissions.",
        BOOLEAN, "ALLOW"),
    Constraint(
        KEY_UPLOAD_CONSTRAINT, "Disable Service Account Key Upload",
        "This boolean constraint disables the feature that allows uploading public keys to service accounts where "
        "this constraint is set to `True`. By default, users can upload public keys to service accounts based on "
        "their IAM roles and permissions.", BOOLEAN, "ALLOW"),
    Constraint(
        KEY_EXPIRY_CONSTRAINT, "Service account key expiry duration in hours",
        "This list constraint defines the maximum duration allowed for service account key expiry. By default, "
        "created keys never expire. The duration is one of " + ", ".join(KEY_EXPIRY_VALUES) + "; exactly one "
        "allowed value can be specified, and denied values are not supported.", LIST, "ALLOW",
        values=KEY_EXPIRY_VALUES, one_value=True),
)}


def constraint_named(name: object, *, field: str = "constraint") -> Constraint:
    """The constraint ``name`` (``constraints/iam.x`` or ``iam.x``) names; 400 for one keyless does not emulate."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{field} is required.", field=field)
    full = name if name.startswith("constraints/") else f"constraints/{name}"
    found = CONSTRAINTS.get(full)
    if found is None:
        raise InvalidArgument(f"Constraint {full} is not supported; keyless emulates "
                              f"{', '.join(sorted(CONSTRAINTS))}.", field=field)
    return found


# ------------------------------------------------------------------ parsing a v2 spec


def _bool(value: object, wire: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidArgument(f"Invalid value at '{wire}' (TYPE_BOOL), {value!r}", field=wire)
    return value


def _strings(value: object, wire: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{wire} must be a list of strings.", field=wire)
    for item in value:
        if not item or len(item) > MAX_VALUE_LENGTH:
            raise InvalidArgument(f"Each of {wire} must be a non-empty string of at most {MAX_VALUE_LENGTH} "
                                  "characters.", field=wire)
    return list(dict.fromkeys(value))


def _rule(constraint: Constraint, rule: object, wire: str) -> dict[str, Any]:
    if not isinstance(rule, Mapping):
        raise InvalidArgument("Each rule must be an object.", field=wire)
    check_fields(rule, RULE_FIELDS, wire)
    for unsupported in ("condition", "parameters"):
        if rule.get(unsupported) not in (None, {}):
            raise InvalidArgument(f"{wire}.{unsupported} is not supported by keyless (it has no tags).",
                                  field=f"{wire}.{unsupported}")
    allow_all = _bool(rule.get("allowAll"), f"{wire}.allowAll")
    deny_all = _bool(rule.get("denyAll"), f"{wire}.denyAll")
    values = rule.get("values")
    if constraint.kind == BOOLEAN:
        if allow_all or deny_all or values is not None or not isinstance(rule.get("enforce"), bool):
            raise InvalidArgument(f"{constraint.name} is a boolean constraint: its rule sets enforce (true or "
                                  "false) and nothing else.", field=wire)
        return {"enforce": rule["enforce"]}
    if rule.get("enforce") is not None:
        raise InvalidArgument(f"{constraint.name} is a list constraint: enforce applies to boolean constraints "
                              "only.", field=f"{wire}.enforce")
    if allow_all + deny_all + (values is not None) != 1:
        raise InvalidArgument("Each rule sets exactly one of values, allowAll or denyAll.", field=wire)
    if allow_all:
        return {"allowAll": True}
    if deny_all:
        return {"denyAll": True}
    if not isinstance(values, Mapping):
        raise InvalidArgument(f"Invalid value at '{wire}.values': expected an object.", field=f"{wire}.values")
    check_fields(values, VALUES_FIELDS, f"{wire}.values")
    allowed = _strings(values.get("allowedValues"), f"{wire}.values.allowedValues")
    denied = _strings(values.get("deniedValues"), f"{wire}.values.deniedValues")
    if not allowed and not denied:
        raise InvalidArgument("values names no allowed or denied value.", field=f"{wire}.values")
    clean: dict[str, list[str]] = {}
    if allowed:
        clean["allowedValues"] = allowed
    if denied:
        clean["deniedValues"] = denied
    return {"values": clean}


def parse_spec(constraint: Constraint, spec: object, *, wire: str = "policy.spec") -> dict[str, Any]:
    """The stored form of a v2 ``spec`` for ``constraint``, or 400 naming what is wrong (nothing is stored)."""
    if not isinstance(spec, Mapping):
        raise InvalidArgument(f"{wire} is required.", field=wire)
    check_fields(spec, SPEC_FIELDS, wire)
    reset = _bool(spec.get("reset"), f"{wire}.reset")
    inherit = _bool(spec.get("inheritFromParent"), f"{wire}.inheritFromParent")
    raw_rules = spec.get("rules")
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        raise InvalidArgument(f"{wire}.rules must be a list.", field=f"{wire}.rules")
    if reset:
        if raw_rules or inherit:
            raise InvalidArgument("A spec that sets reset has no rules and does not set inheritFromParent.",
                                  field=f"{wire}.reset")
        return {"rules": [], "reset": True}
    if inherit and constraint.kind == BOOLEAN:
        raise InvalidArgument("inheritFromParent applies to list constraints only.",
                              field=f"{wire}.inheritFromParent")
    if not raw_rules and not inherit:
        raise InvalidArgument(f"{wire}.rules must be a non-empty list.", field=f"{wire}.rules")
    if len(raw_rules) > MAX_RULES:
        raise InvalidArgument(f"A spec has at most {MAX_RULES} rules.", field=f"{wire}.rules")
    rules = [_rule(constraint, rule, f"{wire}.rules") for rule in raw_rules]
    if constraint.kind == BOOLEAN and len(rules) != 1:
        raise InvalidArgument(f"{constraint.name} is a boolean constraint: its spec has exactly one rule.",
                              field=f"{wire}.rules")
    if len(rules) > 1 and any("values" not in rule for rule in rules):
        raise InvalidArgument("A rule that sets allowAll or denyAll must be the only rule.", field=f"{wire}.rules")
    _check_values(constraint, rules, f"{wire}.rules")
    out: dict[str, Any] = {"rules": rules}
    if inherit:
        out["inheritFromParent"] = True
    return out


def _check_values(constraint: Constraint, rules: Sequence[Mapping[str, Any]], wire: str) -> None:
    allowed = [v for rule in rules for v in rule.get("values", {}).get("allowedValues", ())]
    denied = [v for rule in rules for v in rule.get("values", {}).get("deniedValues", ())]
    if len(allowed) + len(denied) > MAX_VALUES:
        raise InvalidArgument(f"A policy names at most {MAX_VALUES} values.", field=wire)
    if constraint.values:
        for value in (*allowed, *denied):
            if value not in constraint.values:
                raise InvalidArgument(f"Value '{value}' is not valid for {constraint.name}: use one of "
                                      f"{', '.join(constraint.values)}.", field=wire)
    if constraint.one_value and (denied or any(rule.get("denyAll") for rule in rules)
                                 or (not any(rule.get("allowAll") for rule in rules) and len(allowed) != 1)):
        raise InvalidArgument(f"{constraint.name} takes exactly one allowed value (or allowAll), and no denied "
                              "values.", field=wire)


# ------------------------------------------------------------------ the v1 view


def spec_from_v1(constraint: Constraint, policy: Mapping[str, Any], *, wire: str = "policy") -> dict[str, Any]:
    """The stored spec of a Resource Manager v1 ``OrgPolicy``."""
    check_fields(policy, V1_FIELDS, wire)
    kinds = [k for k in ("listPolicy", "booleanPolicy", "restoreDefault") if policy.get(k) is not None]
    if len(kinds) != 1:
        raise InvalidArgument("The policy sets exactly one of listPolicy, booleanPolicy or restoreDefault.",
                              field=wire)
    kind = kinds[0]
    body = policy[kind]
    if not isinstance(body, Mapping):
        raise InvalidArgument(f"Invalid value at '{wire}.{kind}': expected an object.", field=f"{wire}.{kind}")
    if kind == "restoreDefault":
        check_fields(body, (), f"{wire}.restoreDefault")
        return {"rules": [], "reset": True}
    if kind == "booleanPolicy":
        if constraint.kind != BOOLEAN:
            raise InvalidArgument(f"{constraint.name} is a list constraint: set listPolicy.", field=wire)
        check_fields(body, ("enforced",), f"{wire}.booleanPolicy")
        return parse_spec(constraint, {"rules": [{"enforce": _bool(body.get("enforced"),
                                                                    f"{wire}.booleanPolicy.enforced")}]})
    if constraint.kind != LIST:
        raise InvalidArgument(f"{constraint.name} is a boolean constraint: set booleanPolicy.", field=wire)
    check_fields(body, V1_LIST_FIELDS, f"{wire}.listPolicy")
    all_values = body.get("allValues") or "ALL_VALUES_UNSPECIFIED"
    allowed = _strings(body.get("allowedValues"), f"{wire}.listPolicy.allowedValues")
    denied = _strings(body.get("deniedValues"), f"{wire}.listPolicy.deniedValues")
    inherit = _bool(body.get("inheritFromParent"), f"{wire}.listPolicy.inheritFromParent")
    if all_values not in ("ALL_VALUES_UNSPECIFIED", "ALLOW", "DENY"):
        raise InvalidArgument(f"Invalid value at '{wire}.listPolicy.allValues', {all_values!r}",
                              field=f"{wire}.listPolicy.allValues")
    rules: list[dict[str, Any]] = []
    if all_values != "ALL_VALUES_UNSPECIFIED":
        if allowed or denied:
            raise InvalidArgument("allValues cannot be set with allowedValues or deniedValues.",
                                  field=f"{wire}.listPolicy")
        rules.append({"allowAll": True} if all_values == "ALLOW" else {"denyAll": True})
    elif allowed or denied:
        values: dict[str, list[str]] = {}
        if allowed:
            values["allowedValues"] = allowed
        if denied:
            values["deniedValues"] = denied
        rules.append({"values": values})
    return parse_spec(constraint, {"rules": rules, "inheritFromParent": inherit})


def v1_view(constraint: Constraint, spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The policy-type fields of a v1 ``OrgPolicy`` for a stored spec (None: the constraint's default)."""
    if spec is None:
        return {"booleanPolicy": {}} if constraint.kind == BOOLEAN else {"listPolicy": {}}
    if spec.get("reset"):
        return {"restoreDefault": {}}
    rules = spec.get("rules", [])
    if constraint.kind == BOOLEAN:
        return {"booleanPolicy": {"enforced": True} if boolean_enforced(spec) else {}}
    listed: dict[str, Any] = {}
    if any(rule.get("allowAll") for rule in rules):
        listed["allValues"] = "ALLOW"
    elif any(rule.get("denyAll") for rule in rules):
        listed["allValues"] = "DENY"
    else:
        for key in VALUES_FIELDS:
            merged = _merged(rules, key)
            if merged:
                listed[key] = merged
    if spec.get("inheritFromParent"):
        listed["inheritFromParent"] = True
    return {"listPolicy": listed}


def _merged(rules: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    return list(dict.fromkeys(v for rule in rules for v in rule.get("values", {}).get(key, ())))


# ------------------------------------------------------------------ the effective policy


def effective_spec(constraint: Constraint, organization: Mapping[str, Any] | None,
                   project: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The spec in force on a project: its own, else the organization's, else None (the constraint's default). A
    ``reset`` spec restores the default; a list spec with ``inheritFromParent`` adds its rules to its parent's."""
    current: dict[str, Any] | None = None
    for spec in (organization, project):
        if spec is None:
            continue
        if spec.get("reset"):
            current = None
        elif constraint.kind == LIST and spec.get("inheritFromParent") and current is not None:
            current = {"rules": _combined([*current["rules"], *spec.get("rules", [])])}
        else:
            current = {"rules": list(spec.get("rules", []))}
            if not current["rules"]:  # inherits from a parent that sets nothing: the default
                current = None
    return current


def _combined(rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One rule list for a parent's and a child's rules: an allowAll or denyAll among them decides (deny first)."""
    if any(rule.get("denyAll") for rule in rules):
        return [{"denyAll": True}]
    if any(rule.get("allowAll") for rule in rules):
        return [{"allowAll": True}]
    values = {key: merged for key in VALUES_FIELDS if (merged := _merged(rules, key))}
    return [{"values": values}] if values else []


def default_rules(constraint: Constraint) -> list[dict[str, Any]]:
    """The v2 rules that state the constraint's default."""
    if constraint.kind == BOOLEAN:
        return [{"enforce": constraint.default == "DENY"}]
    return [{"allowAll": True}] if constraint.default == "ALLOW" else [{"denyAll": True}]


def boolean_enforced(spec: Mapping[str, Any] | None) -> bool:
    return spec is not None and any(rule.get("enforce") is True for rule in spec.get("rules", ()))


def list_allows(constraint: Constraint, spec: Mapping[str, Any] | None, candidates: Sequence[str]) -> bool:
    """Whether an effective list spec allows a value (any of ``candidates``, the forms one value may be named in)."""
    rules = spec.get("rules", []) if spec is not None else []
    if not rules:
        return constraint.default == "ALLOW"
    if any(rule.get("denyAll") for rule in rules):
        return False
    denied = set(_merged(rules, "deniedValues"))
    if any(c in denied for c in candidates):
        return False
    if any(rule.get("allowAll") for rule in rules):
        return True
    allowed = set(_merged(rules, "allowedValues"))
    if allowed:
        return any(c in allowed for c in candidates)
    return True  # only denied values are listed, and this is not one of them


def key_expiry_seconds(spec: Mapping[str, Any] | None) -> int | None:
    """The longest a new user-managed key may live under an effective ``iam.serviceAccountKeyExpiryHours`` spec
    (None: keys never expire). Of several allowed values the shortest applies."""
    rules = spec.get("rules", []) if spec is not None else []
    if any(rule.get("allowAll") for rule in rules):
        return None
    hours = [int(v[:-1]) for v in _merged(rules, "allowedValues") if v in KEY_EXPIRY_VALUES]
    return min(hours) * 3600 if hours else None
