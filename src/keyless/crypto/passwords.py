"""Sign-in passwords: stored as salted scrypt hashes (RFC 7914), checked in constant time.

A stored hash reads ``scrypt$N$r$p$SALT$HASH`` (salt and hash in base64url): the cost parameters travel with it,
so raising them later still checks the hashes stored before. Hashing costs tens of milliseconds and 32 MiB by
design; callers run it off the event loop.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from keyless.errors import MalformedData

SCHEME = "scrypt"
COST_N = 2**15
BLOCK_R = 8
PARALLEL_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_LENGTH = 8
MAX_LENGTH = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES,
                          maxmem=2 * 128 * n * r * p + 1024 * 1024)


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be set, in one sentence; None when it can."""
    if len(password) < MIN_LENGTH:
        return f"The password must have at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"The password must have at most {MAX_LENGTH} characters."
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        return "The password must not contain control characters."
    return None


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, COST_N, BLOCK_R, PARALLEL_P)
    return f"{SCHEME}${COST_N}${BLOCK_R}${PARALLEL_P}${_b64(salt)}${_b64(digest)}"


@functools.cache
def _decoy() -> str:
    """A hash to check against when the user has none (or does not exist): a failed sign-in then costs what any
    other does, and its time tells nothing."""
    return hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from. An empty or unreadable ``stored`` (no password
    set) matches nothing, after the same work as a real check."""
    if len(password) > MAX_LENGTH:
        return False
    target = stored or _decoy()
    try:
        scheme, n, r, p, salt, digest = target.split("$")
        if scheme != SCHEME:
            raise MalformedData(scheme)
        params = int(n), int(r), int(p)
        if not (2 <= params[0] <= 2**20 and 1 <= params[1] <= 32 and 1 <= params[2] <= 16):
            raise MalformedData("cost out of range")
        expected = _unb64(digest)
        given = _scrypt(password, _unb64(salt), *params)
    except ValueError:
        _scrypt(password, b"\0" * SALT_BYTES, COST_N, BLOCK_R, PARALLEL_P)
        return False
    return hmac.compare_digest(given, expected) and bool(stored)
