"""``gcloud auth login`` and ``gcloud auth application-default login``, unchanged, against keyless's sign-in page,
with a real browser: headless Chromium (Debian's package, driven by Selenium and Debian's chromedriver) opens
the URL gcloud prints, picks the user on the page (the server listens on loopback), and the flow completes as
gcloud runs it against Google: the copy-paste variant (``--no-launch-browser``, the code pasted into gcloud's
standard input) and the loopback variant (gcloud's own local server receives the redirect; ``BROWSER`` names a
command that opens nothing, and the test reads the URL from gcloud's output).

gcloud reaches keyless through the interception proxy (``HTTPS_PROXY`` and the CA bundle), as after
``eval "$(keyless env)"``, or, on the endpoint-override route, directly: ``keyless env --gcloud-overrides``
names an API served over HTTPS (``keyless serve $(keyless certificate)``) in ``auth/auth_host`` and
``auth/token_host``, since gcloud's OAuth library refuses plain-HTTP endpoints. The browser sends only
``accounts.google.com`` to the proxy (a PAC script) and resolves no other name but loopback, so the pages
gcloud's local server answers with (which move on to cloud.google.com) go nowhere.

Under ``CI=true`` a missing gcloud, Chromium or chromedriver fails these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.browser import headless_chromium, required_tool
from tests.compat.gcloud_support import keyless_env
from tests.conftest import KEYLESS, Server, start_server

GCLOUD = "gcloud 528.0.0"
SECTION = "2.3"
ALICE = "alice@example.com"
PROJECT = "keyless-dev"
GCLOUD_CLIENT_ID = "32555940559.apps.googleusercontent.com"
ADC_CLIENT_ID = "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com"
URL_RE = re.compile(r"(https://accounts\.google\.com/o/oauth2/auth\?\S+)")
OVERRIDE_URL_RE = re.compile(r"(https://127\.0\.0\.1:\d+/o/oauth2/auth\?\S+)")  # keyless's page, over HTTPS

pytestmark = pytest.mark.timeout(240)


def _tool(name: str) -> str:
    return required_tool(name, needed_by="the gcloud sign-in tests")


def _with_alice(srv: Server) -> Server:
    """Alice, a registered user who may list the project's service accounts, and one account to list."""
    srv.owner("POST", "/keyless/v1/users", {"email": ALICE})
    srv.create_sa("login-listed")
    policy = srv.owner("POST", f"/v1/projects/{PROJECT}:getIamPolicy", {})
    policy.setdefault("bindings", []).append({"role": "roles/viewer", "members": [f"user:{ALICE}"]})
    srv.owner("POST", f"/v1/projects/{PROJECT}:setIamPolicy", {"policy": policy})
    return srv


