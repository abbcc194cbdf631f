"""The metadata server refuses any request that came through a proxy: an ``X-Forwarded-For`` header, even empty,
or a ``Forwarded`` header (RFC 7239) gets the same 403 (GCE's defence against SSRF through proxies)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from keyless.metadata.app import build_metadata_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PATH = "/computeMetadata/v1/project/project-id"
FLAVOR = {"Metadata-Flavor": "Google"}


@pytest.fixture
def metadata(inproc: Any) -> Iterator[TestClient]:
    with TestClient(build_metadata_app(inproc.keyless), raise_server_exceptions=False) as client:
        yield client


def refusal(metadata: TestClient) -> tuple[int, str]:
    r = metadata.get(PATH, headers={**FLAVOR, "X-Forwarded-For": "1.2.3.4"})
    return r.status_code, r.text


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-For": ""},
    {"X-Forwarded-For": " "},
    {"Forwarded": "for=192.0.2.60;proto=http;by=203.0.113.43"},
    {"Forwarded": ""},
    {"forwarded": "for=unknown"},
])
def test_a_proxied_request_is_refused(metadata: TestClient, headers: dict[str, str]) -> None:
    r = metadata.get(PATH, headers={**FLAVOR, **headers})
    assert (r.status_code, r.text) == refusal(metadata)
    assert r.status_code == 403 and r.headers["Metadata-Flavor"] == "Google"
    assert "keyless-dev" not in r.text


def test_a_direct_request_is_answered(metadata: TestClient) -> None:
    r = metadata.get(PATH, headers=FLAVOR)
    assert r.status_code == 200 and r.text == "keyless-dev"
