"""The sign-in page and the authorization-code grant (gcloud auth login), at the HTTP level on the frozen clock.

A ``Browser`` here does what a browser does with the page: GET it, keep its cookie, send its form back. The
server of the ``api`` fixture is not on loopback (users prove a password); ``picker`` makes it one that is.
"""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from keyless.domain.oauth_clients import (
    ADC_CLIENT_ID,
    ADC_CLIENT_SECRET,
    GCLOUD_CLIENT_ID,
    GCLOUD_CLIENT_SECRET,
    s256_challenge,
)
from keyless.service.signin import CODE_LIFETIME, FORM_LIFETIME
from tests.http.helpers import CLOUD, Api, assert_google_error, assert_oauth_error

ALICE = "alice@example.com"
PASSWORD = "correct horse battery staple"
LOOPBACK = "http://localhost:8085/"
COPY_PAGE = "https://sdk.cloud.google.com/authcode.html"
SCOPES = f"openid https://www.googleapis.com/auth/userinfo.email {CLOUD}"
AUTH = "/o/oauth2/auth"


class Browser:
    """One browser session on the sign-in page."""

    def __init__(self, api: Api, verifier: str | None = None) -> None:
        self.api = api
        self.client = api.client
        self.verifier = verifier or secrets.token_urlsafe(48)

    def params(self, **overrides: str | None) -> dict[str, str]:
        params = {"response_type": "code", "client_id": GCLOUD_CLIENT_ID, "redirect_uri": LOOPBACK, "scope": SCOPES,
                  "state": "state-1", "code_challenge": s256_challenge(self.verifier),
                  "code_challenge_method": "S256", "access_type": "offline"}
        params.update(overrides)  # type: ignore[arg-type]
        return {k: v for k, v in params.items() if v is not None}

    def open(self, path: str = AUTH, **overrides: str | None) -> httpx.Response:
        return self.client.get(path, params=self.params(**overrides), follow_redirects=False)

    @staticmethod
    def form(page: httpx.Response) -> dict[str, str]:
        fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)
        assert fields, page.text
        return {name: html.unescape(value) for name, value in fields}

    def submit(self, page: httpx.Response, path: str = AUTH, headers: dict[str, str] | None = None,
               **fields: str | None) -> httpx.Response:
        form = {**self.form(page), **fields}
        return self.client.post(path, data={k: v for k, v in form.items() if v is not None},
                                headers=headers or {}, follow_redirects=False)

    def sign_in(self, email: str = ALICE, password: str | None = PASSWORD, **overrides: str | None) -> str:
        """The whole page flow; returns the code the redirect carries."""
        page = self.open(**overrides)
        assert page.status_code == 200, page.text
        answer = self.submit(page, email=email, password=password)
        assert answer.status_code == 303, answer.text
        return code_of(answer)

    def exchange(self, code: str, **overrides: str | None) -> httpx.Response:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": LOOPBACK,
                "client_id": GCLOUD_CLIENT_ID, "client_secret": GCLOUD_CLIENT_SECRET, "code_verifier": self.verifier}
        form.update(overrides)  # type: ignore[arg-type]
        return self.client.post("/token", data={k: v for k, v in form.items() if v is not None})


def code_of(answer: httpx.Response) -> str:
    location = answer.headers["location"]
    assert location.startswith(LOOPBACK), location
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["state-1"]
    return query["code"][0]


@pytest.fixture
def alice(api: Api) -> str:
    api.ok("POST", "/keyless/v1/users", {"email": ALICE})
    api.ok("POST", f"/keyless/v1/users/{ALICE}:setPassword", {"password": PASSWORD})
    return ALICE


@pytest.fixture
def picker(api: Api) -> Api:
    """The server as one listening on loopback only: its page lists the users to pick."""
    core = api.inproc.keyless.core
    core.settings = replace(core.settings, user_picker=True)
    return api