@pytest.fixture(scope="module")
def login_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("gcloud-login") / "data", "--proxy-port", "0", "--metadata-port", "-1")
    try:
        yield _with_alice(srv)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def https_login_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose API serves HTTPS with a certificate of ``keyless certificate`` (its proxy writes the CA
    bundle ``keyless env --gcloud-overrides`` names)."""
    data = tmp_path_factory.mktemp("gcloud-login-https") / "data"
    flags = subprocess.run([*KEYLESS, "--data-dir", str(data), "certificate"], capture_output=True, text=True,
                           check=True, timeout=60).stdout.split()
    srv = start_server(data, *flags, "--proxy-port", "0", "--metadata-port", "-1")
    srv.verify = str(data / "ca-bundle.pem")
    try:
        yield _with_alice(srv)
    finally:
        srv.stop()


def _endpoints(server: Server) -> dict[str, Any]:
    return dict(json.loads((server.data_dir / "endpoints.json").read_text()))


@pytest.fixture(scope="module")
def browser(login_server: Server) -> Iterator[Any]:
    proxy = _endpoints(login_server)["proxy"].removeprefix("http://")
    pac = ("function FindProxyForURL(url, host) { return host == 'accounts.google.com' ? "
           f"'PROXY {proxy}' : 'DIRECT'; }}")
    # Commands return once a navigation starts: the pages gcloud's local server answers with move on to hosts that
    # resolve nowhere, and their loading is none of the test's business. The test waits for what it needs.
    with headless_chromium(
            # The proxy's certificates come from keyless's local CA, which this profile does not trust.
            "--ignore-certificate-errors",
            "--proxy-pac-url=data:application/x-ns-proxy-autoconfig;base64," + base64.b64encode(pac.encode()).decode(),
            needed_by="the gcloud sign-in tests", page_load_strategy="none") as driver:
        yield driver


def _gcloud_env(server: Server, config: Path, **extra: str) -> dict[str, str]:
    endpoints = _endpoints(server)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLOUDSDK_", "GOOGLE_", "GCE_", "KEYLESS_")) and k.lower() not in (
               "https_proxy", "http_proxy", "no_proxy", "all_proxy", "browser", "display")}
    config.mkdir(parents=True, exist_ok=True)
    # gcloud's own cache of "not on GCE": it then never probes the metadata server's address.
    (config / "gce").write_text("False")
    env.update({
        "CLOUDSDK_CONFIG": str(config), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1", "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "HTTPS_PROXY": endpoints["proxy"], "NO_PROXY": "127.0.0.1,localhost,::1",
        "REQUESTS_CA_BUNDLE": endpoints["caBundle"], "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE": endpoints["caBundle"],
    })
    env.update(extra)
    return env


def _gcloud(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([_tool("gcloud"), *args], capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"gcloud {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _override_env(server: Server, config: Path) -> dict[str, str]:
    """gcloud on the endpoint-override route, as after ``eval "$(keyless env --gcloud-overrides)"``, with a
    configuration directory of its own (nobody signed in yet)."""
    env = _gcloud_env(server, config)
    for name in ("HTTPS_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"):
        env.pop(name)
    env.update(keyless_env(server, "--gcloud-overrides"))
    env["CLOUDSDK_CONFIG"] = str(config)
    return env


def _start_login(env: dict[str, str], *args: str, url_re: re.Pattern[str] = URL_RE
                 ) -> tuple[subprocess.Popen[str], str]:
    """Start a gcloud sign-in command and read, from its standard error, the URL it asks the user to open."""
    proc = subprocess.Popen([_tool("gcloud"), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        match = url_re.search(line)
        if match:
            return proc, match.group(1)
    proc.wait(timeout=30)
    raise AssertionError(f"gcloud printed no sign-in URL: {''.join(seen)}")


def _login_pasting_the_code(env: dict[str, str], browser: Any, *, url_re: re.Pattern[str] = URL_RE) -> str:
    """``gcloud auth login --no-launch-browser``: Alice picked in the browser at the URL gcloud prints, the code the
    page shows pasted back into gcloud, which must say she is logged in. Returns the sign-in URL."""
    proc, url = _start_login(env, "auth", "login", "--no-launch-browser", url_re=url_re)
    try:
        assert f"client_id={GCLOUD_CLIENT_ID}" in url and "code_challenge_method=S256" in url
        _pick(browser, url, ALICE)
        code = _element(browser, "code").text
        assert code.startswith("4/")
        _out, err = proc.communicate(code + "\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"You are now logged in as [{ALICE}]" in err
    return url


def _element(browser: Any, element_id: str) -> Any:
    """The element once the page showing it has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(browser, 60).until(expected_conditions.presence_of_element_located((By.ID, element_id)))


def _pick(browser: Any, url: str, email: str) -> None:
    """What a person does on the page: open it, check what it asks for, choose the account."""
    browser.get("about:blank")
    browser.get(url)
    account = _element(browser, f"account-{email}")
    assert browser.title == "Sign in - keyless"
    assert "https://www.googleapis.com/auth/cloud-platform" in _element(browser, "scopes").get_attribute(
        "textContent")
    account.click()


def _tokeninfo(server: Server, token: str) -> dict[str, Any]:
    r = requests.get(f"{server.url}/tokeninfo", params={"access_token": token}, timeout=10, verify=server.verify)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.compat(section=SECTION, client=GCLOUD, call="auth login --no-launch-browser (code pasted), "
                    "auth list, print-access-token (and its refresh), iam service-accounts list", route="proxy")
def test_gcloud_auth_login_with_the_code_pasted(login_server: Server, browser: Any, tmp_path: Path) -> None:
    env = _gcloud_env(login_server, tmp_path / "gcloud")
    _login_pasting_the_code(env, browser)

    assert _gcloud(env, "auth", "list", "--format=value(account)").split() == [ALICE]
    token = _gcloud(env, "auth", "print-access-token").strip()
    info = _tokeninfo(login_server, token)
    assert (info["email"], info["aud"]) == (ALICE, GCLOUD_CLIENT_ID)
    # Without its cached access token gcloud refreshes, with the refresh token keyless gave it.
    (tmp_path / "gcloud" / "access_tokens.db").unlink()
    refreshed = _gcloud(env, "auth", "print-access-token").strip()
    assert refreshed != token and _tokeninfo(login_server, refreshed)["email"] == ALICE
    listed = _gcloud(env, "iam", "service-accounts", "list", "--project", PROJECT, "--format=value(email)")
    assert listed.split() == [f"login-listed@{PROJECT}.iam.gserviceaccount.com"]


@pytest.mark.compat(section=SECTION, client=GCLOUD, call="auth application-default login (loopback "
                    "redirect); the ADC file refreshes with google-auth", route="proxy")
