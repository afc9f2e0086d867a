"""Which clients the proxy answers and which upstream addresses it may connect to. No I/O.

Owns: normalising addresses (IPv4-mapped IPv6 to IPv4, the inet_aton short forms through
agent.intake.http1.parse_authority), the client allow-list (CIDRs) and the upstream refusal rules.

Why addresses and not strings: ``127.1``, ``2130706433``, ``[::ffff:127.0.0.1]`` and ``localhost``
all name this box; a string compare let them loop the proxy into itself. The server resolves a
name once, checks every address here, and connects to the checked address (no second lookup a
rebinding DNS server could answer differently).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Optional, Sequence, Tuple, Union

from agent.core.errors import ConfigError

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Who may use the proxy by default: the box itself and the networks a gateway serves.
DEFAULT_CLIENTS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                   "fc00::/7", "169.254.0.0/16", "fe80::/10")


def normal_ip(text) -> Optional[Address]:
    """An address from text ('1.2.3.4', '::ffff:1.2.3.4', 'fe80::1%eth0'), IPv4-mapped as IPv4; None if not one."""
    if isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        ip = text
    else:
        try:
            ip = ipaddress.ip_address(str(text).split("%", 1)[0].strip("[]"))
        except ValueError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ClientNetworks:
    """The client allow-list: ``allows(peer_ip)``. ``None`` networks means everyone."""

    def __init__(self, cidrs: Optional[Iterable[str]] = DEFAULT_CLIENTS):
        if isinstance(cidrs, str):
            cidrs = [c for c in cidrs.split(",") if c.strip()]
        self.any = cidrs is None
        nets = []
        for c in cidrs or ():
            try:
                nets.append(ipaddress.ip_network(str(c).strip(), strict=False))
            except ValueError:
                raise ConfigError("proxy clients: %r is not a network (use CIDR, e.g. 192.168.0.0/16)" % (c,))
        self.networks = tuple(nets)

    def allows(self, peer) -> bool:
        if self.any:
            return True
        ip = normal_ip(peer)
        if ip is None:  # a Unix socket or something without an IP: only the box itself has those
            return True
        return any(ip.version == n.version and ip in n for n in self.networks)


def upstream_refusal(ip: Address, port: int, listen: Sequence[Tuple[Address, int]],
                     allow_loopback: bool) -> Optional[Tuple[int, str]]:
    """(status, reason) when the proxy must not connect to ``ip:port``, else None.

    Always refused: this proxy's own listening address and port (508, a loop), multicast, broadcast
    and the unspecified address. Refused unless ``allow_loopback``: loopback, link-local and the
    addresses the proxy listens on (any port: the gateway's own services are not an upstream).
    ``listen`` holds (address, port) pairs; a loopback address on the listening port of a loopback or
    wildcard listener is a loop too. Loops through another local address (a wildcard listener reached
    on its LAN address) are caught by the server's Via token instead.
    """
    ip = normal_ip(ip)
    if ip is None:
        return (502, "the origin address is not an IP address")
    for addr, lport in listen:
        if port == lport and (ip == addr or (ip.is_loopback and (addr.is_loopback or addr.is_unspecified))):
            return (508, "the request names this proxy itself")
    if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        return (403, "the origin address is not a unicast address")
    if allow_loopback:
        return None
    if ip.is_loopback:
        return (403, "origins on the gateway itself (loopback) are refused")
    if ip.is_link_local:
        return (403, "link-local origins are refused")
    if any(ip == addr for addr, _ in listen):
        return (403, "the gateway's own address is not an origin")
    return None