def _tokeninfo(api: Api, token: str) -> dict[str, Any]:
    r = api.client.get("/tokeninfo", params={"access_token": token})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _no_redirect(r: httpx.Response, status: int, error: str) -> None:
    """An error the page shows itself: no Location, nothing sent anywhere."""
    assert r.status_code == status, r.text
    assert "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html")
    assert f"Error {status}: {error}" in r.text, r.text


# ---------------------------------------------------------------- the flow


def test_password_sign_in_gives_a_code_that_gcloud_exchanges_for_the_users_tokens(api: Api, alice: str) -> None:
    browser = Browser(api)
    page = browser.open()
    assert page.status_code == 200
    assert 'type="password"' in page.text and ALICE not in page.text  # off loopback, nobody is listed
    for header, value in (("cache-control", "no-store"), ("x-frame-options", "DENY"),
                          ("referrer-policy", "same-origin")):
        assert page.headers[header] == value
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=strict" in page.headers["set-cookie"]

    code = browser.sign_in()
    r = browser.exchange(code)
    assert r.status_code == 200, r.text
    granted = r.json()
    assert granted["scope"] == SCOPES and granted["token_type"] == "Bearer" and granted["expires_in"] == 3600
    assert r.headers["cache-control"] == "no-store"
    info = _tokeninfo(api, granted["access_token"])
    assert (info["email"], info["aud"]) == (ALICE, GCLOUD_CLIENT_ID)
    id_claims = jwt.decode(granted["id_token"], options={"verify_signature": False})
    assert (id_claims["email"], id_claims["aud"], id_claims["azp"]) == (ALICE, GCLOUD_CLIENT_ID, GCLOUD_CLIENT_ID)

    # The refresh token refreshes, for gcloud's client only, within the scopes granted.
    refresh = {"grant_type": "refresh_token", "refresh_token": granted["refresh_token"],
               "client_id": GCLOUD_CLIENT_ID, "client_secret": GCLOUD_CLIENT_SECRET}
    again = api.client.post("/token", data=refresh)
    assert again.status_code == 200, again.text
    assert _tokeninfo(api, again.json()["access_token"])["email"] == ALICE
    assert jwt.decode(again.json()["id_token"], options={"verify_signature": False})["email"] == ALICE
    narrower = api.client.post("/token", data={**refresh, "scope": CLOUD})
    assert narrower.status_code == 200 and narrower.json()["scope"] == CLOUD
    assert_oauth_error(api.client.post("/token", data={**refresh, "scope": f"{CLOUD} https://mail.google.com/"}),
                       400, "invalid_scope")
    assert_oauth_error(api.client.post("/token", data={**refresh, "client_id": ADC_CLIENT_ID,
                                                       "client_secret": ADC_CLIENT_SECRET}),
                       400, "unauthorized_client")
    assert_oauth_error(api.client.post("/token", data={**refresh, "client_secret": "wrong"}), 401, "invalid_client")

    # The token is alice's on the API: her roles, not the owner's.
    listed = api.client.get("/v1/projects/keyless-dev/serviceAccounts",
                            headers={"Authorization": f"Bearer {again.json()['access_token']}"})
    assert_google_error(listed, 403, "PERMISSION_DENIED")


def test_the_loopback_server_lists_its_users_to_pick_and_needs_no_password(picker: Api, alice: str) -> None:
    browser = Browser(picker)
    page = browser.open()
    assert 'type="password"' not in page.text
    assert f'id="account-{ALICE}"' in page.text and 'id="account-owner@keyless.local"' in page.text
    picker.ok("POST", f"/keyless/v1/users/{ALICE}:disable", {})
    assert f'id="account-{ALICE}"' not in browser.open().text  # a disabled user is not offered, nor accepted
    answer = browser.submit(browser.open(), email=ALICE)
    assert answer.status_code == 401 and "location" not in answer.headers
    picker.ok("POST", f"/keyless/v1/users/{ALICE}:enable", {})
    code = browser.sign_in(password=None)
    assert _tokeninfo(picker, browser.exchange(code).json()["access_token"])["email"] == ALICE


