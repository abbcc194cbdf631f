"""RSA signing keys: generation, X.509 certificates, JWK form, and encryption at rest under the master key."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from keyless.errors import MalformedData
from keyless.private_files import write_private

RSA_BITS = 2048
CERT_VALIDITY_DAYS = 3650
PKCS1_SHA256 = padding.PKCS1v15()


class MasterKey:
    """The key that encrypts private keys at rest; never stored in the database, never logged."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise MalformedData("the master key must be 32 bytes")
        self._aead = AESGCM(self._derive(secret, b"keyless private-key encryption v1"))
        self.token_mac_key = self._derive(secret, b"keyless access-token mac v1")
        self.audit_hash_key = self._derive(secret, b"keyless audit token hash v1")
        # Signs the sign-in page's anti-forgery tokens (keyless.service.signin).
        self.sign_in_key = self._derive(secret, b"keyless sign-in form mac v1")

    @staticmethod
    def _derive(secret: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

    def __repr__(self) -> str:
        return "MasterKey(<redacted>)"

    def encrypt(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = os.urandom(12)
        return b"v1" + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def decrypt(self, blob: bytes, *, context: str) -> bytes:
        if blob[:2] != b"v1":
            raise MalformedData("unknown ciphertext version")
        return self._aead.decrypt(blob[2:14], blob[14:], context.encode())

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKey:
        """Read the master key file, creating it (mode 0600) with a fresh random key if it is missing."""
        if path.exists():
            text = path.read_text().strip()
            return cls(base64.b64decode(text))
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_bytes(32)
        try:
            # Whole or not at all (a crash never leaves an empty key file), and never over another's key.
            write_private(path, base64.b64encode(secret).decode() + "\n", exclusive=True)
        except FileExistsError:  # another process starting on this data dir created it first
            return cls(base64.b64decode(path.read_text().strip()))
        return cls(secret)


@dataclass(frozen=True, slots=True)
class NewKeyPair:
    private_key: rsa.RSAPrivateKey
    private_pkcs8_pem: bytes
    certificate_pem: bytes
    valid_after: float
    valid_before: float


def generate_key_pair(common_name: str, now: float, *, validity_days: int = CERT_VALIDITY_DAYS) -> NewKeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    not_before = dt.datetime.fromtimestamp(int(now), tz=dt.UTC)
    not_after = not_before + dt.timedelta(days=validity_days)
    cert = self_signed_certificate(key, common_name, not_before, not_after)
    return NewKeyPair(
        private_key=key,
        private_pkcs8_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
        valid_after=not_before.timestamp(),
        valid_before=not_after.timestamp(),
    )


def self_signed_certificate(key: rsa.RSAPrivateKey, common_name: str, not_before: dt.datetime,
                            not_after: dt.datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MalformedData("not an RSA private key")
    return key


def load_certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


@functools.lru_cache(maxsize=4096)
def public_key_of_cert(cert_pem: bytes) -> rsa.RSAPublicKey:
    # Cached: a certificate's key never changes, and every JWT-bearer grant and self-signed JWT verifies
    # against one (parsing the PEM certificate cost as much as the rest of the grant's checks).
    key = load_certificate(cert_pem).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise MalformedData("not an RSA public key")
    return key


def public_key_pem(cert_pem: bytes) -> bytes:
    return public_key_of_cert(cert_pem).public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64u_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk_of_cert(cert_pem: bytes, kid: str) -> dict[str, str]:
    numbers = public_key_of_cert(cert_pem).public_numbers()
    return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": _b64u_uint(numbers.n),
            "e": _b64u_uint(numbers.e)}


def sign_pkcs1_sha256(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return key.sign(data, PKCS1_SHA256, hashes.SHA256())
