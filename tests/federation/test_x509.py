"""Workload identity federation with an X.509 provider, end to end on a real ``keyless serve --mtls-port``.

A stand-in CA (a root and an intermediate, as SPIRE's) issues SPIFFE X.509-SVIDs. The provider holds the root as
its trust anchor and the intermediate among its intermediate CAs, maps ``google.subject`` from the SVID's SPIFFE
ID (``assertion.san.uri``) and admits the ``prod`` namespace only. The workload's unchanged google-auth
(``identity_pool.Credentials`` with a certificate source: a certificate configuration file naming its certificate
and key, as ``gcloud iam workload-identity-pools create-cred-config --credential-cert-path`` writes) presents the
SVID on the TLS connection to keyless's mTLS listener, gets a federated token and impersonates an account. Chains
the provider does not trust, expired certificates, certificates not for client authentication, a false condition
and a disabled provider are refused.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.auth import identity_pool
from google.auth.transport.requests import Request

from tests.conftest import CLOUD, Server, start_server
from tests.federation.x509_ca import DAY, Issued, StandInCA, issue, pem

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
MTLS_TYPE = "urn:ietf:params:oauth:token-type:mtls"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
PROJECT = "keyless-dev"
WEB = "ns/prod/sa/web"
SPIFFE_WEB = f"spiffe://example.org/{WEB}"


def _der_b64(issued: Issued) -> str:
    return base64.b64encode(issued.cert.public_bytes(serialization.Encoding.DER)).decode()


@dataclass
class X509Federation:
    server: Server
    mtls: str  # the mTLS listener's URL
    ca_cert: str  # the local CA that certifies it
    ca: StandInCA
    number: str
    pool: str
    provider: str
    audience: str
    account: str
    base: Path

    def exchange(self, client: Issued | None, chain: list[Issued] | None = None, *, url: str | None = None,
                 audience: str | None = None, token: str | None = None) -> requests.Response:
        """The mTLS exchange as Google documents it for a plain request: the client certificate on the TLS
        connection and, as the subject token, the JSON list of base64 DER certificates, the leaf first."""
        cert = client.write(self.base, f"client-{id(client)}") if client is not None else None
        subject = token if token is not None else json.dumps([_der_b64(c) for c in (chain or [client])])  # type: ignore[list-item]
        return requests.post(f"{url or self.mtls}/v1/token", cert=cert, verify=self.ca_cert, timeout=30, data={
            "grant_type": TOKEN_EXCHANGE, "subject_token_type": MTLS_TYPE, "requested_token_type": ACCESS_TOKEN_TYPE,
            "audience": audience or self.audience, "scope": CLOUD, "subject_token": subject})

    def credential_files(self, name: str, svid: Issued, *, impersonate: bool = True,
                         trust_chain: Issued | None = None) -> Path:
        """What ``gcloud iam workload-identity-pools create-cred-config --credential-cert-path ...
        --credential-cert-private-key-path ... --credential-cert-configuration-output-file ...`` writes, with
        keyless's mTLS listener for Google's sts.mtls / iamcredentials.mtls hosts."""
        cert_path, key_path = svid.write(self.base, f"{name}-svid")
        config = self.base / f"{name}-certificate_config.json"
        config.write_text(json.dumps({"cert_configs": {"workload": {"cert_path": str(cert_path),
                                                                    "key_path": str(key_path)}}}))
        certificate: dict[str, Any] = {"certificate_config_location": str(config)}
        if trust_chain is not None:
            chain_path = self.base / f"{name}-chain.pem"
            chain_path.write_text(pem(trust_chain.cert))
            certificate["trust_chain_path"] = str(chain_path)
        info: dict[str, Any] = {"universe_domain": "googleapis.com", "type": "external_account",
                                "audience": self.audience, "subject_token_type": MTLS_TYPE,
                                "token_url": f"{self.mtls}/v1/token", "credential_source": {"certificate": certificate}}
        if impersonate:
            info["service_account_impersonation_url"] = (
                f"{self.mtls}/v1/projects/-/serviceAccounts/{self.account}:generateAccessToken")
        path = self.base / f"{name}-credentials.json"
        path.write_text(json.dumps(info))
        return path


def _pools() -> str:
    return f"/v1/projects/{PROJECT}/locations/global/workloadIdentityPools"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[X509Federation]:
    base = tmp_path_factory.mktemp("x509")
    srv = start_server(base / "data", "--mtls-port", "0", "--proxy-port", "-1", "--metadata-port", "-1")
    try:
        endpoints = json.loads((srv.data_dir / "endpoints.json").read_text())
        ca = StandInCA()
        number = srv.owner("GET", f"/v1/projects/{PROJECT}")["projectNumber"]
        srv.owner("POST", f"{_pools()}?workloadIdentityPoolId=on-prem", {"displayName": "On premises"})
        created = srv.owner("POST", f"{_pools()}/on-prem/providers?workloadIdentityPoolProviderId=spire", {
            "displayName": "SPIRE",
            "x509": ca.trust_store(),
            "attributeMapping": {"google.subject": "assertion.san.uri",
                                 "attribute.workload": "assertion.subject.dn.cn"},
            "attributeCondition": "assertion.san.uri.startsWith('spiffe://example.org/ns/prod/')"})
        provider = created["response"]["name"]
        account = srv.create_sa("on-prem-web")
        pool = f"projects/{number}/locations/global/workloadIdentityPools/on-prem"
        srv.grant(account, f"principal://iam.googleapis.com/{pool}/subject/{SPIFFE_WEB}",
                  "roles/iam.workloadIdentityUser")
        yield X509Federation(srv, endpoints["mtls"], endpoints["caCert"], ca, number, pool, provider,
                             f"//iam.googleapis.com/{provider}", account, base)
    finally:
        srv.stop()


def _tokeninfo(fed: X509Federation, token: str) -> dict[str, Any]:
    r = requests.get(f"{fed.server.url}/tokeninfo", params={"access_token": token}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


# ---------------------------------------------------------------- providers (IAM v1 REST)


def test_x509_providers_are_stored_and_served(fed: X509Federation) -> None:
    srv = fed.server
    got = srv.owner("GET", f"{_pools()}/on-prem/providers/spire")
    assert got["x509"] == fed.ca.trust_store() and "oidc" not in got
    assert got["attributeMapping"]["google.subject"] == "assertion.san.uri"
    listed = srv.owner("GET", f"{_pools()}/on-prem/providers")["workloadIdentityPoolProviders"]
    assert [p["x509"] for p in listed] == [fed.ca.trust_store()]
    # Google's default mapping: the subject's common name.
    other = StandInCA(name="Other")
    op = srv.owner("POST", f"{_pools()}/on-prem/providers?workloadIdentityPoolProviderId=plain",
                   {"x509": other.trust_store(with_intermediate=False)})
    assert op["response"]["attributeMapping"] == {"google.subject": "assertion.subject.dn.cn"}
    rotated = srv.owner("PATCH", f"{_pools()}/on-prem/providers/plain?updateMask=x509.trustStore",
                        {"x509": other.trust_store()})
    assert rotated["response"]["x509"] == other.trust_store()
    srv.owner("DELETE", f"{_pools()}/on-prem/providers/plain")


def _refused_store(fed: X509Federation, x509: Any, *, provider: str = "bad-one", extra: dict[str, Any] | None = None,
                   ) -> str:
    err = fed.server.owner("POST", f"{_pools()}/on-prem/providers?workloadIdentityPoolProviderId={provider}",
                           {"x509": x509, **(extra or {})}, expect=400)
    assert err["error"]["status"] == "INVALID_ARGUMENT"
    return str(err["error"]["message"])


def test_trust_stores_are_checked_when_written(fed: X509Federation) -> None:
    root = pem(fed.ca.root.cert)
    leaf = pem(fed.ca.svid(WEB).cert)
    junk = "-----BEGIN CERTIFICATE-----\njunk\n-----END CERTIFICATE-----\n"
    assert "not a PEM" in _refused_store(fed, {"trustStore": {"trustAnchors": [{"pemCertificate": junk}]}})
    assert "exactly one" in _refused_store(fed, {"trustStore": {"trustAnchors": [{"pemCertificate": "junk"}]}})
    assert "not a CA" in _refused_store(fed, {"trustStore": {"trustAnchors": [{"pemCertificate": leaf}]}})
    assert "exactly one" in _refused_store(fed, {"trustStore": {"trustAnchors": [{"pemCertificate": root + root}]}})
    assert "at most 3" in _refused_store(fed, {"trustStore": {"trustAnchors": [{"pemCertificate": root}] * 4}})
    assert "at most 10" in _refused_store(fed, {"trustStore": {"trustAnchors": [{"pemCertificate": root}],
                                                              "intermediateCas": [{"pemCertificate": root}] * 11}})
    assert "32768 bytes" in _refused_store(fed, {"trustStore": {"trustAnchors": [{"pemCertificate": "x" * 40000}]}})
    assert "at least one trust anchor" in _refused_store(fed, {"trustStore": {"trustAnchors": []}})
    assert "trustStore" in _refused_store(fed, {})
    weak = issue("Weak", ca=True, eku=None, curve=ec.SECP521R1())
    assert "P-256 or P-384" in _refused_store(fed, {"trustStore": {"trustAnchors": [{"pemCertificate":
                                                                                       pem(weak.cert)}]}})
    assert "either oidc or x509" in _refused_store(
        fed, fed.ca.trust_store(), extra={"oidc": {"issuerUri": "https://issuer.example", "jwksJson": "{}"}})
    # An OIDC provider does not become an X.509 one, nor the other way round.
    err = fed.server.owner("PATCH", f"{_pools()}/on-prem/providers/spire?updateMask=oidc",
                           {"oidc": {"issuerUri": "https://issuer.example", "jwksJson": "{}"}}, expect=400)
    assert "cannot change" in err["error"]["message"]


# ---------------------------------------------------------------- the mTLS exchange


def test_google_auth_certificate_source_impersonates_the_account(fed: X509Federation,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fed.ca_cert)
    svid = fed.ca.svid(WEB)
    info = json.loads(fed.credential_files("web", svid).read_text())
    creds = identity_pool.Credentials.from_info(info, scopes=[CLOUD])
    creds.refresh(Request())
    assert _tokeninfo(fed, str(creds.token))["email"] == fed.account
    # Without impersonation: the federated token itself, for the SVID's SPIFFE ID.
    direct = identity_pool.Credentials.from_info(
        json.loads(fed.credential_files("web-direct", svid, impersonate=False).read_text()), scopes=[CLOUD])
    direct.refresh(Request())
    minted = requests.post(f"{fed.server.url}/v1/projects/-/serviceAccounts/{fed.account}:generateAccessToken",
                           json={"scope": [CLOUD]}, headers={"Authorization": f"Bearer {direct.token}"}, timeout=30)
    assert minted.status_code == 200, minted.text
    # A workload of the prod namespace with no binding of its own gets a federated token, but not the account.
    other = identity_pool.Credentials.from_info(
        json.loads(fed.credential_files("api", fed.ca.svid("ns/prod/sa/api")).read_text()), scopes=[CLOUD])
    with pytest.raises(Exception, match=r"403|PERMISSION_DENIED|Permission"):
        other.refresh(Request())


def test_google_auth_with_the_intermediate_in_a_trust_chain_file(fed: X509Federation,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider that knows only the root: the client adds the intermediate (``trust_chain_path``)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fed.ca_cert)
    fed.server.owner("POST", f"{_pools()}/on-prem/providers?workloadIdentityPoolProviderId=root-only", {
        "x509": fed.ca.trust_store(with_intermediate=False),
        "attributeMapping": {"google.subject": "assertion.san.uri"}})
    svid = fed.ca.svid(WEB)
    info = json.loads(fed.credential_files("chain", svid, trust_chain=fed.ca.intermediate).read_text())
    info["audience"] = f"//iam.googleapis.com/{fed.pool}/providers/root-only"
    creds = identity_pool.Credentials.from_info(info, scopes=[CLOUD])
    creds.refresh(Request())
    assert _tokeninfo(fed, str(creds.token))["email"] == fed.account
    # Without the intermediate, the chain does not reach the root.
    refused = fed.exchange(svid, [svid], audience=info["audience"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text


def test_exchange_answers_as_sts_and_maps_the_certificate(fed: X509Federation) -> None:
    r = fed.exchange(fed.ca.svid(WEB))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE and body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    audit = requests.get(f"{fed.server.url}/v1/auditLog", timeout=30,
                         params={"filter": 'method="google.identity.sts.v1.SecurityTokenService.ExchangeToken"',
                                 "pageSize": "1000"},
                         headers={"Authorization": f"Bearer {fed.server.owner_token}"}).json()["entries"]
    member = f"principal://iam.googleapis.com/{fed.pool}/subject/{SPIFFE_WEB}"
    assert any(e["protoPayload"]["authenticationInfo"]["principalEmail"] == member for e in audit)


@pytest.mark.parametrize("case", ["expired", "not-yet-valid", "condition-false", "other-ca", "wrong-leaf",
                                  "too-long-lived", "junk-token"])
def test_refused_certificates_are_oauth_errors(fed: X509Federation, case: str) -> None:
    ca = fed.ca
    svid = ca.svid(WEB)
    chain: list[Issued] | None = None
    token = None
    expected = "invalid_grant"
    if case == "expired":
        svid = ca.svid(WEB, not_before=_days_ago(10), lifetime=5 * DAY)
    elif case == "not-yet-valid":
        svid = ca.svid(WEB, not_before=_days_ago(-2))
    elif case == "condition-false":
        svid, expected = ca.svid("ns/dev/sa/web"), "unauthorized_client"
    elif case == "other-ca":
        # Trusted by another provider (so the TLS layer lets it through), not by this one.
        other = StandInCA(trust_domain="example.org", name="Elsewhere")
        fed.server.owner("POST", f"{_pools()}?workloadIdentityPoolId=elsewhere", {})
        fed.server.owner("POST", f"{_pools()}/elsewhere/providers?workloadIdentityPoolProviderId=other-ca",
                         {"x509": other.trust_store()})
        svid = other.svid(WEB)
    elif case == "wrong-leaf":
        chain = [ca.svid("ns/prod/sa/other")]
    elif case == "too-long-lived":
        svid = ca.svid(WEB, lifetime=391 * DAY)
    elif case == "junk-token":
        token, expected = "not json", "invalid_grant"
    r = fed.exchange(svid, chain, token=token)
    assert r.status_code in (400, 401), r.text
    assert r.json()["error"] == expected, r.text


def _days_ago(days: float) -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC) - days * DAY


def test_chains_the_listener_does_not_know_fail_the_handshake(fed: X509Federation) -> None:
    """A certificate from a CA no X.509 provider holds, or one not for client authentication, does not get through
    the TLS handshake."""
    unknown = StandInCA(name="Unknown").svid(WEB)
    server_only = fed.ca.svid(WEB, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    for client in (unknown, server_only):
        with pytest.raises(requests.exceptions.ConnectionError):
            fed.exchange(client)


def test_the_exchange_needs_the_certificate_on_the_connection(fed: X509Federation) -> None:
    svid = fed.ca.svid(WEB)
    # The subject token alone (public certificates) proves nothing: on the plain API port, or with no client
    # certificate on the mTLS listener, it is refused.
    for url in (fed.server.url, fed.mtls):
        r = requests.post(f"{url}/v1/token", verify=fed.ca_cert, timeout=30, data={
            "grant_type": TOKEN_EXCHANGE, "subject_token_type": MTLS_TYPE, "requested_token_type": ACCESS_TOKEN_TYPE,
            "audience": fed.audience, "subject_token": json.dumps([_der_b64(svid)])})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
        assert "client certificate" in r.json()["error_description"]
    # An mTLS exchange for an OIDC provider, and a JWT for the X.509 one, are refused.
    jwt_for_x509 = requests.post(f"{fed.mtls}/v1/token", verify=fed.ca_cert, timeout=30, data={
        "grant_type": TOKEN_EXCHANGE, "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "requested_token_type": ACCESS_TOKEN_TYPE, "audience": fed.audience, "subject_token": "a.b.c"})
    assert jwt_for_x509.status_code == 400 and "does not match the provider" in jwt_for_x509.text


def test_a_disabled_provider_exchanges_nothing(fed: X509Federation) -> None:
    fed.server.owner("POST", f"{_pools()}/on-prem/providers?workloadIdentityPoolProviderId=switch", {
        "x509": fed.ca.trust_store(), "attributeMapping": {"google.subject": "assertion.san.uri"}})
    audience = f"//iam.googleapis.com/{fed.pool}/providers/switch"
    assert fed.exchange(fed.ca.svid(WEB), audience=audience).status_code == 200
    fed.server.owner("PATCH", f"{_pools()}/on-prem/providers/switch?updateMask=disabled", {"disabled": True})
    r = fed.exchange(fed.ca.svid(WEB), audience=audience)
    assert r.status_code == 400 and r.json()["error"] == "invalid_target", r.text
