"""A stand-in OIDC issuer for the federation tests: a Kubernetes cluster's service-account issuer, with its own RSA
key, publishing its JWKS and signing projected tokens."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://kubernetes.default.svc.cluster.local"


class Issuer:
    """An OIDC issuer with its own RSA key (a cluster's service-account issuer)."""

    def __init__(self, kid: str = "cluster-key") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid

    def jwks(self) -> str:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        # As a cluster's /openid/v1/jwks publishes it.
        return json.dumps({"keys": [{"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "kid": self.kid, "alg": "RS256",
                                     "use": "sig"}]})

    def token(self, audience: str, *, subject: str = "system:serviceaccount:prod:builder", namespace: str = "prod",
              lifetime: int = 3600, issuer: str = ISSUER, iat: float | None = None, **extra: Any) -> str:
        now = int(time.time() if iat is None else iat)
        claims = {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "exp": now + lifetime,
                  "kubernetes.io": {"namespace": namespace}, **extra}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
