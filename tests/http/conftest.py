"""Fixtures of the in-process HTTP tests: ``api`` (the app on the frozen clock with an owner session)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.http.helpers import Api


@pytest.fixture
def api(inproc: Any) -> Iterator[Api]:
    client = Api(inproc)
    yield client
    client.client.close()


@pytest.fixture
def sa(api: Api) -> dict[str, Any]:
    """A fresh service account in the default project, with the owner allowed to mint its credentials."""
    account = api.create_sa("robot-one", "Robot One")
    api.grant_owner_token_creator(account["email"])
    return account
