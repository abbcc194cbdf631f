"""OIDC issuer discovery for workload identity providers without ``jwksJson``, as Google's STS does it: the issuer's
``{issuerUri}/.well-known/openid-configuration``, then the JWKS at its ``jwks_uri``.

The fetch is made on behalf of unauthenticated exchange requests, to URLs an administrator (the issuer) and the
issuer's own document (``jwks_uri``) chose, so it is held tight:

* https only, with the system's CA store; plain http only to a loopback issuer (``http://127.0.0.1:PORT``,
  ``http://[::1]``, ``http://localhost``), for an issuer on the same machine and for tests;
* at most ``MAX_DOCUMENT`` bytes and ``FETCH_TIMEOUT`` seconds a document, the whole exchange of bytes included;
* at most ``MAX_REDIRECTS`` redirects, each to a URL the same rules accept (never to another scheme);
* nothing fetched reaches the caller: every failure is one ``Unavailable`` (the exchange answers it as OAuth's
  ``temporarily_unavailable``), its reason logged here;
* the keys are kept ``KEYS_TTL`` seconds on the injected clock; a token naming a ``kid`` the cached keys lack
  refetches them, at most once per ``MIN_REFETCH_INTERVAL`` per issuer, as does a retry after a failure; one fetch
  per issuer runs at a time (concurrent exchanges wait for it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from keyless.crypto.jwks import IssuerKey, parse_jwks
from keyless.errors import InvalidArgument, Unavailable

log = logging.getLogger("keyless.federation")

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DOCUMENT = 65_536  # bytes of a discovery document or a JWKS (Google's and GitHub's are 1-3 KB)
MAX_HEAD = 16_384  # bytes of a response's status line and headers
FETCH_TIMEOUT = 5.0  # seconds for one document: connection, TLS, request and the whole response
MAX_REDIRECTS = 2
KEYS_TTL = 3600.0  # seconds the fetched keys are used before they are fetched again
MIN_REFETCH_INTERVAL = 30.0  # seconds between two fetches of one issuer's keys outside the TTL (unknown kid, failure)
MAX_ISSUERS = 1024  # issuers whose keys are kept (one per distinct issuerUri of a provider)
UNAVAILABLE = "The OIDC issuer's keys cannot be fetched now; retry later (the server log says why)."


class FetchFailed(Unavailable):
    """Why an issuer's document could not be had: logged, never sent to the caller (``IssuerKeyCache.keys``
    answers the fixed ``UNAVAILABLE`` instead)."""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_issuer_uri(issuer: str) -> bool:
    """Whether ``issuer`` is an issuer keyless may fetch from: https, or http to a loopback host."""
    try:
        _target(issuer, allow_http=True)
    except FetchFailed:
        return False
    return True


def _target(url: str, *, allow_http: bool) -> tuple[str, str, int, str, bool]:
    """(host, Host header, port, request target, TLS) of a URL keyless may fetch, or FetchFailed."""
    if not url.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise FetchFailed("the URL holds spaces, control or non-ASCII characters")
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise FetchFailed("the URL's port is not valid") from None
    host = parts.hostname
    if not host or parts.username is not None or parts.password is not None:
        raise FetchFailed("the URL names no host, or carries credentials")
    if parts.scheme == "https":
        tls = True
    elif parts.scheme == "http" and allow_http and is_loopback(host):
        tls = False
    else:
        raise FetchFailed(f"the URL's scheme {parts.scheme!r} is not https"
                          + (" (plain http only to a loopback issuer)" if parts.scheme == "http" else ""))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, parts.netloc, port or (443 if tls else 80), target, tls


async def _get_once(url: str, *, allow_http: bool, tls_context: ssl.SSLContext) -> tuple[int, str | None, bytes]:
    """(status, Location, body) of one GET (HTTP/1.0: the body ends with the connection, no chunked coding)."""
    host, authority, port, target, tls = _target(url, allow_http=allow_http)
    reader, writer = await asyncio.open_connection(host, port, ssl=tls_context if tls else None,
                                                   server_hostname=host if tls else None)
    try:
        writer.write(f"GET {target} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n"
                     "User-Agent: keyless-oidc-discovery\r\nConnection: close\r\n\r\n".encode("ascii"))
        await writer.drain()
        received = bytearray()
        while chunk := await reader.read(65_536):
            received += chunk
            if len(received) > MAX_HEAD + MAX_DOCUMENT:
                raise FetchFailed(f"the response is larger than {MAX_DOCUMENT} bytes")
    finally:
        writer.close()
    head, sep, body = bytes(received).partition(b"\r\n\r\n")
    if not sep or len(head) > MAX_HEAD:
        raise FetchFailed("the response has no complete head")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise FetchFailed("the response's status line is not HTTP")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise FetchFailed("the response is chunked (an HTTP/1.0 request was sent)")
    if len(body) > MAX_DOCUMENT:
        raise FetchFailed(f"the document is larger than {MAX_DOCUMENT} bytes")
    return int(status_line[1]), headers.get("location"), body


async def fetch_json(url: str, *, allow_http: bool, tls_context: ssl.SSLContext) -> dict[str, object]:
    """The JSON object at ``url``, by the rules of this module's docstring; FetchFailed otherwise."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                status, location, body = await _get_once(url, allow_http=allow_http, tls_context=tls_context)
        except TimeoutError:
            raise FetchFailed(f"no whole answer within {FETCH_TIMEOUT:g} seconds") from None
        except (OSError, ssl.SSLError, UnicodeError) as exc:
            raise FetchFailed(f"the connection failed ({type(exc).__name__})") from None
        if status in (301, 302, 303, 307, 308) and location:
            url = urllib.parse.urljoin(url, location)  # checked by _target on the next round
            continue
        if status != 200:
            raise FetchFailed(f"the answer's status is {status}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise FetchFailed("the answer is not JSON") from None
        if not isinstance(doc, dict):
            raise FetchFailed("the answer is not a JSON object")
        return doc
    raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")


async def fetch_issuer_keys(issuer: str, *, tls_context: ssl.SSLContext) -> tuple[IssuerKey, ...]:
    """The signing keys an issuer publishes: its discovery document's ``jwks_uri`` (whose ``issuer`` must be the
    issuer itself, as OpenID Connect Discovery requires), then that JWKS's usable keys."""
    allow_http = issuer.startswith("http://")  # only ever a loopback issuer (checked when the provider is written)
    config = await fetch_json(issuer.rstrip("/") + DISCOVERY_PATH, allow_http=allow_http, tls_context=tls_context)
    if config.get("issuer") != issuer:
        raise FetchFailed("the discovery document's issuer is not the provider's issuerUri")
    jwks_uri = config.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise FetchFailed("the discovery document has no jwks_uri")
    jwks = await fetch_json(jwks_uri, allow_http=allow_http, tls_context=tls_context)
    try:
        return tuple(parse_jwks(orjson.dumps(jwks).decode(), lenient=True))
    except InvalidArgument as exc:
        raise FetchFailed(f"the JWKS at jwks_uri is refused: {exc.message}") from None


@dataclass(slots=True)
class _Cached:
    keys: tuple[IssuerKey, ...] = ()
    fetched_at: float = float("-inf")  # when ``keys`` were fetched
    attempted_at: float = float("-inf")  # the last fetch, whatever its outcome


class IssuerKeyCache:
    """Issuers' fetched keys, on the injected clock (``now``)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self._cached: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tls: ssl.SSLContext | None = None
        self.fetches = 0  # fetch attempts made (what the tests count)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:  # the system's CA store (SSL_CERT_FILE / SSL_CERT_DIR name another)
            self._tls = ssl.create_default_context()
        return self._tls

    def _usable(self, cached: _Cached | None, kid: str | None, now: float) -> bool:
        return (cached is not None and bool(cached.keys) and now < cached.fetched_at + KEYS_TTL
                and (kid is None or any(key.kid == kid for key in cached.keys)))

    async def keys(self, issuer: str, kid: str | None) -> tuple[IssuerKey, ...]:
        """The issuer's keys, fetched when none are cached, they are older than the TTL, or ``kid`` names none of
        them (then at most once per ``MIN_REFETCH_INTERVAL``). Unavailable when there are no keys to use."""
        cached = self._cached.get(issuer)
        if self._usable(cached, kid, self.now()):
            assert cached is not None
            return cached.keys
        lock = self._locks.setdefault(issuer, asyncio.Lock())
        async with lock:  # one fetch per issuer at a time; those that waited see its outcome
            now = self.now()
            cached = self._cached.get(issuer)
            if self._usable(cached, kid, now):
                assert cached is not None
                return cached.keys
            if cached is None:
                if len(self._cached) >= MAX_ISSUERS:
                    self._cached.pop(next(iter(self._cached)))
                cached = self._cached[issuer] = _Cached()
            fresh = now < cached.fetched_at + KEYS_TTL
            if now >= cached.attempted_at + MIN_REFETCH_INTERVAL:
                cached.attempted_at = now
                self.fetches += 1
                try:
                    keys = await fetch_issuer_keys(issuer, tls_context=self._tls_context())
                except FetchFailed as exc:
                    log.warning("OIDC discovery of issuer %s failed: %s", issuer[:200], exc)
                else:
                    cached.keys, cached.fetched_at, fresh = keys, now, True
            if fresh and cached.keys:
                return cached.keys  # a kid they lack is then the token's fault: its signature is refused
            raise Unavailable(UNAVAILABLE)
