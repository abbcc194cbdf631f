"""Org Policy PATCH honours an etag as setIamPolicy does: a stale one is 409 ABORTED and changes nothing.

The etag is read from the policy's ``spec.etag`` (where GET answers it) or the Policy's own ``etag``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.helpers import PROJECT, Api, assert_google_error

PATH = f"/v2/projects/{PROJECT}/policies/iam.allowServiceAccountCredentialLifetimeExtension"


def spec(*values: str) -> dict[str, Any]:
    return {"rules": [{"values": {"allowedValues": list(values)}}]}


@pytest.mark.parametrize("where", ["spec", "policy"])
def test_a_stale_etag_is_409(api: Api, where: str) -> None:
    first = api.ok("PATCH", PATH, {"spec": spec("a@x.iam.gserviceaccount.com")})
    etag = first["spec"]["etag"]
    assert etag
    second = api.ok("PATCH", PATH, {"spec": {**spec("b@x.iam.gserviceaccount.com"), "etag": etag}})
    assert second["spec"]["etag"] != etag
    stale: dict[str, Any] = {"spec": spec("c@x.iam.gserviceaccount.com")}
    if where == "spec":
        stale["spec"]["etag"] = etag
    else:
        stale["etag"] = etag
    assert_google_error(api.call("PATCH", PATH, stale), 409, "ABORTED")
    assert api.ok("GET", PATH) == second
    current = {"spec": spec("d@x.iam.gserviceaccount.com"), "etag": second["spec"]["etag"]}
    assert api.ok("PATCH", PATH, current)["spec"]["rules"] == spec("d@x.iam.gserviceaccount.com")["rules"]


def test_an_etag_of_a_policy_that_does_not_exist_is_409(api: Api) -> None:
    assert_google_error(api.call("PATCH", PATH, {"spec": spec("a@x.iam.gserviceaccount.com"), "etag": "BwYAAAAA"}),
                        409, "ABORTED")
    assert_google_error(api.call("GET", PATH), 404, "NOT_FOUND")


def test_two_different_etags_are_409(api: Api) -> None:
    etag = api.ok("PATCH", PATH, {"spec": spec("a@x.iam.gserviceaccount.com")})["spec"]["etag"]
    body = {"spec": {**spec("b@x.iam.gserviceaccount.com"), "etag": etag}, "etag": "BwYAAAAA"}
    assert_google_error(api.call("PATCH", PATH, body), 409, "ABORTED")


def test_an_etag_in_the_url_safe_alphabet_without_padding_is_the_same_etag(api: Api) -> None:
    for i in range(40):  # until an etag with '+' or '/' has gone back URL-safe (about 1 in 4 has one)
        etag = api.ok("GET", PATH)["spec"]["etag"] if i else api.ok("PATCH", PATH, {"spec": spec("a@x.io")})["spec"]["etag"]
        sent = etag.replace("+", "-").replace("/", "_").rstrip("=")
        api.ok("PATCH", PATH, {"spec": {**spec(f"u{i}@x.io"), "etag": sent}})
        if sent != etag.rstrip("="):
            return
    raise AssertionError("no etag with '+' or '/' in 40 writes")


@pytest.mark.parametrize("etag", [3, ["x"], {"a": 1}, True, "not base64!"])
def test_an_etag_that_is_not_a_string_is_400(api: Api, etag: object) -> None:
    assert_google_error(api.call("PATCH", PATH, {"spec": spec("a@x.iam.gserviceaccount.com"), "etag": etag}),
                        400, "INVALID_ARGUMENT")


def test_without_an_etag_patch_overwrites(api: Api) -> None:
    api.ok("PATCH", PATH, {"spec": spec("a@x.iam.gserviceaccount.com")})
    assert api.ok("PATCH", PATH, {"spec": spec("b@x.iam.gserviceaccount.com")})["spec"]["rules"] == \
        spec("b@x.iam.gserviceaccount.com")["rules"]


def test_create_ignores_spec_etag(api: Api) -> None:
    # As on Google: CreatePolicy ignores spec.etag.
    name = f"projects/{PROJECT}/policies/iam.allowServiceAccountCredentialLifetimeExtension"
    body = {"name": name, "spec": {**spec("a@x.iam.gserviceaccount.com"), "etag": "whatever"}}
    assert api.ok("POST", f"/v2/projects/{PROJECT}/policies", body)["spec"]["etag"] != "whatever"
