"""Delegation chains: parse_delegates validation and the hops plan_chain asks the service to check."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.domain.delegation import MAX_DELEGATES, Hop, parse_delegates, plan_chain
from keyless.domain.names import AccountRef
from keyless.domain.roles import PERM_GET_ACCESS_TOKEN, PERM_IMPLICIT_DELEGATION, PERM_SIGN_BLOB
from keyless.errors import InvalidArgument


def sa(n: int) -> str:
    return f"projects/-/serviceAccounts/sa-{n}@proj-1.iam.gserviceaccount.com"


def ref(n: int) -> AccountRef:
    return AccountRef("-", f"sa-{n}@proj-1.iam.gserviceaccount.com")


TARGET = AccountRef("-", "target@proj-1.iam.gserviceaccount.com")


# ---------------------------------------------------------------- parse_delegates


@pytest.mark.parametrize("raw", [None, []])
def test_no_delegates(raw: Any) -> None:
    assert parse_delegates(raw) == ()


def test_delegates_keep_their_order() -> None:
    assert parse_delegates([sa(3), sa(1), "projects/-/serviceAccounts/1234567890"]) == (
        ref(3), ref(1), AccountRef("-", "1234567890"))


def test_ten_delegates_are_allowed_eleven_are_not() -> None:
    assert len(parse_delegates([sa(i) for i in range(MAX_DELEGATES)])) == MAX_DELEGATES
    with pytest.raises(InvalidArgument) as info:
        parse_delegates([sa(i) for i in range(MAX_DELEGATES + 1)])
    assert info.value.field == "delegates"


def test_custom_limit() -> None:
    with pytest.raises(InvalidArgument):
        parse_delegates([sa(1), sa(2)], max_delegates=1)


@pytest.mark.parametrize("raw", [
    "projects/-/serviceAccounts/a@b.com", {"a": 1}, 5, [5], [None], [["projects/-/serviceAccounts/a@b.com"]],
])
def test_delegates_must_be_a_list_of_strings(raw: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_delegates(raw)
    assert info.value.field == "delegates"


@pytest.mark.parametrize("item", [
    "projects/proj-1/serviceAccounts/sa-1@proj-1.iam.gserviceaccount.com",
    "projects/_/serviceAccounts/sa-1@proj-1.iam.gserviceaccount.com",
])
def test_delegates_need_the_dash_project(item: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_delegates([item])
    assert "'-'" in info.value.message


@pytest.mark.parametrize("item", [
    "", "projects/-/serviceAccounts/", "projects/-/serviceAccounts/not an id",
    "projects/-/sa/sa-1@proj-1.iam.gserviceaccount.com", "projects/-/serviceAccounts/a@b.com/keys/x",
])
def test_malformed_delegates_are_rejected(item: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_delegates([item])


def test_bare_emails_and_ids_mean_the_dash_project() -> None:
    """google-auth sends ``delegates`` as given, often bare emails: they name projects/-/serviceAccounts/X."""
    assert parse_delegates(["sa-1@proj-1.iam.gserviceaccount.com", "1234567890"]) == (
        ref(1), AccountRef("-", "1234567890"))


@pytest.mark.parametrize("item", ["not-an-email", "a b@example.com", "sa-1@proj-1/x", "12ab"])
def test_bare_garbage_is_still_rejected(item: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_delegates([item])


# ---------------------------------------------------------------- plan_chain


def test_no_delegates_is_one_hop() -> None:
    assert plan_chain([], TARGET, PERM_GET_ACCESS_TOKEN) == [Hop(None, TARGET, PERM_GET_ACCESS_TOKEN)]


def test_hops_run_caller_to_delegates_to_target() -> None:
    hops = plan_chain([ref(1), ref(2), ref(3)], TARGET, PERM_SIGN_BLOB)
    assert hops == [
        Hop(None, ref(1), PERM_IMPLICIT_DELEGATION),
        Hop(ref(1), ref(2), PERM_IMPLICIT_DELEGATION),
        Hop(ref(2), ref(3), PERM_IMPLICIT_DELEGATION),
        Hop(ref(3), TARGET, PERM_SIGN_BLOB),
    ]


@pytest.mark.parametrize("delegates", [
    [TARGET],
    [ref(1), TARGET],
    [ref(1), ref(1)],
    [ref(1), ref(2), ref(1)],
    [ref(1), AccountRef("-", "SA-1@proj-1.iam.gserviceaccount.com")],
    [AccountRef("-", "TARGET@proj-1.iam.gserviceaccount.com")],
    [AccountRef("-", "123"), AccountRef("-", "123")],
])
def test_loops_are_rejected(delegates: list[AccountRef]) -> None:
    with pytest.raises(InvalidArgument) as info:
        plan_chain(delegates, TARGET, PERM_GET_ACCESS_TOKEN)
    assert info.value.field == "delegates"