def test_the_copy_paste_variant_shows_the_code_instead_of_redirecting(api: Api, alice: str) -> None:
    browser = Browser(api)
    page = browser.open(redirect_uri=COPY_PAGE)
    answer = browser.submit(page, email=ALICE, password=PASSWORD)
    assert answer.status_code == 200 and "location" not in answer.headers
    assert answer.headers["cache-control"] == "no-store"
    code = html.unescape(re.search(r'<code id="code">([^<]+)</code>', answer.text).group(1))
    assert browser.exchange(code, redirect_uri=COPY_PAGE).status_code == 200


def test_application_default_login_uses_its_own_client_and_page(api: Api, alice: str) -> None:
    browser = Browser(api)
    adc_page = "https://sdk.cloud.google.com/applicationdefaultauthcode.html"
    # Each client has its own copy page: gcloud's is not the ADC client's.
    _no_redirect(browser.open(client_id=ADC_CLIENT_ID, redirect_uri=COPY_PAGE), 400, "redirect_uri_mismatch")
    code = browser.sign_in(client_id=ADC_CLIENT_ID)
    assert_oauth_error(browser.exchange(code, client_id=ADC_CLIENT_ID, client_secret="wrong"), 401, "invalid_client")
    code = browser.sign_in(client_id=ADC_CLIENT_ID)
    r = browser.exchange(code, client_id=ADC_CLIENT_ID, client_secret=ADC_CLIENT_SECRET)
    assert r.status_code == 200, r.text
    assert _tokeninfo(api, r.json()["access_token"])["aud"] == ADC_CLIENT_ID
    assert browser.open(client_id=ADC_CLIENT_ID, redirect_uri=adc_page).status_code == 200


