"""The web console in a real browser: headless Chromium (Debian's package, driven by Selenium and Debian's
chromedriver, as in tests/compat/test_gcloud_login.py) against a real ``keyless serve``.

The scenario of issue 19: sign in (the owner, picked on the sign-in page of ``gcloud auth login``: the API listens
on loopback), create a service account, grant a role on it, see the new edge in the impersonation graph,
troubleshoot a denial, and find the denial in the audit log, where it appears live. A policy changed behind the
console's back is refused with a plain "changed by someone else" message. A graph too large to draw at once is
drawn around one node, which the search box chooses.

With ``KEYLESS_CONSOLE_SCREENSHOTS=DIR`` each page is saved as ``DIR/PAGE.png`` (docs/console.md shows them).
Under ``CI=true`` a missing Chromium or chromedriver fails these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.browser import headless_chromium
from tests.conftest import Server, start_server

PROJECT = "keyless-dev"
OWNER = "owner@keyless.local"
ALICE = "alice@example.com"
ACCOUNT = "console-robot"
EMAIL = f"{ACCOUNT}@{PROJECT}.iam.gserviceaccount.com"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
WAIT = 20.0

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("console") / "data", "--metadata-port", "-1")
    try:
        srv.owner("POST", "/keyless/v1/users", {"email": ALICE})
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser(console_server: Server) -> Iterator[Any]:
    with headless_chromium("--window-size=1280,860", needed_by="the console's browser tests",
                           browser_log=True) as driver:
        driver.set_page_load_timeout(WAIT)
        yield driver


class Console:
    """The browser on the console, with waits for what each step needs."""

    def __init__(self, driver: Any, url: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.url = url
        self.by = By
        self.wait = WebDriverWait(driver, WAIT)
        shots = os.environ.get("KEYLESS_CONSOLE_SCREENSHOTS")
        self.shots = Path(shots) if shots else None

    def find(self, css: str) -> Any:
        return self.wait.until(lambda d: d.find_element(self.by.CSS_SELECTOR, css))

    def all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements(self.by.CSS_SELECTOR, css))

    def until(self, condition: Callable[[], Any], what: str) -> Any:
        try:
            return self.wait.until(lambda _: condition())
        except Exception as exc:
            raise AssertionError(f"waited for {what}; page: {self.driver.find_element(self.by.TAG_NAME, 'body').text!r}; "
                                 f"console log: {self.driver.get_log('browser')}") from exc

    def open(self, page: str) -> Any:
        """Show a page and wait until it has drawn what it loaded."""
        self.driver.get(f"{self.url}/console/#/{page}")
        return self.ready(page.split("?")[0])

    def ready(self, name: str) -> Any:
        return self.until(lambda: self.driver.find_element(self.by.CSS_SELECTOR, f"#page-{name}[data-ready]"),
                          f"page {name}")

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def shot(self, name: str) -> None:
        if self.shots is not None:
            self.shots.mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(self.shots / f"{name}.png"))


@pytest.fixture(scope="module")
def console(browser: Any, console_server: Server) -> Console:
    return Console(browser, console_server.url)


def test_sign_in_with_the_sign_in_page_of_gcloud_login(console: Console) -> None:
    console.driver.get(f"{console.url}/console/")
    console.find("#sign-in").click()
    # keyless's sign-in page, the console named as the client; the owner is picked (the API is on loopback).
    console.until(lambda: "the keyless console" in console.driver.page_source, "the sign-in page")
    console.shot("sign-in")
    console.find(f'[id="account-{OWNER}"]').click()
    console.ready("projects")  # back on the console, the code exchanged for a token
    assert console.find("#who").text == OWNER
    assert console.driver.execute_script("return document.cookie") == ""
    token = console.driver.execute_script("return JSON.parse(sessionStorage.getItem('keyless.console.token')).token")
    assert token.startswith("ya29.")
    assert console.all(f'#page-projects tr[data-project="{PROJECT}"]')
    console.shot("projects")


def test_create_a_service_account(console: Console, console_server: Server) -> None:
    console.open("accounts")
    console.type("#create-account input[name=accountId]", ACCOUNT)
    console.type("#create-account input[name=displayName]", "Console <b>robot</b>")
    console.find("#create-account button[type=submit]").click()
    row = console.until(lambda: console.driver.find_element(console.by.CSS_SELECTOR, f'tr[data-email="{EMAIL}"]'),
                        "the new account's row")
    assert "Console <b>robot</b>" in row.text  # shown as text, not markup
    assert console_server.owner("GET", f"/v1/projects/-/serviceAccounts/{EMAIL}")["displayName"] == \
        "Console <b>robot</b>"
    console.shot("accounts")
    console.open(f"keys?account={EMAIL}")
    console.find("#create-key").click()
    console.until(lambda: console.all("a[download]"), "the key file's link")
    console.shot("keys")


def test_grant_a_role_and_see_the_edge_in_the_graph(console: Console, console_server: Server) -> None:
    console.open(f"policies?account={EMAIL}")
    console.type("#binding-role", TOKEN_CREATOR)
    console.type("#binding-member", f"user:{ALICE}")
    console.find("#binding-add").click()
    console.until(lambda: console.all(f'tr[data-role="{TOKEN_CREATOR}"] [data-member="user:{ALICE}"]'),
                  "the new binding")
    # A conditional grant too: drawn dashed.
    console.type("#binding-role", TOKEN_CREATOR)
    console.type("#binding-member", f"user:{OWNER}")
    console.type("#binding-title", "until-2099")
    console.type("#binding-expression", 'request.time < timestamp("2099-01-01T00:00:00Z")')
    console.find("#binding-add").click()
    console.until(lambda: len(console.all(f'tr[data-role="{TOKEN_CREATOR}"]')) == 2, "the conditional binding")
    policy = console_server.owner("POST", f"/v1/projects/-/serviceAccounts/{EMAIL}:getIamPolicy",
                                  {"options": {"requestedPolicyVersion": 3}})
    assert {"role": TOKEN_CREATOR, "members": [f"user:{ALICE}"]} in policy["bindings"]
    console.shot("policies")

    page = console.open("graph")
    edge = console.find(f'tr.edge[data-source="user:{ALICE}"][data-target="serviceAccount:{EMAIL}"]')
    assert edge.get_attribute("data-conditional") == "false"
    dashed = console.find(f'tr.edge[data-source="user:{OWNER}"][data-target="serviceAccount:{EMAIL}"]')
    assert dashed.get_attribute("data-conditional") == "true"
    assert int(page.get_attribute("data-edges")) >= 2
    styles = console.driver.execute_script(
        "const cy = document.getElementById('graph').cy;"
        "return cy.edges().map(e => [e.data('source'), e.data('target'), e.style('line-style')]);")
    assert [f"user:{OWNER}", f"serviceAccount:{EMAIL}", "dashed"] in styles
    assert [f"user:{ALICE}", f"serviceAccount:{EMAIL}", "solid"] in styles
    # The drawing: a click where the account's node is drawn highlights its paths.
    from selenium.webdriver.common.action_chains import ActionChains

    box = console.find("#graph")
    x, y, width, height = console.driver.execute_script(
        "const g = arguments[0], p = g.cy.getElementById(arguments[1]).renderedPosition();"
        "return [p.x, p.y, g.clientWidth, g.clientHeight];", box, f"serviceAccount:{EMAIL}")
    ActionChains(console.driver).move_to_element_with_offset(box, int(x - width / 2), int(y - height / 2)).click().perform()
    selected = console.until(lambda: console.driver.find_element(console.by.CSS_SELECTOR, "#selected-node"),
                             "the clicked node's paths")
    assert selected.text == f"serviceAccount:{EMAIL}"
    detail = console.find("#graph-detail").text
    assert f"user:{ALICE}" in detail and f"user:{OWNER}" in detail
    console.shot("graph")


def test_troubleshoot_a_denial(console: Console, console_server: Server) -> None:
    # The owner holds Token Creator on the account only under a condition that holds; alice's is unconditional.
    # A denial: the owner asks for an ID token of an account nobody granted anything on.
    other = console_server.create_sa("console-denied")
    r = requests.post(f"{console_server.url}/v1/projects/-/serviceAccounts/{other}:generateAccessToken",
                      json={"scope": ["https://www.googleapis.com/auth/cloud-platform"]},
                      headers={"Authorization": f"Bearer {console_server.owner_token}"}, timeout=10)
    assert r.status_code == 403
    console.open("troubleshoot")
    console.type("#ts-principal", OWNER)
    console.type("#ts-resource", f"//iam.googleapis.com/projects/{PROJECT}/serviceAccounts/{other}")
    console.type("#ts-permission", "iam.serviceAccounts.getAccessToken")
    console.find("#ts-submit").click()
    overall = console.until(lambda: console.driver.find_element(console.by.CSS_SELECTOR, "#overall strong"),
                            "the troubleshooter's answer")
    assert overall.text == "CANNOT_ACCESS"
    console.type("#chain-principal", ALICE)
    console.type("#chain-account", EMAIL)
    console.find("#chain-submit").click()
    chain = console.until(lambda: console.driver.find_element(console.by.CSS_SELECTOR, "#chain-overall strong"),
                          "the chain explanation")
    assert chain.text == "CAN_ACCESS"
    console.shot("troubleshoot")


def test_find_the_denial_in_the_audit_log_live(console: Console, console_server: Server) -> None:
    console.open("audit?denied=true")
    console.until(lambda: console.all('tr.entry[data-method$="GenerateAccessToken"][data-denied="true"]'),
                  "the earlier denial")
    seen = {row.get_attribute("data-insert-id") for row in console.all("tr.entry")}
    # A new denial while the page is open: it appears without a reload.
    denied = f"console-denied@{PROJECT}.iam.gserviceaccount.com"
    console_server.owner("POST", f"/v1/projects/-/serviceAccounts/{denied}:signBlob", {"payload": "aGk="}, expect=403)
    fresh = console.until(lambda: [row for row in console.all("tr.entry")
                                   if row.get_attribute("data-insert-id") not in seen], "a live entry")
    assert all(row.get_attribute("data-denied") == "true" for row in fresh)
    # Filtered by the account and the caller.
    console.type("#audit-account", denied)
    console.type("#audit-caller", OWNER)
    console.find("#audit-apply").click()
    console.until(lambda: f'account="{denied}"' in console.find("#audit-status").text, "the filtered page")
    rows = console.all("tr.entry")
    assert len(rows) == 2  # the earlier GenerateAccessToken and the live SignBlob
    assert all(OWNER in row.text and row.get_attribute("data-denied") == "true" for row in rows)
    console.shot("audit")
    # Its "Explain" opens the chain explanation of that very call.
    rows[0].find_element(console.by.CSS_SELECTOR, "button.explain").click()
    chain = console.until(lambda: console.driver.find_element(console.by.CSS_SELECTOR, "#chain-overall strong"),
                          "the explanation of the denial")
    assert chain.text == "CANNOT_ACCESS"


def test_a_policy_changed_meanwhile_is_refused_with_a_clear_message(console: Console,
                                                                    console_server: Server) -> None:
    console.open(f"policies?account={EMAIL}")
    console_server.grant(EMAIL, "user:someone@example.com", "roles/iam.serviceAccountUser")  # behind its back
    console.type("#binding-role", "roles/iam.serviceAccountUser")
    console.type("#binding-member", f"user:{ALICE}")
    console.find("#binding-add").click()
    banner = console.find("#policy-message .banner")
    assert "changed by someone else" in banner.text and "Reload" in banner.text
    console.find("#policy-reload").click()
    console.until(lambda: console.all('[data-member="user:someone@example.com"]'), "the reloaded policy")


def test_a_large_graph_is_drawn_around_one_node_found_with_the_search_box(console: Console,
                                                                          console_server: Server) -> None:
    # A project whose graph has more nodes than the page draws at once: a group of 200 users holds Token Creator.
    big = "console-big"
    console_server.owner("POST", "/keyless/v1/projects", {"projectId": big})
    email = console_server.create_sa("crowded", project=big)
    console_server.owner("PUT", "/keyless/v1/groups/crowd@example.com",
                         {"members": [f"user:member-{i:03d}@example.com" for i in range(200)]})
    console_server.grant(email, "group:crowd@example.com")
    console.driver.execute_script("sessionStorage.setItem('keyless.console.project', arguments[0])", big)
    try:
        page = console.open("graph")
        assert int(page.get_attribute("data-total")) > 200
        assert int(page.get_attribute("data-nodes")) <= 150
        assert "too many to draw at once" in console.find("#graph-bounds").text
        assert page.get_attribute("data-centre") == f"serviceAccount:{email}"  # the account most grants name
        console.type("#graph-search", "member-199")
        console.find("#graph-suggestions button").click()
        console.until(lambda: page.get_attribute("data-centre") == "user:member-199@example.com", "the searched node")
        drawn = console.driver.execute_script("return document.getElementById('graph').cy.nodes().map(n => n.id());")
        assert {"user:member-199@example.com", "group:crowd@example.com", f"serviceAccount:{email}"} <= set(drawn)
        assert console.find("#selected-node").text == "user:member-199@example.com"
        assert console.all(f'tr.edge[data-source="group:crowd@example.com"][data-target="serviceAccount:{email}"]')
        console.shot("graph-large")
    finally:
        console.driver.execute_script("sessionStorage.setItem('keyless.console.project', arguments[0])", PROJECT)
