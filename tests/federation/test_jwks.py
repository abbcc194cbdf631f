"""A provider's JWKS and the strict verification of external tokens: the algorithm is the key's, never the
token's choice."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyless.crypto.jwks import parse_jwks, verify_external
from keyless.crypto.jwt import BadSignature, ExpiredJwt, UnacceptedAlgorithm, unverified_parts
from keyless.errors import InvalidArgument

NOW = time.time()
CLAIMS = {"iss": "https://issuer.example", "sub": "s", "aud": "a", "iat": int(NOW), "exp": int(NOW) + 600}


def _jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    raw = json.loads(algorithm.to_jwk(key.public_key()))
    return {k: v for k, v in raw.items() if k in ("kty", "n", "e", "x", "y", "crv")} | {"kid": kid}


def _verify(token: str, jwks: str) -> dict[str, object]:
    header, _ = unverified_parts(token)
    return verify_external(token, header, parse_jwks(jwks), now=NOW, leeway=60)


def test_rs256_and_es256_verify_with_their_keys() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = json.dumps({"keys": [_jwk(rsa_key, "r"), _jwk(ec_key, "e")]})
    assert _verify(jwt.encode(CLAIMS, rsa_key, "RS256", headers={"kid": "r"}), jwks)["sub"] == "s"
    assert _verify(jwt.encode(CLAIMS, ec_key, "ES256", headers={"kid": "e"}), jwks)["sub"] == "s"
    assert _verify(jwt.encode(CLAIMS, ec_key, "ES256"), jwks)["sub"] == "s"  # no kid: every key of its type
    with pytest.raises(BadSignature):  # the kid names the other key
        _verify(jwt.encode(CLAIMS, ec_key, "ES256", headers={"kid": "r"}), jwks)
    with pytest.raises(ExpiredJwt):
        _verify(jwt.encode({**CLAIMS, "exp": int(NOW) - 3600}, rsa_key, "RS256"), jwks)


def test_the_token_cannot_choose_another_algorithm() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = json.dumps({"keys": [_jwk(rsa_key, "r")]})
    public_pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    # HS256 keyed with the public key (the classic confusion), PS256, none: refused whatever they carry.
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "kid": "r"}).encode()).decode()
    body = jwt.utils.base64url_encode(json.dumps(CLAIMS).encode()).decode()
    import hashlib
    import hmac

    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    for token in (f"{header}.{body}.{jwt.utils.base64url_encode(mac).decode()}",
                  jwt.encode(CLAIMS, rsa_key, "PS256", headers={"kid": "r"}),
                  jwt.encode(CLAIMS, None, "none")):
        with pytest.raises(UnacceptedAlgorithm):
            _verify(token, jwks)
    # An ES256 header against an RSA-only JWKS finds no key.
    with pytest.raises(BadSignature):
        _verify(jwt.encode(CLAIMS, ec.generate_private_key(ec.SECP256R1()), "ES256"), jwks)


@pytest.mark.parametrize("jwks", [
    "not json", '{"keys": []}', '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
    '{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}',  # a tiny modulus
    '{"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}',
    '{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "x5u": "https://evil.example"}]}',
])
def test_bad_jwks_are_refused(jwks: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_jwks(jwks)
