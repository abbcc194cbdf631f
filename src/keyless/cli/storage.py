"""``keyless storage sign-url``: Cloud Storage V4 signed URLs (GOOG4-RSA-SHA256) signed without a private key.

With ``--impersonate-service-account`` the string to sign goes to IAM Credentials ``signBlob`` for that account
(with the delegates of the chain), authorized by the active credential: the caller needs Token Creator on the
signer, exactly what google-cloud-storage's ``generate_signed_url`` needs with impersonated credentials. A key
file (``--private-key-file``, or a ``service_account`` file as the active credential) signs locally instead.

``string_to_sign`` and ``verify_signed_url`` follow the V4 algorithm that google-cloud-storage implements; the
tests check that both produce the same URL for the same request time.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from keyless.cli.client import CliError, Session, parse_duration
from keyless.cli.formatting import display
from keyless.cli.help import plain_app
from keyless.errors import MalformedData

app = plain_app(help="Cloud Storage signed URLs.", no_args_is_help=True)
ENDPOINT = "https://storage.googleapis.com"
ALGORITHM = "GOOG4-RSA-SHA256"
MAX_IMPERSONATED_DURATION = 12 * 3600
MAX_DURATION = 7 * 86400


@dataclass
class SignedRequest:
    url: str
    string_to_sign: str
    canonical_query: str


def _quote(value: str, safe: str = "~") -> str:
    return urllib.parse.quote(value, safe=safe)


def resource_of(gs_url: str) -> str:
    """``gs://bucket/a b.txt`` → ``/bucket/a%20b.txt``."""
    if not gs_url.startswith("gs://"):
        raise CliError(f"Invalid URL '{gs_url}': use gs://BUCKET/OBJECT.", exit_code=2)
    bucket, _, name = gs_url[5:].partition("/")
    if not bucket:
        raise CliError(f"Invalid URL '{gs_url}': no bucket.", exit_code=2)
    return f"/{bucket}/{_quote(name, '/~')}" if name else f"/{bucket}"


def canonical_headers(headers: dict[str, str]) -> tuple[str, str]:
    normalized: dict[str, list[str]] = {}
    for key, value in headers.items():
        normalized.setdefault(key.lower().strip(), []).append(" ".join(value.split()))
    ordered = sorted((k, ",".join(v)) for k, v in normalized.items())
    return "".join(f"{k}:{v}\n" for k, v in ordered), ";".join(k for k, _ in ordered)


def canonical_query(params: dict[str, str]) -> str:
    return "&".join(sorted(f"{_quote(k)}={_quote(v)}" for k, v in params.items()))


def string_to_sign(*, method: str, resource: str, signer: str, timestamp: str, expires: int,
                   headers: dict[str, str] | None = None, query: dict[str, str] | None = None,
                   endpoint: str = ENDPOINT) -> SignedRequest:
    """The V4 canonical request and string to sign; ``url`` lacks only ``&X-Goog-Signature=``."""
    all_headers = dict(headers or {})
    if "host" not in {k.lower() for k in all_headers}:
        all_headers["host"] = urllib.parse.urlparse(endpoint).netloc
    header_block, signed_headers = canonical_headers(all_headers)
    scope = f"{timestamp[:8]}/auto/storage/goog4_request"
    params = {k: v or "" for k, v in (query or {}).items()}
    params.update({"X-Goog-Algorithm": ALGORITHM, "X-Goog-Credential": f"{signer}/{scope}",
                   "X-Goog-Date": timestamp, "X-Goog-Expires": str(expires), "X-Goog-SignedHeaders": signed_headers})
    payload = {k.lower(): v for k, v in all_headers.items()}.get("x-goog-content-sha256", "UNSIGNED-PAYLOAD")
    query_string = canonical_query(params)
    request = "\n".join([method.upper(), resource, query_string, header_block, signed_headers, payload])
    digest = hashlib.sha256(request.encode()).hexdigest()
    return SignedRequest(f"{endpoint}{resource}?{query_string}", "\n".join([ALGORITHM, timestamp, scope, digest]),
                         query_string)


