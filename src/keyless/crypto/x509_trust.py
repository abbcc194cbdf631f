"""X.509 workload identity federation, the certificate work: an X.509 provider's trust store (its trust anchors
and intermediate CAs, as IAM v1's ``x509.trustStore`` spells them) checked when it is written, a client's
certificate chain verified against it (cryptography's path builder, at keyless's clock), and the ``assertion`` a
verified leaf gives the provider's attribute mapping (Google's names: ``subject.dn.cn``, ``san.uri``,
``sha256Fingerprint``...).

The limits are Google's: at most 3 trust anchors and 10 intermediate CAs of at most 32 KB each, a chain at most 5
certificates deep (root and leaf included), RSA keys of 2048 to 4096 bits or EC keys on P-256 or P-384, and a leaf
issued for at most 390 days.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from keyless.errors import InvalidArgument, MalformedData

MAX_TRUST_ANCHORS = 3
MAX_INTERMEDIATE_CAS = 10
MAX_PEM_BYTES = 32 * 1024
MAX_INTERMEDIATES_IN_PATH = 3  # a chain of at most 5: the leaf, 3 intermediates, the trust anchor
MAX_PRESENTED_CERTIFICATES = 10  # the subject token's list: the leaf and the intermediates the client adds
MAX_LEAF_LIFETIME = datetime.timedelta(days=390)
RSA_BITS = (2048, 4096)
EC_CURVES = ("secp256r1", "secp384r1")
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_FIELD = "workloadIdentityPoolProvider.x509"


def check_fields(obj: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    """Refuse a field the API does not define, in the words of keyless.domain.fields (which crypto may not
    import)."""
    for name in obj:
        if name not in allowed:
            raise InvalidArgument(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': "
                                  "Cannot find field.", field=f"{where}.{name}")


class ChainRefused(InvalidArgument):
    """A client's certificate chain that a provider's trust store does not accept; the message says why."""


# ---------------------------------------------------------------- the trust store, when a provider is written

def check_trust_store(raw: object) -> dict[str, Any]:
    """A provider's ``x509`` block: ``{"trustStore": {"trustAnchors": [{"pemCertificate"}], "intermediateCas":
    [{"pemCertificate"}]}}``, each a single CA certificate (basicConstraints CA:TRUE, keyCertSign when key usage is
    given) with a key of Google's kinds; returned as stored."""
    if not isinstance(raw, Mapping):
        raise InvalidArgument("An X.509 provider needs an x509 object with a trustStore.", field=_FIELD)
    check_fields(raw, ("trustStore",), _FIELD)
    store = raw.get("trustStore")
    if not isinstance(store, Mapping):
        raise InvalidArgument("The x509.trustStore is required.", field=f"{_FIELD}.trustStore")
    check_fields(store, ("trustAnchors", "intermediateCas"), f"{_FIELD}.trustStore")
    anchors = _pem_list(store.get("trustAnchors"), "trustAnchors", MAX_TRUST_ANCHORS)
    if not anchors:
        raise InvalidArgument("The x509.trustStore needs at least one trust anchor.",
                              field=f"{_FIELD}.trustStore.trustAnchors")
    intermediates = _pem_list(store.get("intermediateCas"), "intermediateCas", MAX_INTERMEDIATE_CAS)
    out: dict[str, Any] = {"trustAnchors": [{"pemCertificate": pem} for pem in anchors]}
    if intermediates:
        out["intermediateCas"] = [{"pemCertificate": pem} for pem in intermediates]
    return {"trustStore": out}


def _pem_list(raw: object, name: str, limit: int) -> list[str]:
    field = f"{_FIELD}.trustStore.{name}"
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > limit:
        raise InvalidArgument(f"The x509.trustStore.{name} must be a list of at most {limit} certificates.",
                              field=field)
    pems = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise InvalidArgument(f"Each of x509.trustStore.{name} is an object with a pemCertificate.", field=field)
        check_fields(entry, ("pemCertificate",), f"{field}[{i}]")
        pem = entry.get("pemCertificate")
        if not isinstance(pem, str) or not pem.strip():
            raise InvalidArgument(f"x509.trustStore.{name}[{i}].pemCertificate is required.", field=field)
        if len(pem.encode()) > MAX_PEM_BYTES:
            raise InvalidArgument(f"x509.trustStore.{name}[{i}].pemCertificate is larger than {MAX_PEM_BYTES} "
                                  "bytes.", field=field)
        _check_ca(pem, f"x509.trustStore.{name}[{i}]", field)
        pems.append(pem)
    return pems


