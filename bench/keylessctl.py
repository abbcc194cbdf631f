"""Start ``keyless serve``, prepare a target service account as its owner, and describe each method's load."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import VENV_PY, Processes, expect, http, wait_for
from bench.wrkrun import Load

CLOUD = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
OWNER_MEMBER = "user:owner@keyless.local"
KEYLESS = [str(VENV_PY), "-m", "keyless"]


@dataclass
class KeylessServer:
    """A running ``keyless serve`` with the pids of all its processes and how long it took to be ready."""

    data_dir: Path
    url: str
    metadata: str | None
    pids: list[int]
    ready_s: float
    proc: subprocess.Popen[bytes] = field(repr=False)
    grpc: str | None = None  # host:port of the gRPC listener, when started with --grpc-port
    _token: str | None = field(default=None, repr=False)

    @property
    def owner_token(self) -> str:
        if self._token is None:
            owner = json.loads((self.data_dir / "owner.json").read_text())
            body = expect(http("POST", f"{self.url}/token", form={
                "grant_type": "refresh_token", "client_id": owner["client_id"],
                "client_secret": owner["client_secret"], "refresh_token": owner["refresh_token"]}), "owner token")
            self._token = str(body["access_token"])
        return self._token

    def call(self, method: str, path: str, body: object = None, status: int = 200) -> dict[str, object]:
        got = expect(http(method, f"{self.url}{path}", body, token=self.owner_token), f"{method} {path}", status)
        return dict(got) if isinstance(got, dict) else {}


def start_keyless(procs: Processes, data_dir: Path, *extra: str, workers: int = 2, timeout: float = 60.0,
                  source: Path | None = None) -> KeylessServer:
    """Start a server; ready = endpoints.json written and /healthz answering (time measured from the spawn).

    ``source``: a checkout whose ``src/keyless`` to run (``bench/run --compare``), with this checkout's .venv;
    by default the keyless installed in the .venv."""
    data_dir.mkdir(parents=True, exist_ok=True)
    endpoints = data_dir / "endpoints.json"
    endpoints.unlink(missing_ok=True)
    argv = [*KEYLESS, "serve", "--port", "0", "--data-dir", str(data_dir), *extra]
    if workers != 1:
        argv += ["--workers", str(workers)]
    t0 = time.perf_counter()
    env = None
    if source is not None:
        env = dict(os.environ, PYTHONPATH=str(source / "src"))
    proc = procs.start(argv, log_file=data_dir / "server.log", env=env, cwd=source)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"keyless serve exited: {(data_dir / 'server.log').read_text()[-3000:]}")
        if not endpoints.exists():
            return False
        url = json.loads(endpoints.read_text())["api"]
        return http("GET", f"{url}/healthz", timeout=5)[0] == 200

    wait_for(ready, timeout, "keyless serve", interval=0.002)
    ready_s = time.perf_counter() - t0
    info = json.loads(endpoints.read_text())
    pids = [int(info["pid"]), *(int(p) for p in info.get("workers", []))]
    return KeylessServer(data_dir=data_dir, url=info["api"], metadata=info.get("metadata"), pids=pids,
                         ready_s=ready_s, proc=proc, grpc=info.get("grpc"))


@dataclass
class Target:
    email: str
    unique_id: str
    key_file: Path


def prepare_target(server: KeylessServer, account_id: str = "bench-target") -> Target:
    """Create the target account, let the owner impersonate it, make it a key file and attach it to metadata."""
    project = "keyless-dev"
    created = server.call("POST", f"/v1/projects/{project}/serviceAccounts",
                          {"accountId": account_id, "serviceAccount": {"displayName": "benchmark target"}})
    email = str(created["email"])
    path = f"/v1/projects/-/serviceAccounts/{email}"
    policy = server.call("POST", f"{path}:getIamPolicy")
    policy["bindings"] = [{"role": TOKEN_CREATOR, "members": [OWNER_MEMBER]}]
    server.call("POST", f"{path}:setIamPolicy", {"policy": policy})
    key = server.call("POST", f"{path}/keys", {})
    key_file = server.data_dir / "bench-target-key.json"
    key_file.write_bytes(base64.b64decode(str(key["privateKeyData"])))
    key_file.chmod(0o600)
    if server.metadata:
        server.call("PUT", "/keyless/v1/metadata", {"serviceAccount": email})
    return Target(email=email, unique_id=str(created["uniqueId"]), key_file=key_file)


def jwt_bearer_assertions(key_file: Path, count: int) -> list[str]:
    """Self-signed JWT-bearer assertions (RS256, iss == sub == the account) for its token_uri.

    Each is different (iat = now - i s) and every one is valid for at least 40 minutes: exp = iat + 3600.
    """
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    info = json.loads(key_file.read_text())
    key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": info["private_key_id"]}).encode())
    now = int(time.time())
    out = []
    for i in range(count):
        iat = now - (i % 1200)
        claims = {"iss": info["client_email"], "sub": info["client_email"], "aud": info["token_uri"],
                  "scope": CLOUD, "iat": iat, "exp": iat + 3600}
        signing_input = f"{header}.{b64(json.dumps(claims, separators=(',', ':')).encode())}"
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        out.append(f"{signing_input}.{b64(signature)}")
    return out


METHODS = ("generateAccessToken", "generateIdToken", "signJwt", "signBlob", "token_jwt_bearer", "metadata_token")
# bench/run's rows: also the STS token exchange (issue 18), beside the JWT-bearer grant it is measured against
# (bench/run --compare keeps METHODS: a revision before federation has no exchange to measure).
RUN_METHODS = (*METHODS[:5], "sts_exchange", *METHODS[5:])
RSA_BOUND = ("generateIdToken", "signJwt", "signBlob")
GRPC_METHODS = ("grpc_generateAccessToken", "grpc_signBlob")
GRPC_RSA_BOUND = ("grpc_signBlob",)


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
BENCH_ISSUER = "https://issuer.bench.keyless.test"


def sts_exchange_bodies(server: KeylessServer, count: int) -> list[str]:
    """The STS exchange's load (issue 18): an OIDC provider knowing its issuer's RSA key by its JWKS (parsed once,
    then cached), with the mapping and condition a Kubernetes provider has; ``count`` different subject tokens
    (RS256, kid named, each valid for at least 40 minutes), as form bodies for ``POST /v1/token``."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "kid": "bench", "alg": "RS256"}]})
    project = server.call("GET", "/v1/projects/keyless-dev")
    pools = "/v1/projects/keyless-dev/locations/global/workloadIdentityPools"
    server.call("POST", f"{pools}?workloadIdentityPoolId=bench", {})
    server.call("POST", f"{pools}/bench/providers?workloadIdentityPoolProviderId=cluster", {
        "attributeMapping": {"google.subject": "assertion.sub",
                             "attribute.namespace": "assertion['kubernetes.io'].namespace"},
        "attributeCondition": "attribute.namespace == 'prod'",
        "oidc": {"issuerUri": BENCH_ISSUER, "jwksJson": jwks}})
    audience = (f"//iam.googleapis.com/projects/{project['projectNumber']}/locations/global/workloadIdentityPools/"
                "bench/providers/cluster")
    now = int(time.time())
    bodies = []
    for i in range(count):
        iat = now - (i % 1200)
        token = jwt.encode({"iss": BENCH_ISSUER, "sub": f"system:serviceaccount:prod:workload-{i}", "aud": audience,
                            "iat": iat, "exp": iat + 3600, "kubernetes.io": {"namespace": "prod"}}, key,
                           algorithm="RS256", headers={"kid": "bench"})
        bodies.append(urllib.parse.urlencode({
            "grant_type": TOKEN_EXCHANGE, "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token", "audience": audience,
            "scope": CLOUD, "subject_token": token}))
    return bodies


