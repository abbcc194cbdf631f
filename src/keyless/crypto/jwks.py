"""External issuers' keys (a JWKS, as a workload identity provider's ``jwksJson`` holds them) and the strict
verification of the tokens they sign: the algorithm pinned to the key's type (RS256 for RSA, ES256 for P-256),
the signature, the times on the injected clock."""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from keyless.crypto.jwt import (
    BadSignature,
    DuplicateMember,
    JwtError,
    JwtTimeError,
    MalformedJwt,
    UnacceptedAlgorithm,
    _check_times,
    b64url_decode,
    loads_unique,
)
from keyless.errors import InvalidArgument

KEY_FIELDS = frozenset({"kty", "alg", "use", "kid", "n", "e", "x", "y", "crv"})
MAX_KEYS = 20
ALGORITHMS = {"RSA": "RS256", "EC": "ES256"}


@dataclass(frozen=True, slots=True)
class IssuerKey:
    kid: str | None
    algorithm: str  # RS256 or ES256: the only algorithm this key verifies
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _int(value: object, field: str) -> int:
    if not isinstance(value, str):
        raise InvalidArgument(f"A JWK's {field} must be a base64url string.", field="oidc.jwksJson")
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"A JWK's {field} is not base64url.", field="oidc.jwksJson") from None


def _parse_key(raw: object, *, lenient: bool) -> IssuerKey:
    """One JWK as an issuer key; INVALID_ARGUMENT when it is not one keyless verifies with (or, strictly, when it
    holds a field Google's jwksJson does not accept)."""
    field = "oidc.jwksJson"
    if not isinstance(raw, dict) or not (lenient or set(raw) <= KEY_FIELDS):
        raise InvalidArgument(f"A JWK may hold only the fields {', '.join(sorted(KEY_FIELDS))}.", field=field)
    kty, alg, kid = raw.get("kty"), raw.get("alg"), raw.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidArgument("A JWK's kid must be a string.", field=field)
    if kty not in ALGORITHMS or alg not in (None, ALGORITHMS[kty]):
        raise InvalidArgument("Only RSA keys for RS256 and EC P-256 keys for ES256 are supported.", field=field)
    if raw.get("use") not in (None, "sig"):
        raise InvalidArgument("A JWK's use must be sig.", field=field)
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    try:
        if kty == "RSA":
            numbers = rsa.RSAPublicNumbers(_int(raw.get("e"), "e"), _int(raw.get("n"), "n"))
            key = numbers.public_key()
            if key.key_size < 2048:
                raise InvalidArgument("RSA keys must be at least 2048 bits.", field=field)
        else:
            if raw.get("crv") != "P-256":
                raise InvalidArgument("EC keys must be on the P-256 curve.", field=field)
            key = ec.EllipticCurvePublicNumbers(_int(raw.get("x"), "x"), _int(raw.get("y"), "y"),
                                                ec.SECP256R1()).public_key()
    except ValueError as exc:
        if isinstance(exc, InvalidArgument):
            raise
        raise InvalidArgument("A JWK does not hold a valid public key.", field=field) from None
    return IssuerKey(kid, ALGORITHMS[kty], key)


def parse_jwks(text: str, *, lenient: bool = False) -> list[IssuerKey]:
    """The keys of a JWKS document (``{"keys": [...]}``), RSA (2048 bits or more) or EC P-256, each with only the
    fields Google accepts; INVALID_ARGUMENT otherwise. ``lenient`` (a JWKS fetched from an issuer, which publishes
    for every relying party): other fields are ignored and keys keyless cannot verify with (encryption keys, other
    algorithms and curves) are skipped; it is refused only when no key is left."""
    field = "oidc.jwksJson"
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidArgument("The JWKS is not valid JSON.", field=field) from None
    raw_keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(raw_keys, list) or not raw_keys or len(raw_keys) > MAX_KEYS:
        raise InvalidArgument(f'The JWKS must be {{"keys": [...]}} with 1 to {MAX_KEYS} keys.', field=field)
    keys = []
    for raw in raw_keys:
        try:
            keys.append(_parse_key(raw, lenient=lenient))
        except InvalidArgument:
            if not lenient:
                raise
    if not keys:
        raise InvalidArgument("The JWKS holds no RSA (RS256) or EC P-256 (ES256) signing key.", field=field)
    return keys


_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+")


def _signature_ok(candidate: IssuerKey, signing_input: bytes, signature: bytes) -> bool:
    try:
        if isinstance(candidate.key, rsa.RSAPublicKey):
            candidate.key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:  # ES256: the JWS signature is r || s, 32 bytes each (RFC 7518 section 3.4)
            if len(signature) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            candidate.key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify_external(token: str, header: dict[str, Any], keys: Iterable[IssuerKey], *, now: float,
                    leeway: float) -> dict[str, Any]:
    """The claims of ``token`` (whose unverified ``header`` the caller read) if one of ``keys`` of the header's
    algorithm (and kid, when it names one) verifies it with that algorithm and its times hold now. ``exp`` and
    ``iat`` are required; the audience and issuer are the caller's to check.

    The JWS is checked here with cryptography directly (PyJWT's decode spent more time checking the base64
    alphabet character by character than verifying the signature): three segments of the base64url alphabet, the
    signature over the first two as sent, then the claims (a JSON object naming each member once)."""
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALGORITHMS.values():
        raise UnacceptedAlgorithm(f"algorithm {str(alg)[:20]!r} is not accepted; only RS256 and ES256 are")
    candidates = [k for k in keys if k.algorithm == alg and (kid is None or k.kid == kid)]
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT_RE.fullmatch(part) for part in parts):
        raise MalformedJwt("malformed JWT")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    try:
        signature = b64url_decode(parts[2])
    except (binascii.Error, ValueError):
        raise MalformedJwt("malformed JWT") from None
    for candidate in candidates:
        if not _signature_ok(candidate, signing_input, signature):
            continue
        try:
            claims = loads_unique(b64url_decode(parts[1]))
        except DuplicateMember as exc:
            raise MalformedJwt(f"malformed JWT: the member {str(exc)[:64]!r} appears more than once") from None
        except (binascii.Error, ValueError):
            raise MalformedJwt("malformed JWT: the claims are not JSON") from None
        if not isinstance(claims, dict):
            raise MalformedJwt("malformed JWT: the claims are not a JSON object")
        for required in ("exp", "iat"):
            if required not in claims:
                raise JwtTimeError(f'Token is missing the "{required}" claim')
        _check_times(claims, now, leeway)
        return claims
    raise BadSignature("invalid signature" if candidates else "no key of the issuer matches the token's kid and alg")


__all__ = ["IssuerKey", "JwtError", "parse_jwks", "verify_external"]
