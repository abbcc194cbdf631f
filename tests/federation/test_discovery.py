"""OIDC issuer discovery: a provider without ``jwksJson`` verifies tokens with the keys its issuer publishes
(``/.well-known/openid-configuration``, then ``jwks_uri``), fetched from a real issuer on loopback.

The fetch is an attacker's lever (an unauthenticated request makes keyless fetch), so it is bounded: the keys are
cached on keyless's clock, an unknown ``kid`` refetches at most once per interval, an issuer that is down,
redirects elsewhere, answers too much or something else is ``temporarily_unavailable`` (never a 500), and nothing
it sent reaches the caller."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from keyless.errors import OAuthError, Unavailable
from keyless.service import oidc_discovery
from keyless.storage.base import WorkloadPool, WorkloadProvider
from tests.conftest import InProcess, start_server
from tests.federation.discovery_issuer import HttpIssuer, Route, running_issuer
from tests.federation.issuer import Issuer

EXCHANGE = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token"}
CONFIG = "/.well-known/openid-configuration"
MARKER = "ISSUER-BODY-MARKER"


@pytest.fixture
def issuer() -> Iterator[HttpIssuer]:
    with running_issuer() as running:
        yield running


def _provider(inproc: InProcess, issuer_uri: str, provider_id: str = "discovered") -> str:
    store = inproc.keyless.store
    project = inproc.run(store.get_project("keyless-dev"))
    pool = f"projects/{project.number}/locations/global/workloadIdentityPools/cluster"
    if inproc.run(store.get_workload_pool(pool)) is None:
        inproc.run(store.create_workload_pool(WorkloadPool(pool, project.number)))
    provider = f"{pool}/providers/{provider_id}"
    inproc.run(store.create_workload_provider(WorkloadProvider(
        provider, pool, attribute_mapping={"google.subject": "assertion.sub"}, oidc={"issuerUri": issuer_uri})))
    return provider


def _exchange(inproc: InProcess, provider: str, token: str) -> dict[str, object]:
    form = {**EXCHANGE, "audience": f"//iam.googleapis.com/{provider}", "subject_token": token}
    return dict(inproc.run(inproc.keyless.federation.exchange(form)))


def _audience(provider: str) -> str:
    return f"//iam.googleapis.com/{provider}"


def test_keys_are_discovered_and_cached_for_their_ttl(inproc: InProcess, issuer: HttpIssuer) -> None:
    provider = _provider(inproc, issuer.url)
    assert "access_token" in _exchange(inproc, provider, issuer.token(_audience(provider)))
    assert "access_token" in _exchange(inproc, provider, issuer.token(_audience(provider), subject="other"))
    assert (issuer.count(CONFIG), issuer.count("/jwks")) == (1, 1)  # the second exchange used the cached keys
    inproc.clock.advance(oidc_discovery.KEYS_TTL + 1)
    assert "access_token" in _exchange(inproc, provider, issuer.token(_audience(provider)))
    assert (issuer.count(CONFIG), issuer.count("/jwks")) == (2, 2)


def test_an_unknown_kid_refetches_once_per_interval(inproc: InProcess, issuer: HttpIssuer) -> None:
    provider = _provider(inproc, issuer.url)
    assert "access_token" in _exchange(inproc, provider, issuer.token(_audience(provider)))
    issuer.keys.append(Issuer(kid="key-2"))  # the issuer rotates: a token signed by its new key arrives
    inproc.clock.advance(oidc_discovery.MIN_REFETCH_INTERVAL)  # (within the interval it would be refused)
    assert "access_token" in _exchange(inproc, provider, issuer.token(_audience(provider), key=1))
    assert issuer.count("/jwks") == 2
    # Tokens naming keys the issuer never published: refused, and no fetch before the interval is over.
    rogue = Issuer(kid="rogue")
    for _ in range(5):
        with pytest.raises(OAuthError) as refused:
            _exchange(inproc, provider, rogue.token(_audience(provider), issuer=issuer.url))
        assert refused.value.error == "invalid_grant"
    assert issuer.count("/jwks") == 2
    inproc.clock.advance(oidc_discovery.MIN_REFETCH_INTERVAL)
    with pytest.raises(OAuthError):
        _exchange(inproc, provider, rogue.token(_audience(provider), issuer=issuer.url))
    assert issuer.count("/jwks") == 3


def test_an_issuer_that_is_down_is_temporarily_unavailable(inproc: InProcess) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    provider = _provider(inproc, f"http://127.0.0.1:{port}")
    token = Issuer().token(_audience(provider), issuer=f"http://127.0.0.1:{port}")
    for _ in range(3):
        with pytest.raises(Unavailable) as refused:
            _exchange(inproc, provider, token)
        assert refused.value.oauth().to_json()["error"] == "temporarily_unavailable"
    assert inproc.keyless.federation.issuer_keys.fetches == 1  # retried only after the interval


def _json(body: object) -> bytes:
    return json.dumps(body).encode()


def _answer(status: int, body: bytes, **headers: str) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return route


@pytest.mark.parametrize("case", ["error status", "not json", "too large", "redirect to ftp",
                                  "redirect to plain http elsewhere", "redirect loop", "wrong issuer",
                                  "jwks_uri over plain http elsewhere", "jwks without usable keys"])
def test_a_misbehaving_issuer_is_refused_without_relaying_it(inproc: InProcess, issuer: HttpIssuer,
                                                             case: str) -> None:
    marker = MARKER.encode()
    config = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
    route = {
        "error status": _answer(500, b"<html>" + marker),
        "not json": _answer(200, marker),
        "too large": _answer(200, b'{"issuer": "' + marker * 5000 + b'"}'),
        "redirect to ftp": _answer(302, b"", Location="ftp://127.0.0.1/" + MARKER),
        "redirect to plain http elsewhere": _answer(302, b"", Location="http://192.0.2.1/" + MARKER),
        "redirect loop": _answer(302, b"", Location=CONFIG),
        "wrong issuer": _answer(200, _json({**config, "issuer": "https://" + MARKER})),
        "jwks_uri over plain http elsewhere": _answer(200, _json({**config,
                                                                            "jwks_uri": "http://192.0.2.1/jwks"})),
        "jwks without usable keys": None,
    }[case]
    if route is not None:
        issuer.routes[CONFIG] = route
    else:
        issuer.routes["/jwks"] = _answer(200, _json(
            {"keys": [{"kty": "oct", "k": MARKER}]}))
    provider = _provider(inproc, issuer.url)
    with pytest.raises(Unavailable) as refused:
        _exchange(inproc, provider, issuer.token(_audience(provider)))
    assert MARKER not in refused.value.message and "192.0.2.1" not in refused.value.message
    assert issuer.count(CONFIG) <= oidc_discovery.MAX_REDIRECTS + 1


def test_a_redirect_the_rules_accept_is_followed(inproc: InProcess, issuer: HttpIssuer) -> None:
    issuer.routes["/.well-known/openid-configuration"] = _answer(
        301, b"", Location=f"{issuer.url}/moved/.well-known/openid-configuration")
    issuer.routes["/moved/.well-known/openid-configuration"] = _answer(
        200, _json({"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}))
    provider = _provider(inproc, issuer.url)
    assert "access_token" in _exchange(inproc, provider, issuer.token(_audience(provider)))


def test_an_issuer_that_stalls_is_given_up(inproc: InProcess, issuer: HttpIssuer) -> None:
    release = threading.Event()

    def stall(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.wfile.write(b'{"issuer": ')
        handler.wfile.flush()
        release.wait(30)

    issuer.routes[CONFIG] = stall
    provider = _provider(inproc, issuer.url)
    try:
        with pytest.raises(Unavailable):
            _exchange(inproc, provider, issuer.token(_audience(provider)))
    finally:
        release.set()


@pytest.mark.parametrize("issuer_uri", ["http://issuer.example", "http://10.0.0.1:8080", "ftp://127.0.0.1",
                                        "https://user:pass@issuer.example", "https://issuer.example/a b"])
def test_only_https_or_loopback_http_issuers_are_accepted(inproc: InProcess, issuer_uri: str) -> None:
    assert not oidc_discovery.check_issuer_uri(issuer_uri)


def test_discovery_over_rest_on_a_real_server(tmp_path_factory: pytest.TempPathFactory,
                                              issuer: HttpIssuer) -> None:
    srv = start_server(tmp_path_factory.mktemp("discovery") / "data", "--proxy-port", "-1", "--metadata-port", "-1")
    try:
        pools = "/v1/projects/keyless-dev/locations/global/workloadIdentityPools"
        srv.owner("POST", f"{pools}?workloadIdentityPoolId=cluster", {})
        mapping = {"google.subject": "assertion.sub"}
        bad = srv.owner("POST", f"{pools}/cluster/providers?workloadIdentityPoolProviderId=plain-http", {
            "attributeMapping": mapping, "oidc": {"issuerUri": "http://issuer.example"}}, expect=400)
        assert "issuerUri" in bad["error"]["message"]
        provider = srv.owner("POST", f"{pools}/cluster/providers?workloadIdentityPoolProviderId=discovered", {
            "attributeMapping": mapping, "oidc": {"issuerUri": issuer.url}})["response"]["name"]
        assert "jwksJson" not in srv.owner("GET", f"/v1/{provider}")["oidc"]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            down = f"http://127.0.0.1:{closed.getsockname()[1]}"
        down_provider = srv.owner("POST", f"{pools}/cluster/providers?workloadIdentityPoolProviderId=down", {
            "attributeMapping": mapping, "oidc": {"issuerUri": down}})["response"]["name"]

        def exchange(name: str, token: str) -> requests.Response:
            return requests.post(f"{srv.url}/v1/token", data={**EXCHANGE, "audience": _audience(name),
                                                              "subject_token": token}, timeout=30)

        granted = exchange(provider, issuer.token(_audience(provider)))
        assert granted.status_code == 200, granted.text
        refused = exchange(down_provider, Issuer().token(_audience(down_provider), issuer=down))
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "temporarily_unavailable"
    finally:
        srv.stop()