def grpc_loads(server: KeylessServer, target: Target) -> dict[str, Load]:
    """The gRPC methods' loads (IAMCredentials over ``--grpc-port``, driven by h2load): the same caller, target and
    kind of request as the REST rows, one prepared message each (h2load sends one body)."""
    from google.cloud.iam_credentials_v1 import types
    from google.protobuf import duration_pb2

    from bench.h2loadrun import GrpcLoad

    if not server.grpc:
        return {}
    name = f"projects/-/serviceAccounts/{target.email}"
    base = f"http://{server.grpc}/google.iam.credentials.v1.IAMCredentials"
    metadata = [f"authorization: Bearer {server.owner_token}"]
    token = types.GenerateAccessTokenRequest.pb()(name=name, scope=[CLOUD],
                                                  lifetime=duration_pb2.Duration(seconds=600))
    blob = types.SignBlobRequest.pb()(name=name, payload=secrets.token_bytes(128))
    return {"grpc_generateAccessToken": GrpcLoad(f"{base}/GenerateAccessToken", "POST", metadata,
                                                 message=token.SerializeToString()),
            "grpc_signBlob": GrpcLoad(f"{base}/SignBlob", "POST", metadata, message=blob.SerializeToString())}


def loads(server: KeylessServer, target: Target, *, assertions: list[str] | None = None,
          methods: tuple[str, ...] = METHODS) -> dict[str, Load]:
    """The load of each method: URL, headers and a pool of request bodies."""
    api = [f"Authorization: Bearer {server.owner_token}", "Content-Type: application/json"]
    base = f"{server.url}/v1/projects/-/serviceAccounts/{target.email}"
    now = int(time.time())
    out: dict[str, Load] = {}
    for method in methods:
        if method == "generateAccessToken":
            bodies = [json.dumps({"scope": [CLOUD], "lifetime": f"{600 + 60 * i}s"}) for i in range(16)]
            out[method] = Load(f"{base}:generateAccessToken", "POST", api, bodies)
        elif method == "generateIdToken":
            bodies = [json.dumps({"audience": f"https://svc-{i}.example.com", "includeEmail": True})
                      for i in range(256)]
            out[method] = Load(f"{base}:generateIdToken", "POST", api, bodies)
        elif method == "signJwt":
            bodies = [json.dumps({"payload": json.dumps({"sub": f"user-{i}", "aud": "https://example.com",
                                                         "iat": now, "exp": now + 7200})}) for i in range(256)]
            out[method] = Load(f"{base}:signJwt", "POST", api, bodies)
        elif method == "signBlob":
            bodies = [json.dumps({"payload": base64.b64encode(secrets.token_bytes(32 + i % 200)).decode()})
                      for i in range(256)]
            out[method] = Load(f"{base}:signBlob", "POST", api, bodies)
        elif method == "token_jwt_bearer":
            pool = assertions if assertions is not None else jwt_bearer_assertions(target.key_file, 1000)
            bodies = [urllib.parse.urlencode({"grant_type": JWT_BEARER, "assertion": a}) for a in pool]
            out[method] = Load(f"{server.url}/token", "POST", ["Content-Type: application/x-www-form-urlencoded"],
                               bodies)
        elif method == "sts_exchange":
            out[method] = Load(f"{server.url}/v1/token", "POST", ["Content-Type: application/x-www-form-urlencoded"],
                               sts_exchange_bodies(server, 1000))
        elif method == "metadata_token":
            if not server.metadata:
                continue
            out[method] = Load(f"{server.metadata}/computeMetadata/v1/instance/service-accounts/default/token",
                               "GET", ["Metadata-Flavor: Google"])
        else:
            raise ValueError(method)
    return out


def check_load(load: Load) -> None:
    """Send the pool's first and last body once: the load must be answered 200 before it is measured."""
    from bench.h2loadrun import GrpcLoad, check_grpc_load

    if isinstance(load, GrpcLoad):
        check_grpc_load(load)
        return
    headers = dict(h.split(": ", 1) for h in load.headers)
    for body in (load.bodies[0], load.bodies[-1]) if load.bodies else (None,):
        data = body.encode() if body is not None else None
        if not load.url.startswith("http://127.0.0.1:"):
            raise ValueError(f"loopback only: {load.url}")
        req = urllib.request.Request(load.url, data=data, method=load.method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                status = resp.status
                text = resp.read()[:300]
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read()[:500]
        if status != 200:
            raise RuntimeError(f"{load.method} {load.url}: HTTP {status}: {text!r}")