def verify_signed_url(url: str, certificates: dict[str, str], *, method: str = "GET",
                      headers: dict[str, str] | None = None) -> str:
    """Check a V4 signed URL against the signer's published certificates; return the signer's email."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    parts = urllib.parse.urlsplit(url)
    params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    signature = bytes.fromhex(params.pop("X-Goog-Signature", ""))
    signer, _, scope = params.get("X-Goog-Credential", "").partition("/")
    all_headers = dict(headers or {})
    all_headers.setdefault("host", parts.netloc)
    header_block, signed_headers = canonical_headers(all_headers)
    if signed_headers != params.get("X-Goog-SignedHeaders"):
        raise MalformedData(f"The URL signs headers {params.get('X-Goog-SignedHeaders')}, not {signed_headers}.")
    request = "\n".join([method.upper(), parts.path, canonical_query(params), header_block, signed_headers,
                         "UNSIGNED-PAYLOAD"])
    text = "\n".join([ALGORITHM, params.get("X-Goog-Date", ""), scope, hashlib.sha256(request.encode()).hexdigest()])
    for pem in certificates.values():
        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        try:
            key.verify(signature, text.encode(), padding.PKCS1v15(), hashes.SHA256())
            return signer
        except InvalidSignature:
            continue
    raise MalformedData(f"The signature does not verify with any published key of {signer}.")


def _sign_with_key(key_info: dict[str, Any], message: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_private_key(str(key_info.get("private_key", "")).encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CliError("The key file does not hold an RSA private key.")
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def _pairs(text: str | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise CliError(f"{flag}: expected KEY=VALUE[,KEY=VALUE...].", exit_code=2)
        out[key.strip()] = value
    return out


def _load_key_file(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        raise CliError(f"Cannot read the key file [{path}].") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise CliError(f"[{path}] is not a service_account key file.")
    return info


@app.command("sign-url")
def sign_url(
    urls: Annotated[list[str], typer.Argument(metavar="URL", help="gs://BUCKET/OBJECT (one or more).")],
    duration: Annotated[str, typer.Option("--duration", "-d", help="How long the URL is valid: 10m, 1h, ...")]
    = "1h",
    http_verb: Annotated[str, typer.Option("--http-verb", "-m", help="GET, PUT, POST, DELETE, HEAD...")] = "GET",
    headers: Annotated[str | None, typer.Option(help="Signed headers: KEY=VALUE,...")] = None,
    query_params: Annotated[str | None, typer.Option(help="Signed query parameters: KEY=VALUE,...")] = None,
    private_key_file: Annotated[Path | None, typer.Option(help="Sign locally with this key file instead.")]
    = None,
) -> None:
    """Generate V4 signed URLs; with --impersonate-service-account the signature comes from signBlob."""
    seconds = parse_duration(duration)
    session = Session()
    key_info: dict[str, Any] | None = None
    if private_key_file is not None:
        key_info = _load_key_file(private_key_file)
    elif session.target is None:
        path = session.options.credential_path()
        try:
            active = json.loads(path.read_text())
        except (OSError, ValueError):
            active = {}
        if not isinstance(active, dict) or active.get("type") != "service_account":
            raise CliError("Signing a URL needs a service account: pass --impersonate-service-account, or "
                           "--private-key-file, or use a service account key file as --credential-file.",
                           exit_code=2)
        key_info = active
    limit = MAX_DURATION if key_info is not None else MAX_IMPERSONATED_DURATION
    if not 0 < seconds <= limit:
        raise CliError(f"--duration must be between 1s and {limit // 3600}h for this kind of signing.", exit_code=2)
    signer = str(key_info["client_email"]) if key_info is not None else str(session.target)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    timestamp = now.strftime("%Y%m%dT%H%M%SZ")
    extra_headers = _pairs(headers, "--headers")
    query = _pairs(query_params, "--query-params")
    rows = []
    for url in urls:
        signed = string_to_sign(method=http_verb, resource=resource_of(url), signer=signer, timestamp=timestamp,
                                expires=seconds, headers=extra_headers, query=query)
        message = signed.string_to_sign.encode()
        if key_info is not None:
            signature = _sign_with_key(key_info, message)
        else:
            blob = session.credentials_call("signBlob", {"payload": base64.b64encode(message).decode()})
            signature = base64.b64decode(blob["signedBlob"])
        rows.append({"expiration": (now + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S"),
                     "http_verb": http_verb.upper(), "resource": url,
                     "signed_url": f"{signed.url}&X-Goog-Signature={signature.hex()}"})
    display(rows, "yaml", is_list=True)
