"""Resource names and identifiers: service-account emails, unique ids, key ids, account-id rules."""

from __future__ import annotations

import difflib
import functools
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from keyless.domain.numbers import is_ascii_digits
from keyless.errors import InvalidArgument

SA_DOMAIN = "iam.gserviceaccount.com"
ACCOUNT_ID_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")
PROJECT_ID_RE = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
UNIQUE_ID_RE = re.compile(r"^[0-9]{1,32}$")
EMAIL_RE = re.compile(r"^[^@\s/]+@[^@\s/]+$")


@dataclass(frozen=True, slots=True)
class AccountRef:
    """How a request names a service account: ``projects/{project|-}/serviceAccounts/{email|uniqueId}``."""

    project: str
    account: str

    @property
    def is_unique_id(self) -> bool:
        return is_ascii_digits(self.account)

    @property
    def wildcard(self) -> bool:
        return self.project == "-"

    @property
    def name(self) -> str:
        """The name as the request wrote it (what an answer to a caller may repeat)."""
        return f"projects/{self.project}/serviceAccounts/{self.account}"


@functools.lru_cache(maxsize=4096)  # every credential request parses its target's name; names repeat
def parse_account_name(name: str, *, field: str = "name", require_wildcard: bool = False) -> AccountRef:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "serviceAccounts" or not parts[1] or not parts[3]:
        raise InvalidArgument(
            f"Invalid form of {field}: '{name}'. It must be projects/-/serviceAccounts/{{ACCOUNT_EMAIL_OR_UNIQUEID}}"
            if require_wildcard
            else f"Invalid form of {field}: '{name}'. It must be projects/{{PROJECT}}/serviceAccounts/{{ACCOUNT}}",
            field=field,
        )
    if require_wildcard and parts[1] != "-":
        raise InvalidArgument(
            f"Invalid {field} '{name}': the project must be the '-' wildcard "
            "(projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}).",
            field=field,
        )
    account = parts[3]
    if not (UNIQUE_ID_RE.match(account) or EMAIL_RE.match(account)):
        raise InvalidArgument(f"Invalid service account identifier '{account}' in {field}.", field=field)
    return AccountRef(parts[1], account)


@dataclass(frozen=True, slots=True)
class KeyRef:
    """How a request names a service-account key: ``projects/{project|-}/serviceAccounts/{account}/keys/{keyId}``."""

    account: AccountRef
    key_id: str

    @property
    def name(self) -> str:
        """The name as the request wrote it (what an answer to a caller may repeat)."""
        return f"{self.account.name}/keys/{self.key_id}"


def parse_key_name(name: str) -> KeyRef:
    account_name, sep, key_id = name.rpartition("/keys/")
    if not sep or not key_id:
        raise InvalidArgument(f"Invalid key name '{name}'.", field="name")
    return KeyRef(parse_account_name(account_name), key_id)


def validate_account_id(account_id: object) -> str:
    if not isinstance(account_id, str) or not account_id:
        raise InvalidArgument("accountId is required.", field="account_id")
    if not (6 <= len(account_id) <= 30) or not ACCOUNT_ID_RE.match(account_id):
        raise InvalidArgument(
            f"Invalid account id '{account_id}': it must be 6 to 30 characters of lower-case letters, digits "
            "and hyphens, start with a letter and not end with a hyphen ([a-z]([-a-z0-9]*[a-z0-9])).",
            field="account_id",
        )
    return account_id


def validate_project_id(project_id: str) -> str:
    if not PROJECT_ID_RE.match(project_id):
        raise InvalidArgument(
            f"Invalid project id '{project_id}': 6 to 30 lower-case letters, digits or hyphens, starting with a "
            "letter.",
            field="project_id",
        )
    return project_id


def service_account_email(account_id: str, project_id: str) -> str:
    return f"{account_id}@{project_id}.{SA_DOMAIN}"


def new_unique_id() -> str:
    """A 21-digit numeric id, like Google's service-account unique ids (never reused: 69 random bits)."""
    return "1" + "".join(str(secrets.randbelow(10)) for _ in range(20))


def new_project_number() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def new_key_id() -> str:
    return secrets.token_hex(20)


def closest_email(email: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``email`` was most likely a typo of, or None when none is close. The part before the ``@``
    and the domain are compared apart: emails in one project share a long domain, which alone would make any
    two of them look alike. (A denial pays for this: the cheap upper bounds discard most candidates before the
    full comparison, and each distinct domain is compared once.)"""
    local, at, domain = email.lower().rpartition("@")
    if not at:
        return None
    by_local = difflib.SequenceMatcher(None, "", local)  # the second sequence is the one analysed once
    by_domain = difflib.SequenceMatcher(None, "", domain)
    domain_ratios: dict[str, float] = {}
    best, best_score = None, 0.0
    for candidate in candidates:
        other_local, _, other_domain = candidate.lower().rpartition("@")
        by_local.set_seq1(other_local)
        if by_local.real_quick_ratio() < 0.6 or by_local.quick_ratio() < 0.6:
            continue
        local_ratio = by_local.ratio()
        if local_ratio < 0.6:
            continue
        domain_ratio = domain_ratios.get(other_domain)
        if domain_ratio is None:
            by_domain.set_seq1(other_domain)
            domain_ratio = domain_ratios[other_domain] = by_domain.ratio()
        if domain_ratio >= 0.8 and local_ratio + domain_ratio > best_score:
            best, best_score = candidate, local_ratio + domain_ratio
    return best
