"""Delegation chains: which account must hold which permission on which, for a caller and its delegates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keyless.domain.names import EMAIL_RE, UNIQUE_ID_RE, AccountRef, parse_account_name
from keyless.domain.roles import PERM_IMPLICIT_DELEGATION
from keyless.errors import InvalidArgument

MAX_DELEGATES = 10


@dataclass(frozen=True, slots=True)
class Hop:
    """``grantee`` (None for the caller) needs ``permission`` on ``resource``."""

    grantee: AccountRef | None
    resource: AccountRef
    permission: str


def parse_delegates(raw: object, *, max_delegates: int | None = MAX_DELEGATES) -> tuple[AccountRef, ...]:
    """The ``delegates`` of a request, as names (``projects/-/serviceAccounts/X``) or bare emails and ids; with
    ``max_delegates``, at most that many."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidArgument("Invalid value at 'delegates': expected a list of strings.", field="delegates")
    if max_delegates is not None and len(raw) > max_delegates:
        raise InvalidArgument(f"Too many delegates: {len(raw)}; at most {max_delegates} are allowed.",
                              field="delegates")
    out = []
    for item in raw:
        if not isinstance(item, str):
            raise InvalidArgument("Invalid value at 'delegates': expected a list of strings.", field="delegates")
        if "/" not in item and (EMAIL_RE.match(item) or UNIQUE_ID_RE.match(item)):
            # google-auth documents bare account emails for `delegates` and sends them as given.
            item = f"projects/-/serviceAccounts/{item}"
        out.append(parse_account_name(item, field="delegates", require_wildcard=True))
    return tuple(out)


def plan_chain(delegates: Sequence[AccountRef], target: AccountRef, permission: str) -> list[Hop]:
    """The checks a chain needs, in order: caller to delegates[0], each delegate to the next, last to target."""
    chain = [*delegates, target]
    seen: set[str] = set()
    for ref in chain:
        key = ref.account.lower()
        if key in seen:
            raise InvalidArgument(f"The delegation chain contains '{ref.account}' more than once.", field="delegates")
        seen.add(key)
    hops: list[Hop] = []
    grantee: AccountRef | None = None
    for i, ref in enumerate(chain):
        hops.append(Hop(grantee, ref, permission if i == len(chain) - 1 else PERM_IMPLICIT_DELEGATION))
        grantee = ref
    return hops
