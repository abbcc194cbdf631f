"""External issuers' keys (a JWKS, as a workload identity provider's ``jwksJson`` holds them) and the strict
verification of the tokens they sign: the algorithm pinned to the key's type (RS256 for RSA, ES256 for P-256),
the signature, the times on the injected clock."""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyless.crypto.jwt import BadSignature, JwtError, UnacceptedAlgorithm, _check_times, _typed, b64url_decode
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


def verify_external(token: str, header: dict[str, Any], keys: Iterable[IssuerKey], *, now: float,
                    leeway: float) -> dict[str, Any]:
    """The claims of ``token`` (whose unverified ``header`` the caller read) if one of ``keys`` of the header's
    algorithm (and kid, when it names one) verifies it with that algorithm and its times hold now. ``exp`` and
    ``iat`` are required; the audience and issuer are the caller's to check."""
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALGORITHMS.values():
        raise UnacceptedAlgorithm(f"algorithm {str(alg)[:20]!r} is not accepted; only RS256 and ES256 are")
    candidates = [k for k in keys if k.algorithm == alg and (kid is None or k.kid == kid)]
    for candidate in candidates:
        try:
            claims: dict[str, Any] = pyjwt.decode(
                token, key=candidate.key, algorithms=[candidate.algorithm],
                options={"require": ["exp", "iat"], "verify_aud": False, "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False})
        except pyjwt.InvalidSignatureError:
            continue
        except pyjwt.PyJWTError as exc:
            raise _typed(exc) from exc
        _check_times(claims, now, leeway)
        return claims
    raise BadSignature("invalid signature" if candidates else "no key of the issuer matches the token's kid and alg")


__all__ = ["IssuerKey", "JwtError", "parse_jwks", "verify_external"]
