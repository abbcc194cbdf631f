"""Where the interception proxy may open a tunnel, decided on the addresses a host name resolves to.

Never to keyless's own listeners on this machine: a tunnel to the metadata server would arrive from the
proxy's loopback address without the ``X-Forwarded-For`` the metadata server refuses, and hand out the
attached account's token. Never to link-local addresses (cloud metadata services live at 169.254.169.254).
A proxy listening off loopback is reachable from other machines, so it also refuses this machine, loopback,
private and every other non-global destination: it must not become a way into the network it stands in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """The address, IPv4-mapped IPv6 addresses unwrapped (``::ffff:169.254.169.254`` is 169.254.169.254)."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_this_machine(ip: IPAddress) -> bool:
    """True for loopback, the unspecified address (which Linux connects to this host) and any address of this
    machine's interfaces (an address is ours exactly when a socket can bind to it)."""
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class TunnelRules:
    own_ports: frozenset[int]  # keyless's listeners (API, metadata, proxy, universe)
    public: bool = False  # the proxy listens off loopback

    def refusal(self, ip: IPAddress, port: int) -> str | None:
        """Why a tunnel to ``ip:port`` is refused, in one line; None when it is allowed."""
        if ip.is_link_local:
            return f"{ip} is link-local"
        local = is_this_machine(ip)
        if local and port in self.own_ports:
            return f"{ip}:{port} is one of keyless's own listeners"
        if self.public:
            if local:
                return f"{ip} is this machine and the proxy listens off loopback"
            if not ip.is_global:
                return f"{ip} is not a public address and the proxy listens off loopback"
        return None

    def first_refusal(self, addresses: Iterable[str], port: int) -> str | None:
        """Why one of the addresses a name resolved to is refused (one bad answer refuses the name: a
        resolver can hand out a mix)."""
        for text in addresses:
            ip = parse_ip(text)
            if ip is None:
                return f"{text!r} is not an IP address"
            reason = self.refusal(ip, port)
            if reason is not None:
                return reason
        return None
