"""A stand-in certificate authority for the X.509 federation tests: a root, an intermediate under it, and the
SPIFFE-style X.509-SVIDs (a URI SAN ``spiffe://TRUST_DOMAIN/...``, clientAuth) it issues to workloads."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)
CLIENT_AUTH = (ExtendedKeyUsageOID.CLIENT_AUTH,)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """The certificate and key as PEM files (as a workload's SPIFFE helper writes them)."""
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_text(pem(self.cert))
        key_path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        return cert_path, key_path


def issue(cn: str, issuer: Issued | None = None, *, ca: bool = False, path_length: int | None = None,
          eku: Sequence[x509.ObjectIdentifier] | None = CLIENT_AUTH, uris: Sequence[str] = (),
          dns: Sequence[str] = (), org: str | None = None, not_before: datetime.datetime | None = None,
          lifetime: datetime.timedelta = 30 * DAY, curve: ec.EllipticCurve | None = None) -> Issued:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(curve or ec.SECP256R1())
    start = not_before or now - DAY
    builder = (x509.CertificateBuilder().subject_name(_name(cn, org))
               .issuer_name(issuer.cert.subject if issuer else _name(cn, org))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + lifetime)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                                        critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    names: list[x509.GeneralName] = [*(x509.UniformResourceIdentifier(u) for u in uris),
                                     *(x509.DNSName(d) for d in dns)]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issued(cert, key)


class StandInCA:
    """A root CA and an intermediate CA under it (as SPIRE's upstream and server CAs are), issuing SVIDs."""

    def __init__(self, trust_domain: str = "example.org", name: str = "Example") -> None:
        self.trust_domain = trust_domain
        self.root = issue(f"{name} Root CA", ca=True, eku=None, lifetime=3650 * DAY, org=name)
        self.intermediate = issue(f"{name} Intermediate CA", self.root, ca=True, path_length=0, eku=None,
                                  lifetime=365 * DAY, org=name)

    def trust_store(self, *, with_intermediate: bool = True) -> dict[str, object]:
        store: dict[str, object] = {"trustAnchors": [{"pemCertificate": pem(self.root.cert)}]}
        if with_intermediate:
            store["intermediateCas"] = [{"pemCertificate": pem(self.intermediate.cert)}]
        return {"trustStore": store}

    def svid(self, path: str, **kwargs: object) -> Issued:
        """An X.509-SVID for ``spiffe://TRUST_DOMAIN/PATH``, from the intermediate."""
        spiffe_id = f"spiffe://{self.trust_domain}/{path}"
        return issue(path.rsplit("/", 1)[-1], self.intermediate, uris=[spiffe_id], **kwargs)  # type: ignore[arg-type]