def test_gcloud_application_default_login_through_the_loopback_redirect(login_server: Server, browser: Any,
                                                                         tmp_path: Path) -> None:
    config = tmp_path / "gcloud"
    # gcloud opens "a browser" only where it sees a display; BROWSER names a command that opens nothing.
    env = _gcloud_env(login_server, config, BROWSER="true", DISPLAY=":99")
    proc, url = _start_login(env, "auth", "application-default", "login")
    try:
        assert f"client_id={ADC_CLIENT_ID}" in url and "redirect_uri=http%3A%2F%2Flocalhost%3A" in url
        _pick(browser, url, ALICE)  # the page redirects the code to gcloud's local server
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    adc = config / "application_default_credentials.json"
    assert "Credentials saved to file" in err and adc.exists(), err
    assert json.loads(adc.read_text())["client_id"] == ADC_CLIENT_ID

    # An unchanged google-auth, as an application would run it: the file's refresh token against keyless.
    code = ("import google.auth, google.auth.transport.requests as r\n"
            "creds, _ = google.auth.default()\n"
            "creds.refresh(r.Request())\n"
            "print(creds.token)\n")
    run_env = {k: v for k, v in env.items() if k not in ("BROWSER", "DISPLAY")}
    run_env["GOOGLE_APPLICATION_CREDENTIALS"] = str(adc)
    proc2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, timeout=60)
    assert proc2.returncode == 0, proc2.stderr
    info = _tokeninfo(login_server, proc2.stdout.strip())
    assert (info["email"], info["aud"]) == (ALICE, ADC_CLIENT_ID)


@pytest.mark.compat(section=SECTION, client=GCLOUD, call="auth login --no-launch-browser (code pasted), auth list, "
                    "print-access-token (and its refresh), iam service-accounts list: the API over HTTPS, "
                    "auth/auth_host and auth/token_host from keyless env --gcloud-overrides",
                    route="api_endpoint_overrides")
def test_gcloud_auth_login_on_the_override_route(https_login_server: Server, browser: Any, tmp_path: Path) -> None:
    config = tmp_path / "gcloud"
    env = _override_env(https_login_server, config)
    assert env["CLOUDSDK_AUTH_AUTH_HOST"] == f"{https_login_server.url}/o/oauth2/auth"
    assert "HTTPS_PROXY" not in env and env["CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"] == https_login_server.verify
    url = _login_pasting_the_code(env, browser, url_re=OVERRIDE_URL_RE)
    assert url.startswith(f"{https_login_server.url}/o/oauth2/auth?"), url

    assert _gcloud(env, "auth", "list", "--format=value(account)").split() == [ALICE]
    token = _gcloud(env, "auth", "print-access-token").strip()
    assert _tokeninfo(https_login_server, token)["email"] == ALICE
    # Without its cached access token gcloud refreshes, at auth/token_host: keyless over HTTPS.
    (config / "access_tokens.db").unlink()
    refreshed = _gcloud(env, "auth", "print-access-token").strip()
    assert refreshed != token and _tokeninfo(https_login_server, refreshed)["email"] == ALICE
    listed = _gcloud(env, "iam", "service-accounts", "list", "--project", PROJECT, "--format=value(email)")
    assert listed.split() == [f"login-listed@{PROJECT}.iam.gserviceaccount.com"]


@pytest.mark.compat(section=SECTION, client=GCLOUD, call="auth application-default login (loopback redirect), then "
                    "auth application-default print-access-token: the API over HTTPS, auth/auth_host and "
                    "auth/token_host from keyless env --gcloud-overrides", route="api_endpoint_overrides")
def test_gcloud_application_default_login_on_the_override_route(https_login_server: Server, browser: Any,
                                                                tmp_path: Path) -> None:
    config = tmp_path / "gcloud"
    env = {**_override_env(https_login_server, config), "BROWSER": "true", "DISPLAY": ":99"}
    proc, url = _start_login(env, "auth", "application-default", "login", url_re=OVERRIDE_URL_RE)
    try:
        assert f"client_id={ADC_CLIENT_ID}" in url and "redirect_uri=http%3A%2F%2Flocalhost%3A" in url
        _pick(browser, url, ALICE)  # the page redirects the code to gcloud's local server
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    adc = config / "application_default_credentials.json"
    assert "Credentials saved to file" in err and adc.exists(), err
    # gcloud refreshes the file's refresh token at auth/token_host (an application's google-auth would go to
    # Google's token URL whatever the file says: that needs the proxy route).
    token = _gcloud({k: v for k, v in env.items() if k not in ("BROWSER", "DISPLAY")},
                    "auth", "application-default", "print-access-token").strip()
    info = _tokeninfo(https_login_server, token)
    assert (info["email"], info["aud"]) == (ALICE, ADC_CLIENT_ID)
