"""Settings of a running keyless (from ``keyless serve`` options)."""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Settings:
    default_project: str = "keyless-dev"
    issuer: str = "https://accounts.google.com"
    # URL clients reach this server at; key files' token_uri and owner.json point here.
    public_url: str = "http://127.0.0.1:8093"
    key_rotation_period: float = 14 * DAY
    # A retired signing key stays published this long (>= 12 h after its last use, as Google promises).
    key_retention: float = 1 * DAY
    clock_skew: float = 300.0
    owner_email: str = "owner@keyless.local"
    universe_domains: tuple[str, ...] = ()
    # Refuse a call whose consumer project has not enabled the API it calls (Google's 403 SERVICE_DISABLED).
    enforce_services: bool = False
    # The sign-in page (gcloud auth login) lets a registered user be picked without a password, as emulators do:
    # only when the API listens on loopback alone and clients reach it there, so that every caller is a process of
    # this machine (which the metadata server trusts as well). Otherwise a user proves a password.
    user_picker: bool = False

    @property
    def token_uri(self) -> str:
        return self.public_url.rstrip("/") + "/token"
