"""Workload identity federation, the pure rules: pool and provider names and fields, the ``principal://`` and
``principalSet://`` members a federated caller is, and how a provider's attribute mapping and condition turn an
external token's claims into that caller (CEL, on the evaluator and budget of IAM Conditions)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keyless.domain.conditions import compile_expression
from keyless.errors import InvalidArgument, OAuthError

IAM_HOST = "iam.googleapis.com"
ID_RE = re.compile(r"[a-z0-9-]{4,32}")
POOL_NAME_RE = re.compile(r"projects/([0-9]+)/locations/global/workloadIdentityPools/([a-z0-9-]{4,32})")
PROVIDER_NAME_RE = re.compile(POOL_NAME_RE.pattern + r"/providers/([a-z0-9-]{4,32})")
# The STS audience: the provider's full resource name, as "//iam.googleapis.com/..." or "https://iam.googleapis.com/...".
_AUDIENCE_RE = re.compile(r"(?:https:)?//iam\.googleapis\.com/(" + PROVIDER_NAME_RE.pattern + ")")
_MEMBER_RE = re.compile(r"(principal|principalSet)://iam\.googleapis\.com/(" + POOL_NAME_RE.pattern + r")/(.*)",
                        re.DOTALL)
_ATTRIBUTE_NAME_RE = re.compile(r"[a-z0-9_]{1,100}")
_MAPPING_KEY_RE = re.compile(r"google\.subject|google\.groups|google\.display_name|attribute\.[a-z0-9_]{1,100}")

MAX_DISPLAY_NAME = 32
MAX_DESCRIPTION = 256
MAX_SUBJECT_BYTES = 127
MAX_CUSTOM_ATTRIBUTES = 50
MAX_MAPPING_EXPRESSION = 2048
MAX_CONDITION_EXPRESSION = 4096
MAX_MAPPED_BYTES = 8192  # everything a mapping yields, together (Google's limit; it must fit in the access token)
MAX_AUDIENCES = 10
MAX_AUDIENCE_LENGTH = 256
UNDELETE_WINDOW = 30 * 86400
MAPPING_ROOTS = frozenset({"assertion"})
CONDITION_ROOTS = frozenset({"assertion", "google", "attribute"})
CONDITION_REFUSED = "The given credential is rejected by the attribute condition."


def check_id(value: object, what: str, field: str) -> str:
    """A pool or provider id: 4-32 characters of [a-z0-9-], not beginning with ``gcp-`` (Google's reserved)."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value) or value.startswith("gcp-"):
        raise InvalidArgument(
            f"Invalid {what} ID {str(value)[:64]!r}: it must be 4 to 32 characters of lowercase letters, digits and "
            "hyphens, and must not begin with 'gcp-'.", field=field)
    return value


def pool_name(project_number: str, pool_id: str) -> str:
    return f"projects/{project_number}/locations/global/workloadIdentityPools/{pool_id}"


def provider_name(pool: str, provider_id: str) -> str:
    return f"{pool}/providers/{provider_id}"


def pool_of(provider: str) -> str:
    """The pool's name in a provider's name."""
    return provider.rpartition("/providers/")[0]


def provider_of_audience(audience: str) -> str | None:
    """The provider an STS ``audience`` names (its full name), or None when it names none."""
    match = _AUDIENCE_RE.fullmatch(audience)
    return match.group(1) if match else None


def check_text(value: object, limit: int, field: str) -> str:
    """A display name or description: a string of at most ``limit`` characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"Invalid value at '{field}': expected a string.", field=field)
    if len(value) > limit:
        raise InvalidArgument(f"The {field} must be at most {limit} characters long.", field=field)
    return value


# ---------------------------------------------------------------- members

def validate_member(member: str) -> str | None:
    """A ``principal://`` or ``principalSet://`` member of a workload identity pool, checked; None when the member
    names no workload identity pool (workforce pools and other forms are left to the caller)."""
    match = _MEMBER_RE.fullmatch(member)
    if match is None:
        if member.startswith(("principal://iam.googleapis.com/projects/",
                              "principalSet://iam.googleapis.com/projects/")):
            raise _bad_member(member)
        return None
    kind, rest = match.group(1), match.group(5)
    if kind == "principal":
        subject = rest.removeprefix("subject/")
        if rest.startswith("subject/") and subject and len(subject.encode()) <= MAX_SUBJECT_BYTES:
            return member
    elif rest == "*":
        return member
    elif rest.startswith("group/") and len(rest) > len("group/"):
        return member
    elif rest.startswith("attribute."):
        name, sep, value = rest[len("attribute."):].partition("/")
        if sep and value and _ATTRIBUTE_NAME_RE.fullmatch(name):
            return member
    raise _bad_member(member)


def subject_of(member: str) -> tuple[str, str] | None:
    """The pool and subject a ``principal://…/subject/S`` member names (checked), or None for any other member."""
    match = _MEMBER_RE.fullmatch(member)
    if match is None or match.group(1) != "principal" or validate_member(member) is None:
        return None
    return match.group(2), match.group(5).removeprefix("subject/")


def _bad_member(member: str) -> InvalidArgument:
    return InvalidArgument(
        f"Invalid principal identifier '{member[:300]}': a workload identity pool's members are "
        "principal://iam.googleapis.com/POOL/subject/SUBJECT, principalSet://iam.googleapis.com/POOL/group/GROUP, "
        "principalSet://iam.googleapis.com/POOL/attribute.NAME/VALUE and principalSet://iam.googleapis.com/POOL/*.",
        field="policy.bindings.members")


@dataclass(frozen=True, slots=True)
class FederatedIdentity:
    """Who a federated token speaks for: a subject of a pool, through one of its providers, with the groups and
    attributes its provider's mapping gave it."""

    provider: str  # the provider's full name (its pool's is in it)
    subject: str
    groups: tuple[str, ...] = ()
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # name, values

    @property
    def pool(self) -> str:
        return pool_of(self.provider)

    @property
    def member(self) -> str:
        return f"principal://{IAM_HOST}/{self.pool}/subject/{self.subject}"

    def identities(self) -> frozenset[str]:
        """Every member a binding may name that this identity is."""
        base = f"principalSet://{IAM_HOST}/{self.pool}"
        ids = {self.member, f"{base}/*", "allUsers", "allAuthenticatedUsers"}
        ids.update(f"{base}/group/{group}" for group in self.groups)
        ids.update(f"{base}/attribute.{name}/{value}" for name, values in self.attributes for value in values)
        return frozenset(ids)

    def to_json(self) -> dict[str, Any]:
        """What a token and an audit entry record of it."""
        out: dict[str, Any] = {"provider": self.provider, "subject": self.subject}
        if self.groups:
            out["groups"] = list(self.groups)
        if self.attributes:
            out["attributes"] = {name: list(values) for name, values in self.attributes}
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FederatedIdentity:
        attributes = raw.get("attributes") or {}
        return cls(str(raw["provider"]), str(raw["subject"]), tuple(raw.get("groups") or ()),
                   tuple((str(k), tuple(v)) for k, v in attributes.items()))


# ---------------------------------------------------------------- attribute mapping and condition

def check_attribute_mapping(raw: object, *, required: bool = True) -> dict[str, str]:
    """A provider's ``attributeMapping``: ``google.subject`` (required), ``google.groups``, ``google.display_name``
    and up to 50 ``attribute.NAME``, each a CEL expression over ``assertion``."""
    field = "workloadIdentityPoolProvider.attributeMapping"
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise InvalidArgument("The attribute mapping must map attribute names to CEL expressions (strings).",
                              field=field)
    for key, expression in raw.items():
        if not _MAPPING_KEY_RE.fullmatch(key):
            raise InvalidArgument(
                f"Invalid attribute mapping key '{key[:120]}': use google.subject, google.groups, "
                "google.display_name or attribute.NAME (NAME of at most 100 characters of [a-z0-9_]).", field=field)
        compile_expression(expression, MAPPING_ROOTS, f"{field}.{key}", MAX_MAPPING_EXPRESSION)
    if sum(1 for key in raw if key.startswith("attribute.")) > MAX_CUSTOM_ATTRIBUTES:
        raise InvalidArgument(f"At most {MAX_CUSTOM_ATTRIBUTES} custom attributes may be mapped.", field=field)
    if required and "google.subject" not in raw:
        raise InvalidArgument("The attribute mapping must map google.subject for an OIDC provider.", field=field)
    return dict(raw)


def check_attribute_condition(raw: object) -> str:
    """A provider's ``attributeCondition``: a CEL expression over ``assertion``, ``google`` and ``attribute``."""
    if raw is None or raw == "":
        return ""
    if not isinstance(raw, str):
        raise InvalidArgument("The attribute condition must be a string.",
                              field="workloadIdentityPoolProvider.attributeCondition")
    compile_expression(raw, CONDITION_ROOTS, "workloadIdentityPoolProvider.attributeCondition",
                       MAX_CONDITION_EXPRESSION)
    return raw


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise OAuthError("invalid_request", f"The mapped attribute {what} must be a string or a list of strings.")


# ---------------------------------------------------------------- a fast path for the common expressions
#
# Most mappings and conditions are a claim's path (``assertion.sub``, ``assertion['kubernetes.io'].namespace``) or
# one comparison of a path with string literals (``attribute.namespace == 'prod'``, ``assertion.ref in ['a', 'b']``,
# ``'admins' in google.groups``). Those are evaluated here directly, over the same inputs, when every step of the
# path is a map holding the key and the values are strings (lists of strings for ``in``): there CEL's answer is
# plain Python equality and membership. Anything else (another form, a missing claim, another type) goes to the CEL
# evaluator, so the answer is always CEL's; the fast path only skips its interpretation (a millisecond an exchange).

# Words that are never a field after a dot (literals and an operator); CEL's other reserved words are (cel-python
# reads ``assertion['kubernetes.io'].namespace`` as a field), and an expression was parsed by CEL when written.
_CEL_RESERVED = frozenset({"true", "false", "null", "in"})
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_STRING = r"'[^'\\\n\r]*'|\"[^\"\\\n\r]*\""
_STEP = rf"\.(?:{_IDENT})|\[\s*(?:{_STRING})\s*\]"
_PATH = rf"{_IDENT}(?:{_STEP})*"
_STEP_RE = re.compile(rf"\.({_IDENT})|\[\s*({_STRING})\s*\]")
_PATH_ONLY_RE = re.compile(rf"\s*({_PATH})\s*")
_COMPARE_RE = re.compile(rf"\s*({_PATH})\s*(==|!=)\s*({_STRING})\s*")
_IN_LIST_RE = re.compile(rf"\s*({_PATH})\s+in\s+\[\s*((?:{_STRING})(?:\s*,\s*(?:{_STRING}))*)\s*\]\s*")
_LITERAL_IN_RE = re.compile(rf"\s*({_STRING})\s+in\s+({_PATH})\s*")
_STRING_RE = re.compile(_STRING)
FALLBACK = object()  # the fast path cannot answer: ask CEL
FastPath = Callable[[Mapping[str, Any]], Any]


def _path(text: str, roots: frozenset[str]) -> tuple[str, tuple[str, ...]] | None:
    """(root, keys) of a path over one of ``roots``, or None when it is not a plain path."""
    root = text[:len(text) - len(text.lstrip("_" + _ALNUM))]  # the leading identifier (the caller matched _PATH)
    if root not in roots or root in _CEL_RESERVED:
        return None
    keys = []
    for ident, literal in _STEP_RE.findall(text[len(root):]):
        if ident:
            if ident in _CEL_RESERVED:
                return None
            keys.append(ident)
        else:
            keys.append(literal[1:-1])
    return root, tuple(keys)


def _resolve(inputs: Mapping[str, Any], path: tuple[str, tuple[str, ...]]) -> Any:
    value: Any = inputs
    for key in (path[0], *path[1]):
        if not isinstance(value, Mapping) or key not in value:
            return FALLBACK
        value = value[key]
    return value


def _form(expression: str, roots: frozenset[str]) -> tuple[str, tuple[str, tuple[str, ...]], Any] | None:
    """(kind, path, literal or options) of an expression of a fast form, or None."""
    form: tuple[str, str, Any] | None = None
    if match := _PATH_ONLY_RE.fullmatch(expression):
        form = ("claim", match[1], None)
    elif match := _COMPARE_RE.fullmatch(expression):
        form = ("==" if match[2] == "==" else "!=", match[1], match[3][1:-1])
    elif match := _IN_LIST_RE.fullmatch(expression):
        form = ("one of", match[1], frozenset(s[1:-1] for s in _STRING_RE.findall(match[2])))
    elif match := _LITERAL_IN_RE.fullmatch(expression):
        form = ("member", match[2], match[1][1:-1])
    path = _path(form[1], roots) if form is not None else None
    return (form[0], path, form[2]) if form is not None and path is not None else None


@functools.lru_cache(maxsize=4096)
def fast_path(expression: str, roots: frozenset[str]) -> FastPath | None:
    """An evaluator of ``expression`` for the forms above (it answers FALLBACK where it cannot), or None."""
    form = _form(expression, roots)
    if form is None:
        return None
    kind, path, operand = form

    def answer(inputs: Mapping[str, Any]) -> Any:
        value = _resolve(inputs, path)
        if kind == "member":
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return operand in value
            return FALLBACK
        if not isinstance(value, str):
            return FALLBACK
        if kind == "claim":
            return value
        if kind == "one of":
            return value in operand
        return (value == operand) is (kind == "==")
    return answer


def evaluate(expression: str, roots: frozenset[str], field: str, max_length: int, inputs: dict[str, Any]
             ) -> tuple[Any, str]:
    """The value of a mapping or condition expression over ``inputs``, as ``CompiledCondition.value`` gives it:
    by the fast path when it answers, else by CEL."""
    fast = fast_path(expression, roots)
    if fast is not None:
        value = fast(inputs)
        if value is not FALLBACK:
            return value, ""
    return compile_expression(expression, roots, field, max_length).value(inputs)


def map_assertion(provider: str, mapping: Mapping[str, str], assertion: Mapping[str, Any]) -> FederatedIdentity:
    """The identity a provider's mapping makes of an external token's claims (already verified); an
    ``OAuthError`` as Google's STS answers when it cannot."""
    google: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for key, expression in mapping.items():
        value, error = evaluate(expression, MAPPING_ROOTS, key, MAX_MAPPING_EXPRESSION, {"assertion": assertion})
        if error or value is None:
            # A claim the expression reads is missing: the attribute is left unmapped (google.subject is then
            # missing, and refused below).
            continue
        target, _, name = key.partition(".")
        (google if target == "google" else attributes)[name] = value
    subject = google.get("subject")
    if not isinstance(subject, str) or not subject:
        raise OAuthError("invalid_request", "The mapped attribute google.subject is missing or is not a string.")
    if len(subject.encode()) > MAX_SUBJECT_BYTES:
        raise OAuthError("invalid_request",
                         f"The size of mapped attribute google.subject exceeds the {MAX_SUBJECT_BYTES} bytes limit. "
                         "Either provide a shorter value or map another attribute to google.subject.")
    groups = _strings(google["groups"], "google.groups") if "groups" in google else ()
    mapped = tuple(sorted((name, _strings(value, f"attribute.{name}")) for name, value in attributes.items()))
    if sum(len(s.encode()) for s in (subject, *groups, *(v for _, vs in mapped for v in vs))) > MAX_MAPPED_BYTES:
        raise OAuthError("invalid_request",
                         f"The mapped attributes exceed the total size limit of {MAX_MAPPED_BYTES} bytes.")
    return FederatedIdentity(provider, subject, groups, mapped)


def check_condition(condition: str, identity: FederatedIdentity, assertion: Mapping[str, Any]) -> None:
    """Refuse (``unauthorized_client``, Google's text) unless the provider's attribute condition holds for the
    identity and its token's claims. An attribute of one value is a string to the condition, of several a list;
    an error (a missing claim) is false."""
    if not condition:
        return
    attributes = {name: values[0] if len(values) == 1 else list(values) for name, values in identity.attributes}
    value, error = evaluate(condition, CONDITION_ROOTS, "attributeCondition", MAX_CONDITION_EXPRESSION,
                            {"assertion": assertion, "google": {"subject": identity.subject,
                                                                "groups": list(identity.groups)},
                             "attribute": attributes})
    if error or value is not True:
        raise OAuthError("unauthorized_client", CONDITION_REFUSED)