def _check_ca(pem: str, what: str, field: str) -> x509.Certificate:
    if pem.count(_PEM_BEGIN) != 1:
        raise InvalidArgument(f"{what}.pemCertificate must hold exactly one PEM certificate.", field=field)
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise InvalidArgument(f"{what}.pemCertificate is not a PEM X.509 certificate.", field=field) from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = _extension(cert, x509.KeyUsage)
    except (x509.ExtensionNotFound, ValueError):
        constraints, usage = None, None
    if constraints is None or not constraints.ca:
        raise InvalidArgument(f"{what} is not a CA certificate (basicConstraints CA:TRUE is required).", field=field)
    if usage is not None and not usage.key_cert_sign:
        raise InvalidArgument(f"{what} is a CA whose key usage lacks keyCertSign.", field=field)
    problem = key_problem(cert)
    if problem:
        raise InvalidArgument(f"{what}: {problem}", field=field)
    return cert


def key_problem(cert: x509.Certificate) -> str | None:
    """Why a certificate's key is not one Google accepts (RSA 2048-4096 bits, EC P-256 or P-384); None if it is."""
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        return "its public key cannot be read."
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
            return f"RSA keys must have {RSA_BITS[0]} to {RSA_BITS[1]} bits, not {key.key_size}."
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            return f"EC keys must be on P-256 or P-384, not {key.curve.name}."
        return None
    return "only RSA and EC (P-256, P-384) keys are accepted."


