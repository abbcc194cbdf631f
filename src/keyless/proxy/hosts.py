"""Which hosts keyless answers for, on googleapis.com and on any universe domain it serves."""

from __future__ import annotations

from collections.abc import Iterable

GOOGLE_UNIVERSE = "googleapis.com"
SERVED_SERVICES = ("iamcredentials", "iam", "oauth2", "cloudresourcemanager", "orgpolicy", "serviceusage", "sts", "www",
                   "policytroubleshooter", "cloudasset")
OTHER_HOSTS = ("accounts.google.com",)


def served_hosts(universe_domains: Iterable[str] = ()) -> list[str]:
    hosts = [f"{svc}.{GOOGLE_UNIVERSE}" for svc in SERVED_SERVICES]
    hosts.extend(OTHER_HOSTS)
    for domain in universe_domains:
        hosts.extend(f"{svc}.{domain}" for svc in SERVED_SERVICES)
    return hosts


def is_served(host: str, universe_domains: Iterable[str] = ()) -> bool:
    host = host.lower().rstrip(".")
    if host in OTHER_HOSTS:
        return True
    for domain in (GOOGLE_UNIVERSE, *universe_domains):
        suffix = "." + domain
        if host.endswith(suffix) and host[: -len(suffix)] in SERVED_SERVICES:
            return True
    return False
