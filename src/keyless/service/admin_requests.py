"""The typed requests and results of the IAM admin operations: service accounts, their keys, their allow policies.

A wire adapter (REST's JSON in ``keyless.http.service_accounts``, gRPC's messages in ``keyless.grpc.admin``) parses
its format into one of these requests, calls the core (``keyless.service.accounts.Accounts``,
``keyless.service.policies.Policies``) and renders what it gets back with ``keyless.service.shapes``. What an
adapter has checked is the form (a string, an object, base64, an enum by name, no unknown JSON field); what the
core checks is the substance (the account id's rules, field limits, the update mask's fields, quotas, org-policy
constraints, permissions, etags), in the order it always has.

Operations that name only a resource (get, delete, enable, disable, undelete an account; get, delete, enable,
disable a key) take its parsed name as their request: ``AccountRef`` or ``KeyRef`` (``keyless.domain.names``). The
results are the records the store keeps (``ServiceAccount``, ``KeyRecord``) and the domain's ``Policy``.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyless.domain.names import AccountRef
from keyless.domain.policy import Policy
from keyless.storage.base import KeyRecord, ServiceAccount

# ---------------------------------------------------------------- service accounts


@dataclass(frozen=True, slots=True)
class CreateServiceAccountRequest:
    project: str  # as the request named it (the id or the number)
    account_id: str  # as sent ("" when absent): its rules are the core's
    display_name: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class ListServiceAccountsRequest:
    project: str
    page_size: int | None = None  # None asks for the default
    page_token: str = ""  # the core's own token, read by the core


@dataclass(frozen=True, slots=True)
class ServiceAccountPage:
    accounts: tuple[ServiceAccount, ...]
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class PatchServiceAccountRequest:
    account: AccountRef
    display_name: str = ""
    description: str = ""
    # The fields to change, as sent (camelCase or snake_case); which may change is the core's rule.
    update_mask: tuple[str, ...] = ()


# ---------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class ListKeysRequest:
    account: AccountRef
    key_types: tuple[str, ...] = ()  # enum names as sent (a number no name has, as its digits); none: all


@dataclass(frozen=True, slots=True)
class AccountKeys:
    account: ServiceAccount
    keys: tuple[KeyRecord, ...]


@dataclass(frozen=True, slots=True)
class AccountKey:
    account: ServiceAccount
    key: KeyRecord


@dataclass(frozen=True, slots=True)
class CreateKeyRequest:
    account: AccountRef
    private_key_type: str = ""  # enum names as sent; "" asks for the default
    key_algorithm: str = ""


@dataclass(frozen=True, slots=True)
class CreatedKey:
    account: ServiceAccount
    key: KeyRecord
    private_key_pem: bytes  # goes to the caller once, in the key file, and is never stored in the clear


@dataclass(frozen=True, slots=True)
class UploadKeyRequest:
    account: AccountRef
    public_key_data: bytes  # the PEM of an X.509 certificate, as sent (b"" when absent)


# ---------------------------------------------------------------- allow policies of service accounts


@dataclass(frozen=True, slots=True)
class GetIamPolicyRequest:
    account: AccountRef
    requested_version: int = 0  # 0, 1 or 3 (the adapter has refused any other)


@dataclass(frozen=True, slots=True)
class SetIamPolicyRequest:
    account: AccountRef
    policy: Policy  # parsed once by the adapter, with the domain's rules (roles, members, conditions)
    update_mask: tuple[str, ...] | None = None  # None: no mask, the policy replaces everything


@dataclass(frozen=True, slots=True)
class TestIamPermissionsRequest:
    __test__ = False  # not a pytest class, whatever its name

    account: AccountRef
    permissions: tuple[str, ...] = ()