def _extension(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def store_pems(trust: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """A stored ``x509`` block's trust anchors and intermediate CAs, as PEM texts."""
    store = trust.get("trustStore") or {}
    return ([a["pemCertificate"] for a in store.get("trustAnchors") or ()],
            [i["pemCertificate"] for i in store.get("intermediateCas") or ()])


# ---------------------------------------------------------------- a client's chain, at exchange time

def parse_subject_token(token: str) -> list[x509.Certificate]:
    """The mTLS exchange's ``subject_token``: a JSON list of base64 DER certificates, the leaf first (what
    google-auth's certificate source sends, and Google's documented form); ChainRefused when it is not."""
    try:
        raw = orjson.loads(token)
    except orjson.JSONDecodeError:
        raise ChainRefused("The subject_token must be a JSON list of base64-encoded DER certificates, the "
                           "client certificate first.") from None
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
        raise ChainRefused("The subject_token must be a non-empty JSON list of base64-encoded DER certificates.")
    if len(raw) > MAX_PRESENTED_CERTIFICATES:
        raise ChainRefused(f"The subject_token holds more than {MAX_PRESENTED_CERTIFICATES} certificates.")
    certs = []
    for i, text in enumerate(raw):
        try:
            certs.append(x509.load_der_x509_certificate(base64.b64decode(text, validate=True)))
        except (ValueError, binascii.Error):
            raise ChainRefused(f"The subject_token's certificate {i} is not a base64-encoded DER certificate.") \
                from None
    return certs


def _is_ca(policy: Any, cert: x509.Certificate, ext: x509.BasicConstraints | None) -> None:
    if ext is None or not ext.ca:
        raise MalformedData("an issuer in the chain is not a CA (basicConstraints CA:TRUE)")


def _signs_certificates(policy: Any, cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise MalformedData("a CA in the chain lacks the keyCertSign key usage")


def _for_client_auth(policy: Any, cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None) -> None:
    # RFC 5280: no extended key usage means any; one that is given must allow TLS client authentication (OpenSSL's
    # "ssl_client" purpose checks the CAs' as well, which is why Google's example CAs carry clientAuth).
    if ext is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in ext \
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ext:
        raise MalformedData("its extended key usage does not include clientAuth")


def _not_a_ca(policy: Any, cert: x509.Certificate, ext: x509.BasicConstraints | None) -> None:
    if ext is not None and ext.ca:
        raise MalformedData("the client certificate is a CA certificate")


def _signs(policy: Any, cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
    if ext is not None and not ext.digital_signature:
        raise MalformedData("the client certificate's key usage lacks digitalSignature (TLS client authentication "
                         "signs with it)")


_AGNOSTIC = Criticality.AGNOSTIC
# Not the Web PKI's defaults (which demand authority key identifiers and SANs that private CAs often leave out):
# what client authentication needs, checked on every certificate of the path.
_CA_POLICY = (ExtensionPolicy.permit_all()
              .require_present(x509.BasicConstraints, _AGNOSTIC, _is_ca)
              .may_be_present(x509.KeyUsage, _AGNOSTIC, _signs_certificates)
              .may_be_present(x509.ExtendedKeyUsage, _AGNOSTIC, _for_client_auth))
_EE_POLICY = (ExtensionPolicy.permit_all()
              .may_be_present(x509.BasicConstraints, _AGNOSTIC, _not_a_ca)
              .may_be_present(x509.KeyUsage, _AGNOSTIC, _signs)
              .may_be_present(x509.ExtendedKeyUsage, _AGNOSTIC, _for_client_auth))


def verify_client_chain(leaf: x509.Certificate, presented: Sequence[x509.Certificate], trust: Mapping[str, Any],
                        now: float) -> list[x509.Certificate]:
    """The verified path (leaf first, trust anchor last) from ``leaf`` to one of the provider's trust anchors,
    through its intermediate CAs and those the client ``presented``; checked at ``now`` (keyless's clock), with
    path length constraints, at most 3 intermediates, clientAuth where an extended key usage is given, and
    Google's key kinds and leaf lifetime. ChainRefused says why not."""
    anchors_pem, intermediates_pem = store_pems(trust)
    anchors = [x509.load_pem_x509_certificate(p.encode()) for p in anchors_pem]
    intermediates = [*(x509.load_pem_x509_certificate(p.encode()) for p in intermediates_pem), *presented]
    if leaf.not_valid_after_utc - leaf.not_valid_before_utc > MAX_LEAF_LIFETIME:
        raise ChainRefused("The client certificate's validity period is longer than 390 days.")
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    verifier = (PolicyBuilder().store(Store(anchors)).time(moment).max_chain_depth(MAX_INTERMEDIATES_IN_PATH)
                .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY).build_client_verifier())
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise ChainRefused(f"The client certificate chain is not trusted by the provider: {_reason(exc)}.") \
            from None
    for cert in verified.chain:
        problem = key_problem(cert)
        if problem:
            raise ChainRefused(f"A certificate of the client's chain ({_name(cert)}) is refused: {problem}")
    return list(verified.chain)


def _reason(exc: VerificationError) -> str:
    # cryptography's text names the certificate with a repr; keep the reason, bounded.
    text = str(exc).removeprefix("validation failed: ")
    return text.split(" (encountered processing", 1)[0][:300]


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()[:200] or "no subject"


# ---------------------------------------------------------------- what the mapping sees

def _dn(name: x509.Name) -> dict[str, str]:
    out = {}
    for key, oid in (("cn", NameOID.COMMON_NAME), ("o", NameOID.ORGANIZATION_NAME)):
        values = name.get_attributes_for_oid(oid)
        if values:
            out[key] = str(values[0].value)
    units = name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if units:
        out["ou"] = str(units[-1].value)  # Google's "last organization unit"
    return out


def assertion_of(leaf: x509.Certificate) -> dict[str, Any]:
    """The ``assertion`` a verified client certificate gives the provider's attribute mapping and condition, in
    Google's names: ``serialNumberHex``, ``subject.dn.{cn,o,ou}``, ``issuer.dn.{cn,o,ou}``, ``san.dns`` (the first
    DNS name), ``san.uri`` (the first URI: a SPIFFE ID) and ``sha256Fingerprint`` (base64 of the DER's SHA-256).
    A field the certificate does not have is absent (an expression reading it yields no value)."""
    assertion: dict[str, Any] = {
        "serialNumberHex": format(leaf.serial_number, "x"),
        "subject": {"dn": _dn(leaf.subject)},
        "issuer": {"dn": _dn(leaf.issuer)},
        "sha256Fingerprint": base64.b64encode(hashlib.sha256(leaf.public_bytes(Encoding.DER)).digest()).decode(),
    }
    san = _extension(leaf, x509.SubjectAlternativeName)
    if san is not None:
        names: dict[str, str] = {}
        dns = san.get_values_for_type(x509.DNSName)
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if dns:
            names["dns"] = dns[0]
        if uris:
            names["uri"] = uris[0]
        assertion["san"] = names
    return assertion
