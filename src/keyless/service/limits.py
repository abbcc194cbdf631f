"""Input limits and rate limits: each is a documented ``keyless serve`` option with a default."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from keyless.errors import ResourceExhausted


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_path_bytes: int = 4096
    max_delegates: int = 10
    max_scopes: int = 50
    max_sign_blob_bytes: int = 512 * 1024
    max_sign_jwt_bytes: int = 64 * 1024
    rate_limit: float = 0.0  # requests per second per caller; 0 is off
    rate_limit_per_account: float = 0.0  # credential requests per second per target account; 0 is off
    # Connections, per listener (API, metadata, universe, proxy): see keyless.http.protocol.
    header_timeout: float = 10.0  # seconds to receive a request's head
    body_timeout: float = 30.0  # seconds to receive its body once the head is in
    keep_alive_timeout: float = 5.0  # an idle kept-alive connection is closed after this
    tunnel_idle_timeout: float = 300.0  # a proxy tunnel quiet both ways for this long is closed
    max_connections: int = 1000  # more open connections than this are answered 503 and closed


class RateLimiter:
    """Token buckets keyed by caller or account: ``rate`` per second, bursts of up to one second's worth (or
    ``burst``)."""

    MAX_KEYS = 100_000

    def __init__(self, rate: float, *, what: str, now: Callable[[], float] = time.monotonic,
                 burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, rate) if burst is None else burst
        self.what = what
        self._now = now
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
            self._buckets.clear()  # bounded memory: forgetting buckets only ever lets callers through sooner
        self._buckets[key] = (tokens, now)

    def check(self, key: str, *, shown: str | None = None) -> None:
        """Take one request from ``key``'s bucket, or raise ``ResourceExhausted`` (naming ``shown``, by default
        the key) when it is empty."""
        if self.rate <= 0:
            return
        now = self._now()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise ResourceExhausted(f"Quota exceeded: more than {self.rate:g} requests per second {self.what} "
                                    f"'{key if shown is None else shown}'. Retry with exponential backoff.")
        self._store(key, tokens - 1.0, now)

    def take(self, key: str) -> bool:
        """Take one request from ``key``'s bucket when it has one; False (nothing taken) when it is empty. For
        limits on outcomes known only later: take first, ``refund`` when the request turns out not to count."""
        if self.rate <= 0:
            return True
        now = self._now()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            return False
        self._store(key, tokens - 1.0, now)
        return True

    def refund(self, key: str) -> None:
        """Give back one request ``take`` took (never beyond a full bucket)."""
        if self.rate <= 0:
            return
        now = self._now()
        self._store(key, min(self.burst, self._tokens(key, now) + 1.0), now)

    def exhausted(self, key: str) -> bool:
        """Whether ``key``'s bucket is empty now (nothing is taken): for limits charged after the fact."""
        return self.rate > 0 and self._tokens(key, self._now()) < 1.0

    def charge(self, key: str) -> None:
        """Take one request from ``key``'s bucket after the fact, never raising. Requests admitted together
        may take it below empty (down to minus one burst): the bucket then refills for longer."""
        if self.rate <= 0:
            return
        now = self._now()
        self._store(key, max(-self.burst, self._tokens(key, now) - 1.0), now)