def test_client_credentials_in_basic_authentication(api: Api, alice: str) -> None:
    import base64

    browser = Browser(api)
    code = browser.sign_in()
    basic = base64.b64encode(f"{GCLOUD_CLIENT_ID}:{GCLOUD_CLIENT_SECRET}".encode()).decode()
    r = api.client.post("/token", headers={"Authorization": f"Basic {basic}"}, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": LOOPBACK, "code_verifier": browser.verifier})
    assert r.status_code == 200, r.text


def test_online_access_gives_no_refresh_token(api: Api, alice: str) -> None:
    browser = Browser(api)
    r = browser.exchange(browser.sign_in(access_type="online"))
    assert r.status_code == 200 and "refresh_token" not in r.json()


# ---------------------------------------------------------------- codes: PKCE, single use, expiry, binding


def test_a_wrong_code_verifier_is_refused_and_spends_the_code(api: Api, alice: str) -> None:
    browser = Browser(api)
    code = browser.sign_in()
    assert_oauth_error(browser.exchange(code, code_verifier=secrets.token_urlsafe(48)), 400, "invalid_grant")
    # The code is spent by that attempt: not even its rightful owner can use it now.
    assert_oauth_error(browser.exchange(code), 400, "invalid_grant")
    code = browser.sign_in()
    assert_oauth_error(browser.exchange(code, code_verifier=None), 400, "invalid_grant")


def test_a_code_is_redeemed_once(api: Api, alice: str) -> None:
    browser = Browser(api)
    code = browser.sign_in()
    assert browser.exchange(code).status_code == 200
    assert_oauth_error(browser.exchange(code), 400, "invalid_grant")


def _alive(api: Api, access_token: str) -> bool:
    """Whether an access token still authenticates: tokeninfo knows it, and the API takes it."""
    info = api.client.get("/tokeninfo", params={"access_token": access_token}).status_code == 200
    listed = api.client.get("/v1/projects/keyless-dev/serviceAccounts",
                            headers={"Authorization": f"Bearer {access_token}"}).status_code != 401
    assert info == listed
    return info


@pytest.mark.parametrize("access_type", ["offline", "online"])
def test_a_code_redeemed_again_revokes_what_its_first_exchange_gave(api: Api, alice: str, access_type: str) -> None:
    """RFC 6749 §4.1.2: a code used twice is refused, and the tokens its first use gave are revoked (whoever
    presents it again holds a copy: the first exchange may have been the thief's, or the second is)."""
    browser = Browser(api)
    code = browser.sign_in(access_type=access_type)
    first = browser.exchange(code)
    assert first.status_code == 200, first.text
    granted = first.json()
    assert _alive(api, granted["access_token"])
    other = browser.exchange(browser.sign_in())  # another sign-in of the same user, by the same client
    assert other.status_code == 200
    assert_oauth_error(browser.exchange(code), 400, "invalid_grant")
    assert not _alive(api, granted["access_token"])
    if access_type == "offline":
        refresh = {"grant_type": "refresh_token", "refresh_token": granted["refresh_token"],
                   "client_id": GCLOUD_CLIENT_ID, "client_secret": GCLOUD_CLIENT_SECRET}
        assert_oauth_error(api.client.post("/token", data=refresh), 400, "invalid_grant")
    # Only that code's tokens: the user's other sign-in goes on.
    assert _alive(api, other.json()["access_token"])
    refreshed = api.client.post("/token", data={
        "grant_type": "refresh_token", "refresh_token": other.json()["refresh_token"],
        "client_id": GCLOUD_CLIENT_ID, "client_secret": GCLOUD_CLIENT_SECRET})
    assert refreshed.status_code == 200, refreshed.text
    # A third presentation changes nothing more, and is refused the same way.
    assert_oauth_error(browser.exchange(code), 400, "invalid_grant")


def test_a_code_presented_again_during_its_first_exchange_gives_that_exchange_nothing(
        api: Api, alice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second presentation arrives (at another replica, say) after the first exchange took the code and
    before it recorded its tokens: the first exchange then hands out nothing, and its sign-in grant is gone."""
    store = api.inproc.keyless.store
    record = store.record_code_exchange

    async def presented_again_meanwhile(code_hash: str, grant_id: str, token_hash: str) -> bool:
        await store.take_authorization_code(code_hash)  # the concurrent presentation, at this very moment
        return await record(code_hash, grant_id, token_hash)

    browser = Browser(api)
    code = browser.sign_in()
    monkeypatch.setattr(store, "record_code_exchange", presented_again_meanwhile)
    assert_oauth_error(browser.exchange(code), 400, "invalid_grant")
    monkeypatch.undo()
    user = api.inproc.run(store.find_user(ALICE))
    assert api.inproc.run(store.delete_sign_in_grants(user.user_id)) == 0  # no refresh token was left alive


def test_a_code_expires(api: Api, alice: str) -> None:
    browser = Browser(api)
    code = browser.sign_in()
    api.clock.advance(CODE_LIFETIME)
    assert_oauth_error(browser.exchange(code), 400, "invalid_grant")
    code = browser.sign_in()
    api.clock.advance(CODE_LIFETIME - 1)
    assert browser.exchange(code).status_code == 200


def test_a_code_is_bound_to_its_redirect_uri_and_client(api: Api, alice: str) -> None:
    browser = Browser(api)
    code = browser.sign_in()
    assert_oauth_error(browser.exchange(code, redirect_uri="http://localhost:9999/"), 400, "redirect_uri_mismatch")
    code = browser.sign_in()
    assert_oauth_error(browser.exchange(code, client_id=ADC_CLIENT_ID, client_secret=ADC_CLIENT_SECRET),
                       400, "invalid_grant")
    assert_oauth_error(browser.exchange(browser.sign_in(), client_id="1234.apps.googleusercontent.com"),
                       401, "invalid_client")
    assert_oauth_error(browser.exchange("4/0klnot-a-code"), 400, "invalid_grant")
    assert_oauth_error(browser.exchange(""), 400, "invalid_request")


def test_a_code_for_a_user_deleted_or_disabled_meanwhile_gives_nothing(api: Api, alice: str) -> None:
    browser = Browser(api)
    code = browser.sign_in()
    api.ok("POST", f"/keyless/v1/users/{ALICE}:disable", {})
    assert_oauth_error(browser.exchange(code), 400, "invalid_grant")


# ---------------------------------------------------------------- the page: clients, redirect URIs, errors


def test_an_unknown_client_is_refused_on_the_page(api: Api) -> None:
    browser = Browser(api)
    _no_redirect(browser.open(client_id="1234.apps.googleusercontent.com"), 401, "invalid_client")
    _no_redirect(browser.open(client_id=None), 400, "invalid_request")
    _no_redirect(browser.open(path="/o/oauth2/v2/auth", client_id="evil"), 401, "invalid_client")


@pytest.mark.parametrize("uri", [
    "https://evil.example/", "http://evil.example:8085/", "http://localhost.evil.example/",
    "http://localhost@evil.example/", "http://localhost:8085@evil.example/", "http://user@localhost:8085/",
    "http://localhost\\@evil.example/", "http://localhost:8085/#frag", "//evil.example/", "javascript:alert(1)",
    "https://localhost:8085/", "http://localhost:0/", "http://localhost:99999/", "http://localhost:/",
    "http://127.0.0.1.evil.example/", "http://[::1]evil/", "http://localhost/ x", "http://localhost/\r\nX: y",
    "https://sdk.cloud.google.com/authcode.html.evil.example", "https://sdk.cloud.google.com/authcode.html?x=1",
    "https://sdk.cloud.google.com.evil.example/authcode.html", "http://sdk.cloud.google.com/authcode.html",
    "urn:ietf:wg:oauth:2.0:oob", "",
])
def test_no_open_redirect(api: Api, uri: str) -> None:
    """A redirect URI that is not a loopback URL or the client's own page is refused on the page, before
    anything is redirected; so is the error of a request that also has other faults."""
    browser = Browser(api)
    expected = "invalid_request" if not uri else "redirect_uri_mismatch"
    _no_redirect(browser.open(redirect_uri=uri), 400, expected)
    _no_redirect(browser.open(redirect_uri=uri, response_type="token", code_challenge=None), 400, expected)


@pytest.mark.parametrize("uri", ["http://localhost:8085/", "http://127.0.0.1:51234/", "http://[::1]:8085/",
                                 "http://localhost/", "http://localhost:8085/callback?x=1"])
def test_loopback_redirect_uris_are_accepted(api: Api, uri: str) -> None:
    assert Browser(api).open(redirect_uri=uri).status_code == 200


@pytest.mark.parametrize(("overrides", "error"), [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": None}, "invalid_request"),
    ({"scope": None}, "invalid_request"),
    ({"scope": 'openid "quoted"'}, "invalid_scope"),
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"access_type": "forever"}, "invalid_request"),
    ({"prompt": "none"}, "login_required"),
])
def test_other_faults_go_back_to_the_client(api: Api, overrides: dict[str, str | None], error: str) -> None:
    browser = Browser(api)
    r = browser.open(**overrides)
    assert r.status_code == 303, r.text
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert r.headers["location"].startswith(LOOPBACK)
    assert query["error"] == [error] and query["state"] == ["state-1"] and "code" not in query
    # Where the client reads its answer from its code page, the page shows the error.
    _no_redirect(browser.open(redirect_uri=COPY_PAGE, **overrides), 400, error)


def test_a_parameter_sent_twice_is_refused(api: Api) -> None:
    browser = Browser(api)
    params = [*list(browser.params().items()), ("redirect_uri", "http://evil.example/")]
    _no_redirect(api.client.get(AUTH, params=params), 400, "invalid_request")
    # The client's three parameters are refused on the page, whatever else is wrong; the others, once the client
    # and its redirect URI are known good, go back to the client, in the order the request is checked.
    _no_redirect(api.client.get(AUTH, params=[*params, ("scope", "x"), ("state", "y")]), 400, "invalid_request")
    _no_redirect(api.client.get(AUTH, params=[*browser.params(client_id="evil").items(), ("scope", "x")]), 401,
                 "invalid_client")
    for extra, error, described in (
            ([("scope", CLOUD)], "invalid_request", "Parameter scope was sent more than once."),
            ([("login_hint", "x" * 2049)], "invalid_request", "Parameter login_hint is longer than 2048 characters."),
            ([("nonce", "a"), ("nonce", "b"), ("prompt", "none")], "login_required",
             "The user must sign in: prompt=none cannot be answered."),
            ([("access_type", "online"), ("nonce", "x" * 2049)], "invalid_request",
             "Parameter access_type was sent more than once.")):
        r = api.client.get(AUTH, params=[*browser.params().items(), *extra], follow_redirects=False)
        assert r.status_code == 303, r.text
        query = parse_qs(urlsplit(r.headers["location"]).query)
        assert (query["error"], query["error_description"]) == ([error], [described])


def test_a_form_field_sent_twice_is_refused_on_the_page(api: Api, alice: str) -> None:
    browser = Browser(api)
    page = browser.open()
    form = [*browser.form(page).items(), ("email", ALICE), ("password", PASSWORD)]

    def post(*extra: tuple[str, str]) -> httpx.Response:
        return api.client.post(AUTH, content=urlencode([*form, *extra]), follow_redirects=False,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})

    for extra in ([("csrf_token", "1.abc")], [("action", "cancel")] * 2, [("email", ALICE)],
                  [("password", "x" * 2049)]):
        _no_redirect(post(*extra), 400, "invalid_request")
    # The request the form carries is checked first: its faults go back to the client.
    r = post(("csrf_token", "1.abc"), ("scope", CLOUD))
    assert r.status_code == 303 and "error=invalid_request" in r.headers["location"]
    assert browser.submit(page, email=ALICE, password=PASSWORD).status_code == 303


def test_values_are_escaped_on_the_page(api: Api, alice: str) -> None:
    browser = Browser(api)
    page = browser.open(state='"><script>alert(1)</script>', login_hint='x" autofocus onfocus="alert(1)')
    assert "<script>" not in page.text and 'autofocus onfocus="' not in page.text
    assert browser.form(page)["state"] == '"><script>alert(1)</script>'


def test_cancel_sends_access_denied(api: Api) -> None:
    browser = Browser(api)
    r = browser.submit(browser.open(), action="cancel")
    assert r.status_code == 303
    assert parse_qs(urlsplit(r.headers["location"]).query)["error"] == ["access_denied"]


def test_methods_other_than_get_and_post_are_refused_in_shape(api: Api) -> None:
    assert_google_error(api.client.put(AUTH), 405, "UNIMPLEMENTED")


# ---------------------------------------------------------------- the form: forgery


def test_a_form_without_its_token_or_cookie_is_refused(api: Api, alice: str) -> None:
    browser = Browser(api)
    page = browser.open()
    _no_redirect(browser.submit(page, email=ALICE, password=PASSWORD, csrf_token=None), 403, "invalid_request")
    _no_redirect(browser.submit(page, email=ALICE, password=PASSWORD, csrf_token="1.abc"), 403, "invalid_request")
    # The token is bound to the browser's cookie: another browser (or a forging page) lacks it.
    cookie = api.client.cookies.get("keyless_signin")
    api.client.cookies.clear()
    _no_redirect(browser.submit(page, email=ALICE, password=PASSWORD), 403, "invalid_request")
    api.client.cookies.set("keyless_signin", secrets.token_urlsafe(24), path="/o/oauth2/")
    _no_redirect(browser.submit(page, email=ALICE, password=PASSWORD), 403, "invalid_request")
    api.client.cookies.clear()
    api.client.cookies.set("keyless_signin", cookie, path="/o/oauth2/")
    assert browser.submit(page, email=ALICE, password=PASSWORD).status_code == 303


def test_a_form_whose_request_was_altered_is_refused(api: Api, alice: str) -> None:
    browser = Browser(api)
    page = browser.open()
    for altered in ({"redirect_uri": "http://localhost:9999/"}, {"scope": CLOUD}, {"state": "other"},
                    {"code_challenge": s256_challenge(secrets.token_urlsafe(48))}):
        _no_redirect(browser.submit(page, email=ALICE, password=PASSWORD, **altered), 403, "invalid_request")


def test_a_cross_site_form_is_refused(api: Api, alice: str) -> None:
    browser = Browser(api)
    page = browser.open()
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        _no_redirect(browser.submit(page, headers=headers, email=ALICE, password=PASSWORD), 403, "invalid_request")
    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert browser.submit(page, headers=same, email=ALICE, password=PASSWORD).status_code == 303


def test_a_form_expires(api: Api, alice: str) -> None:
    browser = Browser(api)
    page = browser.open()
    api.clock.advance(FORM_LIFETIME + 1)
    _no_redirect(browser.submit(page, email=ALICE, password=PASSWORD), 403, "invalid_request")


# ---------------------------------------------------------------- passwords


def test_a_wrong_password_or_unknown_user_gives_no_code(api: Api, alice: str) -> None:
    browser = Browser(api)
    for email, password in ((ALICE, "wrong password"), ("nobody@example.com", PASSWORD), (ALICE, "")):
        r = browser.submit(browser.open(), email=email, password=password)
        assert r.status_code == 401 and "location" not in r.headers
        assert "Wrong email or password." in r.text
    # A user without a password cannot sign in off loopback.
    api.ok("POST", "/keyless/v1/users", {"email": "bob@example.com"})
    assert browser.submit(browser.open(), email="bob@example.com", password="").status_code == 401


def test_password_guessing_is_limited_per_user_and_per_address(api: Api, alice: str) -> None:
    browser = Browser(api)
    for _ in range(5):
        assert browser.submit(browser.open(), email=ALICE, password="guess").status_code == 401
    # The limit is reached: even the right password is refused, without being checked.
    r = browser.submit(browser.open(), email=ALICE, password=PASSWORD)
    assert r.status_code == 429 and "location" not in r.headers and "Too many" in r.text
    api.clock.advance(60)
    assert browser.submit(browser.open(), email=ALICE, password=PASSWORD).status_code == 303
    # Guesses spread over many users from one address are limited too.
    api.clock.advance(3600)
    for i in range(5):
        assert browser.submit(browser.open(), email=f"user{i}@example.com", password="guess").status_code == 401
    assert browser.submit(browser.open(), email=ALICE, password=PASSWORD).status_code == 429


def test_set_password_is_for_the_owner_and_stores_only_a_slow_hash(api: Api, alice: str) -> None:
    path = f"/keyless/v1/users/{ALICE}:setPassword"
    assert_google_error(api.call("POST", path, {"password": "short"}), 400, "INVALID_ARGUMENT")
    assert_google_error(api.call("POST", path, {}), 400, "INVALID_ARGUMENT")
    assert_google_error(api.call("POST", path, {"password": PASSWORD, "extra": 1}), 400, "INVALID_ARGUMENT")
    stored = api.inproc.run(api.inproc.keyless.store.find_user(ALICE)).password_hash
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert api.ok("GET", f"/keyless/v1/users/{ALICE}")["hasPassword"] is True
    # Alice's own token does not let her set anyone's password (hers included).
    browser = Browser(api)
    alice_token = browser.exchange(browser.sign_in()).json()["access_token"]
    assert_google_error(api.call("POST", path, {"password": "another password"}, token=alice_token),
                        403, "PERMISSION_DENIED")


# ---------------------------------------------------------------- revocation, audit


def test_revoking_and_resetting_end_the_sign_in(api: Api, alice: str) -> None:
    browser = Browser(api)
    granted = browser.exchange(browser.sign_in()).json()
    refresh = {"grant_type": "refresh_token", "refresh_token": granted["refresh_token"],
               "client_id": GCLOUD_CLIENT_ID, "client_secret": GCLOUD_CLIENT_SECRET}
    assert api.client.post("/revoke", data={"token": granted["refresh_token"]}).status_code == 200
    assert_oauth_error(api.client.post("/token", data=refresh), 400, "invalid_grant")
    assert api.client.get("/tokeninfo", params={"access_token": granted["access_token"]}).status_code == 400

    # Revoking an access token revokes the refresh token it came from, as Google does.
    granted = browser.exchange(browser.sign_in()).json()
    assert api.client.post("/revoke", data={"token": granted["access_token"]}).status_code == 200
    assert_oauth_error(api.client.post("/token", data={**refresh, "refresh_token": granted["refresh_token"]}),
                       400, "invalid_grant")

    # Resetting the user's secret ends every sign-in too.
    granted = browser.exchange(browser.sign_in()).json()
    api.ok("POST", f"/keyless/v1/users/{ALICE}:resetSecret", {})
    assert_oauth_error(api.client.post("/token", data={**refresh, "refresh_token": granted["refresh_token"]}),
                       400, "invalid_grant")
    assert api.client.get("/tokeninfo", params={"access_token": granted["access_token"]}).status_code == 400


def test_sign_in_and_exchange_are_audited_without_secrets(api: Api, alice: str) -> None:
    browser = Browser(api)
    page = browser.open()
    browser.submit(page, email=ALICE, password="wrong password")
    code = browser.sign_in()
    granted = browser.exchange(code).json()
    entries = api.ok("GET", "/v1/auditLog", params={"filter": 'protoPayload.methodName="oauth2.SignIn"'})["entries"]
    assert [(e["protoPayload"]["authenticationInfo"]["principalEmail"], e["severity"]) for e in entries] == [
        ("", "ERROR"), (ALICE, "NOTICE")]
    assert entries[1]["protoPayload"]["request"]["client_id"] == GCLOUD_CLIENT_ID
    exchanges = [e for e in api.ok("GET", "/v1/auditLog", params={
        "filter": 'protoPayload.methodName="oauth2.Token"'})["entries"]
        if e["protoPayload"]["request"].get("grant_type") == "authorization_code"]
    assert [e["protoPayload"]["authenticationInfo"]["principalEmail"] for e in exchanges] == [ALICE]
    # The code's keyed hash ties the two entries; no secret is in any entry.
    assert exchanges[0]["protoPayload"]["response"]["codeHash"] == entries[1]["protoPayload"]["response"]["codeHash"]
    everything = api.call("GET", "/v1/auditLog", params={"pageSize": 1000}).text
    for secret in (code, PASSWORD, "wrong password", granted["refresh_token"], granted["access_token"],
                   browser.verifier, browser.form(page)["csrf_token"]):
        assert secret not in everything


def test_concurrent_guesses_do_not_outrun_the_limit(api: Api, alice: str) -> None:
    """Guesses sent together are each counted before their password is checked (scrypt runs off the event
    loop, so they would otherwise all pass the check of an empty count)."""
    import asyncio

    from keyless.errors import SignInError

    sign_in = api.inproc.keyless.sign_in

    async def guess(i: int) -> int:
        try:
            await sign_in.sign_in(ALICE, f"guess {i}", "198.51.100.7")
        except SignInError as exc:
            return exc.http_status
        return 200

    async def all_at_once() -> list[int]:
        return list(await asyncio.gather(*(guess(i) for i in range(20))))

    statuses = api.inproc.run(all_at_once())
    assert sorted(statuses) == [401] * 5 + [429] * 15
