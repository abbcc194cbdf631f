"""The STS token exchange over gRPC (``google.identity.sts.v1.SecurityTokenService/ExchangeToken``) on a real
``keyless serve``, called by a real grpc channel with a stub built from keyless's own message types: directly on
the gRPC listener and through the interception proxy's h2 relay for ``sts.googleapis.com``. The same exchange as
REST's ``/v1/token``: the token works, refusals are gRPC statuses carrying the OAuth error code in an ErrorInfo,
bad input is INVALID_ARGUMENT, and every exchange is audited as on REST."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from keyless.grpc.sts import EXCHANGE_TOKEN, ExchangeTokenRequest, ExchangeTokenResponse
from tests.conftest import CLOUD, KEYLESS, Server, start_server
from tests.federation.issuer import ISSUER, Issuer

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
EXCHANGE_METHOD = "google.identity.sts.v1.SecurityTokenService.ExchangeToken"


@dataclass
class Sts:
    server: Server
    grpc_endpoint: str
    env: dict[str, str]  # `keyless env`: the proxy and its CA
    issuer: Issuer
    provider: str
    member: str  # the principal:// of the issuer's default subject

    @property
    def audience(self) -> str:
        return f"//iam.googleapis.com/{self.provider}"

    def request(self, **fields: str) -> Any:
        return ExchangeTokenRequest(**{"grant_type": TOKEN_EXCHANGE, "subject_token_type": JWT_TYPE,
                                       "requested_token_type": ACCESS_TOKEN_TYPE, "audience": self.audience,
                                       "scope": CLOUD, **fields})

    def audited(self) -> list[dict[str, Any]]:
        r = requests.get(f"{self.server.url}/v1/auditLog", params={"filter": f'method="{EXCHANGE_METHOD}"',
                                                                    "pageSize": "1000"},
                         headers={"Authorization": f"Bearer {self.server.owner_token}"}, timeout=30)
        assert r.status_code == 200, r.text
        return list(r.json()["entries"])


@pytest.fixture(scope="module")
def sts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sts]:
    srv = start_server(tmp_path_factory.mktemp("sts-grpc") / "data", "--grpc-port", "0", "--proxy-port", "0",
                       "--metadata-port", "-1")
    try:
        issuer = Issuer()
        number = srv.owner("GET", "/v1/projects/keyless-dev")["projectNumber"]
        pools = "/v1/projects/keyless-dev/locations/global/workloadIdentityPools"
        srv.owner("POST", f"{pools}?workloadIdentityPoolId=cluster", {})
        provider = srv.owner("POST", f"{pools}/cluster/providers?workloadIdentityPoolProviderId=k8s-oidc", {
            "attributeMapping": {"google.subject": "assertion.sub",
                                 "attribute.namespace": "assertion['kubernetes.io'].namespace"},
            "attributeCondition": "attribute.namespace == 'prod'",
            "oidc": {"issuerUri": ISSUER, "jwksJson": issuer.jwks()}})["response"]["name"]
        out = subprocess.run([*KEYLESS, "--data-dir", str(srv.data_dir), "env", "--shell", "dotenv"],
                             capture_output=True, text=True, check=True, timeout=60)
        env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        endpoint = json.loads((srv.data_dir / "endpoints.json").read_text())["grpc"]
        member = (f"principal://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/cluster/"
                  "subject/system:serviceaccount:prod:builder")
        yield Sts(srv, endpoint, env, issuer, provider, member)
    finally:
        srv.stop()


def _exchange(channel: grpc.Channel) -> Any:
    return channel.unary_unary(EXCHANGE_TOKEN, request_serializer=ExchangeTokenRequest.SerializeToString,
                               response_deserializer=ExchangeTokenResponse.FromString)


def _introspect(sts: Sts, token: str) -> dict[str, Any]:
    r = requests.post(f"{sts.server.url}/v1/introspect", data={"token": token}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_exchange_on_the_grpc_listener(sts: Sts) -> None:
    before = len(sts.audited())
    with grpc.insecure_channel(sts.grpc_endpoint) as channel:
        answer = _exchange(channel)(sts.request(subject_token=sts.issuer.token(sts.audience)), timeout=30)
    assert (answer.issued_token_type, answer.token_type, answer.expires_in) == (ACCESS_TOKEN_TYPE, "Bearer", 3600)
    info = _introspect(sts, answer.access_token)
    assert info["active"] is True and info["username"] == sts.member
    entries = sts.audited()
    assert len(entries) == before + 1
    assert entries[-1]["protoPayload"]["authenticationInfo"]["principalEmail"] == sts.member
    assert entries[-1]["protoPayload"]["serviceName"] == "sts.googleapis.com"


def test_exchange_through_the_proxy_h2_relay(sts: Sts) -> None:
    """As a gRPC client in ``keyless env`` reaches Google's host: CONNECT through the proxy, TLS with keyless's CA,
    HTTP/2 relayed to the gRPC listener."""
    roots = open(sts.env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"], "rb").read()
    proxy = sts.env.get("https_proxy") or sts.env["HTTPS_PROXY"]
    with grpc.secure_channel("sts.googleapis.com:443", grpc.ssl_channel_credentials(root_certificates=roots),
                             options=[("grpc.http_proxy", proxy)]) as channel:
        answer = _exchange(channel)(sts.request(subject_token=sts.issuer.token(sts.audience)), timeout=30)
    assert _introspect(sts, answer.access_token)["active"] is True


def _refusal(sts: Sts, request: Any) -> tuple[grpc.StatusCode, str, error_details_pb2.ErrorInfo | None]:
    with grpc.insecure_channel(sts.grpc_endpoint) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            _exchange(channel)(request, timeout=30)
    status = rpc_status.from_call(refused.value)
    info = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
    return refused.value.code(), refused.value.details(), info


@pytest.mark.parametrize("case", ["forged", "wrong audience", "condition false", "unsupported grant",
                                  "no subject token", "not a provider"])
def test_refusals_are_statuses_with_the_oauth_error(sts: Sts, case: str) -> None:
    request = {
        "forged": lambda: sts.request(subject_token=Issuer(kid=sts.issuer.kid).token(sts.audience)),
        "wrong audience": lambda: sts.request(subject_token=sts.issuer.token("//iam.googleapis.com/elsewhere")),
        "condition false": lambda: sts.request(subject_token=sts.issuer.token(sts.audience, namespace="dev")),
        "unsupported grant": lambda: sts.request(grant_type="password", subject_token="x"),
        "no subject token": lambda: sts.request(),
        "not a provider": lambda: sts.request(audience="//iam.googleapis.com/projects/1",
                                              subject_token=sts.issuer.token(sts.audience)),
    }[case]()
    before = len(sts.audited())
    code, message, info = _refusal(sts, request)
    expected = {"forged": (grpc.StatusCode.UNAUTHENTICATED, "invalid_grant"),
                "wrong audience": (grpc.StatusCode.UNAUTHENTICATED, "invalid_grant"),
                "condition false": (grpc.StatusCode.PERMISSION_DENIED, "unauthorized_client"),
                "unsupported grant": (grpc.StatusCode.INVALID_ARGUMENT, "unsupported_grant_type"),
                "no subject token": (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
                "not a provider": (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")}[case]
    assert (code, info.reason if info else None) == expected, message
    assert info is not None and info.domain == "sts.googleapis.com"
    if case == "condition false":
        assert message == "The given credential is rejected by the attribute condition."
    entries = sts.audited()
    assert len(entries) == before + 1 and entries[-1]["severity"] == "ERROR"


def test_a_message_that_is_not_protobuf_is_invalid_argument(sts: Sts) -> None:
    with grpc.insecure_channel(sts.grpc_endpoint) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(EXCHANGE_TOKEN)(b"\xff\xff\xff\xff", timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf" in (refused.value.details() or "")
    # The listener still answers.
    with grpc.insecure_channel(sts.grpc_endpoint) as channel:
        assert _exchange(channel)(sts.request(subject_token=sts.issuer.token(sts.audience)), timeout=30).access_token
