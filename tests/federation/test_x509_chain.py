"""keyless.crypto.x509_trust on its own, and the mTLS exchange in process with the certificate a listener would
hand it: the checks the TLS layer in front may mask (extended key usage, path length, depth, key kinds) are the
application's too, at keyless's clock."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from keyless.crypto import x509_trust
from keyless.crypto.x509_trust import ChainRefused, assertion_of, verify_client_chain
from keyless.errors import OAuthError
from keyless.storage.base import WorkloadPool, WorkloadProvider
from tests.conftest import InProcess
from tests.federation.x509_ca import DAY, StandInCA, issue, pem

NOW = time.time()
MTLS = "urn:ietf:params:oauth:token-type:mtls"


def test_a_svid_verifies_and_gives_googles_assertion() -> None:
    ca = StandInCA()
    svid = ca.svid("ns/prod/sa/web", dns=["web.prod.svc"], org="Example")
    chain = verify_client_chain(svid.cert, [], ca.trust_store(), NOW)
    assert [c.subject for c in chain] == [svid.cert.subject, ca.intermediate.cert.subject, ca.root.cert.subject]
    assertion = assertion_of(svid.cert)
    assert assertion["san"] == {"uri": "spiffe://example.org/ns/prod/sa/web", "dns": "web.prod.svc"}
    assert assertion["subject"]["dn"] == {"cn": "web", "o": "Example"}
    assert assertion["issuer"]["dn"]["cn"] == "Example Intermediate CA"
    assert assertion["serialNumberHex"] == format(svid.cert.serial_number, "x")
    assert len(base64.b64decode(assertion["sha256Fingerprint"])) == 32


@pytest.mark.parametrize("case", ["server-auth", "expired", "path-length", "too-deep", "leaf-is-ca", "p521-leaf",
                                  "untrusted"])
def test_chains_refused(case: str) -> None:
    ca = StandInCA()
    leaf, presented, trust = ca.svid("ns/prod/sa/web"), [], ca.trust_store()
    if case == "server-auth":
        leaf = ca.svid("ns/prod/sa/web", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    elif case == "expired":
        leaf = ca.svid("ns/prod/sa/web", lifetime=DAY / 2)
    elif case == "path-length":  # the intermediate's pathLen 0 forbids a CA beneath it
        sub = issue("Sub CA", ca.intermediate, ca=True, eku=None)
        leaf, presented = issue("web", sub), [sub.cert]
    elif case == "too-deep":  # root, four intermediates, leaf: deeper than Google's 5
        issuer, presented = ca.root, []
        for n in range(4):
            issuer = issue(f"CA {n}", issuer, ca=True, eku=None)
            presented.append(issuer.cert)
        leaf, trust = issue("web", issuer), ca.trust_store(with_intermediate=False)
    elif case == "leaf-is-ca":
        leaf = issue("web", ca.intermediate, ca=True)
    elif case == "p521-leaf":
        leaf = issue("web", ca.intermediate, curve=ec.SECP521R1())
    elif case == "untrusted":
        leaf = StandInCA(name="Other").svid("ns/prod/sa/web")
    with pytest.raises(ChainRefused):
        verify_client_chain(leaf.cert, presented, trust, NOW)


def _exchange(inproc: InProcess, provider: str, subject: list[bytes], presented: bytes | None) -> dict[str, object]:
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token_type": MTLS,
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "audience": f"//iam.googleapis.com/{provider}",
            "subject_token": json.dumps([base64.b64encode(d).decode() for d in subject])}
    return dict(inproc.run(inproc.keyless.federation.exchange(form, client_certificate=presented)))


def test_exchange_in_process_at_keylesss_clock(inproc: InProcess) -> None:
    store, ca = inproc.keyless.store, StandInCA()
    project = inproc.run(store.get_project("keyless-dev"))
    pool = f"projects/{project.number}/locations/global/workloadIdentityPools/on-prem"
    provider = f"{pool}/providers/spire"
    inproc.run(store.create_workload_pool(WorkloadPool(pool, project.number)))
    inproc.run(store.create_workload_provider(WorkloadProvider(
        provider, pool, attribute_mapping={"google.subject": "assertion.san.uri"}, x509=ca.trust_store())))
    svid = ca.svid("ns/prod/sa/web")
    der = svid.cert.public_bytes(serialization.Encoding.DER)
    assert "access_token" in _exchange(inproc, provider, [der], der)
    server_auth = ca.svid("ns/prod/sa/web", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    sa_der = server_auth.cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(OAuthError, match="clientAuth"):
        _exchange(inproc, provider, [sa_der], sa_der)
    # keyless's clock, not the machine's: 31 days on, the 30-day SVID has expired.
    inproc.clock.advance(31 * DAY.total_seconds())
    with pytest.raises(OAuthError, match="not valid at validation time") as refused:
        _exchange(inproc, provider, [der], der)
    assert refused.value.error == "invalid_grant"


def test_trust_store_pems() -> None:
    ca = StandInCA()
    assert x509_trust.store_pems(ca.trust_store()) == ([pem(ca.root.cert)], [pem(ca.intermediate.cert)])
