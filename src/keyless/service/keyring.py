"""System-managed signing keys: created when first needed, rotated on schedule, published after retirement.

Owners are service accounts (by unique id) and ``issuer``, the key set that signs ID tokens. Private keys are
decrypted once and kept as loaded key objects (re-parsing a PEM per signature costs milliseconds).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.clock import Clock
from keyless.crypto.jwt import sign_rs256_raw_payload
from keyless.crypto.keys import MasterKey, generate_key_pair, load_private_key, sign_pkcs1_sha256
from keyless.domain.names import new_key_id
from keyless.errors import MalformedData, NotReady
from keyless.service.config import Settings
from keyless.storage.base import KeyRecord, Store

ISSUER = "issuer"
ISSUER_NAME = "keyless ID token issuer"  # the common name of the issuer's certificates
SYSTEM_MANAGED = "SYSTEM_MANAGED"
USER_MANAGED = "USER_MANAGED"


def in_validity_window(record: KeyRecord, now: float) -> bool:
    """Whether ``now`` lies in the key's ``validAfterTime``..``validBeforeTime``: outside it a key signs,
    authenticates and is published nowhere (an uploaded certificate may be long expired or not valid yet)."""
    return record.valid_after <= now < record.valid_before


def verifies_at(record: KeyRecord, now: float) -> bool:
    """Whether a signature by this key is accepted at ``now``: enabled, not deleted, in its validity window."""
    return not record.disabled and record.deleted_at is None and in_validity_window(record, now)


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    private_key: rsa.RSAPrivateKey


class KeyRing:
    def __init__(self, store: Store, master: MasterKey, clock: Clock, settings: Settings) -> None:
        self._store = store
        self._master = master
        self._clock = clock
        self._settings = settings
        self._loaded: dict[str, rsa.RSAPrivateKey] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _private_key(self, record: KeyRecord) -> rsa.RSAPrivateKey:
        key = self._loaded.get(record.key_id)
        if key is None:
            if record.private_key_enc is None:
                raise MalformedData("key has no private part")
            pem = self._master.decrypt(record.private_key_enc, context=record.key_id)
            key = load_private_key(pem)
            self._loaded[record.key_id] = key
        return key

    def encrypt_private_key(self, key_id: str, pem: bytes) -> bytes:
        return self._master.encrypt(pem, context=key_id)

    def _is_current(self, record: KeyRecord, now: float) -> bool:
        return (record.key_type == SYSTEM_MANAGED and not record.disabled and record.retired_at is None
                and record.private_key_enc is not None
                and now < record.created_at + self._settings.key_rotation_period
                and in_validity_window(record, now))

    async def sign(self, owner: str, common_name: str, data: bytes) -> tuple[str, bytes]:
        """Sign ``data`` (RSASSA-PKCS1-v1_5 with SHA-256) with the current system-managed key of ``owner``
        (creating or rotating it when due); returns the key id and the signature."""
        key = await self._current_key(owner, common_name)
        return key.key_id, sign_pkcs1_sha256(key.private_key, data)

    async def sign_jwt(self, owner: str, common_name: str, claims: dict[str, Any] | bytes) -> tuple[str, str]:
        """An RS256 JWT of ``claims`` (a dict, or JSON bytes signed as they are) under the current key of
        ``owner``; returns the key id and the compact JWS."""
        key = await self._current_key(owner, common_name)
        payload = claims if isinstance(claims, bytes) else orjson.dumps(claims)
        return key.key_id, sign_rs256_raw_payload(key.private_key, key.key_id, payload)

    async def current_key_id(self, owner: str, common_name: str) -> str:
        """The id of ``owner``'s current system-managed key (created now if it has none)."""
        return (await self._current_key(owner, common_name)).key_id

    async def _current_key(self, owner: str, common_name: str) -> SigningKey:
        """The current system-managed key of ``owner``, creating or rotating it when due. Private: the key's
        private half never leaves the keyring."""
        now = self._clock.now()
        # Which key is current changes with the stored state (a rotation, a disabled key: the memo is emptied)
        # or with the time (the window remembered with it): remembered in between, by id (the private half
        # stays in this keyring).
        memo = await self._store.memo()
        if memo is not None:
            remembered: tuple[str, float, float] | None = memo.get(("signing-key", owner))
            if remembered is not None and remembered[1] <= now < remembered[2]:
                loaded = self._loaded.get(remembered[0])
                if loaded is not None:
                    return SigningKey(remembered[0], loaded)
        records = await self._store.list_keys(owner)
        current = [r for r in records if self._is_current(r, now)]
        if current:
            newest = current[-1]
            key = SigningKey(newest.key_id, self._private_key(newest))
            if memo is not None:
                memo[("signing-key", owner)] = (key.key_id, *self._current_window(newest, records, now))
            return key
        lock = self._locks.setdefault(owner, asyncio.Lock())
        async with lock:
            records = await self._store.list_keys(owner)
            now = self._clock.now()
            current = [r for r in records if self._is_current(r, now)]
            if current:
                return SigningKey(current[-1].key_id, self._private_key(current[-1]))
            expected = [r.key_id for r in records if r.key_type == SYSTEM_MANAGED and r.retired_at is None]
            record, _ = await self._new_record(owner, common_name, SYSTEM_MANAGED, now)
            if await self._store.rotate_system_key(owner, expected, record):
                return SigningKey(record.key_id, self._private_key(record))
            # Another process rotated first: use its key rather than adding a competing one.
            self.forget(record.key_id)
            now = self._clock.now()
            current = [r for r in await self._store.list_keys(owner) if self._is_current(r, now)]
            if not current:
                raise NotReady(f"no current signing key for {owner} after a concurrent rotation")
            return SigningKey(current[-1].key_id, self._private_key(current[-1]))

    def _current_window(self, newest: KeyRecord, records: list[KeyRecord], now: float) -> tuple[float, float]:
        """From when until when ``newest`` stays the key ``_current_key`` picks, the stored state unchanged: until
        it is due for rotation or expires, or another key's validity starts."""
        until = min(newest.created_at + self._settings.key_rotation_period, newest.valid_before,
                    *(r.valid_after for r in records if r.valid_after > now))
        return newest.valid_after, until

    async def create_user_managed(self, owner: str, common_name: str, limit: int, *, lifetime: int | None = None
                                  ) -> tuple[KeyRecord, bytes] | None:
        """A new user-managed key, unless ``owner`` has ``limit`` already (None then: the store counts and
        inserts atomically); with ``lifetime``, valid for that many seconds from now at most. Returns the record
        and the private key PEM (handed to the caller once)."""
        now = self._clock.now()
        record, pem = await self._new_record(owner, common_name, USER_MANAGED, now)
        if lifetime is not None:
            record = replace(record, valid_before=min(record.valid_before, now + lifetime))
        if not await self._store.create_key_within_quota(record, limit):
            self.forget(record.key_id)
            return None
        return record, pem

    async def _new_record(self, owner: str, common_name: str, key_type: str, now: float
                          ) -> tuple[KeyRecord, bytes]:
        # Generating an RSA key takes tens of milliseconds: keep it off the event loop.
        pair = await asyncio.to_thread(generate_key_pair, common_name, now)
        key_id = new_key_id()
        record = KeyRecord(key_id=key_id, owner=owner, key_type=key_type, key_origin="GOOGLE_PROVIDED",
                           certificate_pem=pair.certificate_pem,
                           private_key_enc=self.encrypt_private_key(key_id, pair.private_pkcs8_pem),
                           valid_after=pair.valid_after, valid_before=pair.valid_before, created_at=now)
        self._loaded[key_id] = pair.private_key
        return record, pair.private_pkcs8_pem

    def is_published(self, record: KeyRecord, now: float) -> bool:
        if not verifies_at(record, now):
            return False
        return record.retired_at is None or now < record.retired_at + self._settings.key_retention

    async def published_keys(self, owner: str) -> list[KeyRecord]:
        now = self._clock.now()
        return [r for r in await self._store.list_keys(owner) if self.is_published(r, now)]

    def forget(self, key_id: str) -> None:
        self._loaded.pop(key_id, None)
