"""The addresses others can use to reach this node (``sealbox address``), read from this machine alone.

A node listening on ``0.0.0.0`` (or ``::``) listens on every interface, but that address is no use to a
peer: each interface's own address is. They are read locally, without sending a packet: IPv4 with the
``SIOCGIFADDR`` ioctl on each interface (``socket.if_nameindex``; one address per interface, its
primary), IPv6 from ``/proc/net/if_inet6`` (global and unique-local ones; link-local addresses need a
zone that a multiaddr cannot carry). No name lookup: resolving the host name may ask a DNS server.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable
from typing import Any

# The daemon's default port (node/daemon/config.py), fixed so that the address a friend bootstraps
# from still works after a restart. 4710 is in IANA's registered range and assigned to no service
# that a desktop or server runs (kubo uses 4001; BitTorrent 6881-6889). Defined here, below
# node/net/host.py (which advertises what ``expand`` makes of its listen addresses), and re-exported there.
DEFAULT_PORT = 4710
SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address
IF_INET6 = "/proc/net/if_inet6"
IFNAMSIZ = 16


def interface_ips() -> list[str]:
    """This machine's interface addresses (IPv4, then IPv6), loopback included; [] where they cannot
    be read (another OS, a sandbox)."""
    found: list[str] = []
    # the socket never sends: it only carries the ioctls
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[: IFNAMSIZ - 1])
            with contextlib.suppress(OSError):  # an interface with no IPv4 address
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
                found.append(socket.inet_ntoa(answer[20:24]))
    with contextlib.suppress(OSError, ValueError), open(IF_INET6, encoding="ascii") as table:
        for line in table:
            fields = line.split()
            ip = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            if not ip.is_link_local:
                found.append(str(ip))
    return list(dict.fromkeys(found))


def expand(addrs: Iterable[str], ips: Iterable[str]) -> list[str]:
    """Each of ``addrs`` (full multiaddrs ``/ip4|ip6/<ip>/tcp/<port>/p2p/<id>``), with an unspecified
    address (``0.0.0.0``, ``::``) replaced by each of ``ips`` of its family; addresses a peer on another
    machine can use first, loopback ones last."""
    ips = list(ips)
    out: list[str] = []
    for addr in addrs:
        ip = _ip(addr)
        if ip is None:
            continue
        if not ip.is_unspecified:
            out.append(addr)
            continue
        family, rest = addr.split("/", 3)[1], addr.split("/", 3)[3]  # ip4 or ip6; tcp/<port>/p2p/<id>
        out.extend(
            f"/{family}/{other}/{rest}" for other in ips if ipaddress.ip_address(other).version == ip.version
        )
    unique = list(dict.fromkeys(out))
    return [a for a in unique if not is_loopback(a)] + [a for a in unique if is_loopback(a)]


def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of ``/ip4|ip6/<ip>/...``; None for anything else."""
    parts = addr.split("/")
    if len(parts) < 3 or parts[0] or parts[1] not in ("ip4", "ip6"):
        return None
    try:
        return ipaddress.ip_address(parts[2])
    except ValueError:
        return None


def is_loopback(addr: str) -> bool:
    ip = _ip(addr)
    return ip is not None and ip.is_loopback


def is_unspecified(addr: str) -> bool:
    """Whether ``addr`` is on ``0.0.0.0`` or ``::``: where a node listens on every interface, and an
    address no peer can dial."""
    ip = _ip(addr)
    return ip is not None and ip.is_unspecified


def lan_example(port: int, ips: Iterable[str]) -> str:
    """A listen address on this machine's first non-loopback IPv4 address (else a documentation one)."""
    for ip in ips:
        parsed = ipaddress.ip_address(ip)
        if parsed.version == 4 and not parsed.is_loopback:
            return f"/ip4/{ip}/tcp/{port}"
    return f"/ip4/0.0.0.0/tcp/{port}"


def address_report(peer_id: str, listen: list[str]) -> dict[str, Any]:
    """What ``GET /v1/address`` answers: the addresses to give a peer (``.../p2p/<peer id>``), whether
    they are loopback only, and a LAN listen address to suggest then."""
    ips = interface_ips()
    addrs = expand(listen, ips)
    parts = listen[0].split("/") if listen else []
    port = int(parts[4]) if len(parts) > 4 and parts[3] == "tcp" and parts[4].isdigit() else DEFAULT_PORT
    return {
        "peer_id": peer_id,
        "addrs": addrs,
        "loopback_only": all(is_loopback(a) for a in addrs),
        "listen_example": lan_example(port, ips),
    }
