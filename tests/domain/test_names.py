"""Resource names: parse_account_name forms and the account-id rules of validate_account_id."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.domain.names import (
    AccountRef,
    new_key_id,
    new_unique_id,
    parse_account_name,
    service_account_email,
    validate_account_id,
)
from keyless.errors import InvalidArgument

EMAIL = "sa-one@proj-1.iam.gserviceaccount.com"


@pytest.mark.parametrize(("name", "expected"), [
    (f"projects/-/serviceAccounts/{EMAIL}", AccountRef("-", EMAIL)),
    (f"projects/proj-1/serviceAccounts/{EMAIL}", AccountRef("proj-1", EMAIL)),
    ("projects/-/serviceAccounts/108234567890123456789", AccountRef("-", "108234567890123456789")),
    ("projects/proj-1/serviceAccounts/1", AccountRef("proj-1", "1")),
    ("projects/-/serviceAccounts/someone@example.com", AccountRef("-", "someone@example.com")),
])
def test_valid_account_names(name: str, expected: AccountRef) -> None:
    assert parse_account_name(name) == expected


def test_account_ref_properties() -> None:
    assert AccountRef("-", "123").is_unique_id
    assert AccountRef("-", "123").wildcard
    assert not AccountRef("p", EMAIL).is_unique_id
    assert not AccountRef("p", EMAIL).wildcard


@pytest.mark.parametrize("name", [
    "", EMAIL, f"serviceAccounts/{EMAIL}", f"projects/-/{EMAIL}", f"projects//serviceAccounts/{EMAIL}",
    "projects/-/serviceAccounts/", f"project/-/serviceAccounts/{EMAIL}", f"projects/-/serviceaccounts/{EMAIL}",
    f"projects/-/serviceAccounts/{EMAIL}/keys/abc", f"/projects/-/serviceAccounts/{EMAIL}",
    f"projects/-/serviceAccounts/{EMAIL}/", "projects/-/serviceAccounts/not-an-email",
    "projects/-/serviceAccounts/a b@example.com", "projects/-/serviceAccounts/a@b@c",
    "projects/-/serviceAccounts/12345678901234567890123456789012345",
])
def test_malformed_account_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_account_name(name, field="name")
    assert info.value.field == "name"


def test_require_wildcard() -> None:
    assert parse_account_name(f"projects/-/serviceAccounts/{EMAIL}", require_wildcard=True).wildcard
    with pytest.raises(InvalidArgument) as info:
        parse_account_name(f"projects/proj-1/serviceAccounts/{EMAIL}", require_wildcard=True)
    assert "'-'" in info.value.message
    with pytest.raises(InvalidArgument):
        parse_account_name(EMAIL, require_wildcard=True)


@pytest.mark.parametrize("account_id", [
    "abcdef", "a12345", "my-service-account", "a" * 30, "a-b-c-d", "sa-1-2", "z00000",
])
def test_valid_account_ids(account_id: str) -> None:
    assert validate_account_id(account_id) == account_id


@pytest.mark.parametrize("account_id", [
    "abcde", "a" * 31, "Abcdef", "abcdeF", "1abcde", "-abcde", "abcde-", "abc_def", "abc.def", "abc def",
    "abcdé1", "", None, 123456, ["abcdef"],
])
def test_invalid_account_ids(account_id: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_account_id(account_id)
    assert info.value.field == "account_id"


def test_email_helper() -> None:
    assert service_account_email("sa-one", "proj-1") == EMAIL


def test_generated_ids() -> None:
    ids = {new_unique_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 21 and i.isdigit() and i[0] == "1" for i in ids)
    key = new_key_id()
    assert len(key) == 40 and all(c in "0123456789abcdef" for c in key)
