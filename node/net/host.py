"""The libp2p host: the only place py-libp2p (pinned to 0.8.1) is configured.

``open_host`` runs a host for the life of an ``async with`` block; ``connect`` and ``open_stream`` dial
with a deadline; ``listen_addrs`` gives the addresses it really listens on (what ``status`` shows),
``advertised_addrs`` what it tells other peers (on ``0.0.0.0`` or ``::``: this machine's interface
addresses, ``dialable``). Identities are 32-byte Ed25519 seeds (``new_identity`` / ``load_identity``).

What py-libp2p's measured defects made us set here, and why (docs/py-libp2p.md holds the measurements):

- Security is Noise only: ``sec_opt`` names the Noise transport and nothing else. The default ``new_host``
  also offers ``/plaintext/2.0.0``, secio and TLS, so a peer (or a man in the middle of the negotiation)
  could downgrade a connection to no encryption at all.
- The muxer is yamux only: mplex is ~7x slower (29 against 215 MB/s) and stalls the DHT for 5 s after
  every provide.
- Speed: py-libp2p spends its time per message, not per byte. The Noise transport phase runs through
  ``node/net/noise_session.py`` (same wire bytes; large socket reads and one socket write per yamux frame);
  larger yamux frames and fewer window updates are patches (``node/net/libp2p_patches/yamux.py``).
- ``max_connections_per_peer=1``: with the default (3) every dial waits a fixed 250 ms for more.
- Bounded watermarks: the AutoConnector aims for the midpoint of the low and high watermarks (200 by
  default) and dials every peer the peer store knows until it gets there; the pruner closes idle
  connections above the high watermark. Defaults here: at most 64 connections, prune idle ones above 32
  down towards 8, so the AutoConnector dials at most 20 known peers; ``min_connections=0`` keeps it from
  polling every 10 s while the node is quiet.
- No discovery beyond what Sealbox asks for: mDNS, UPnP and bootstrap lists stay off (they would send
  packets beyond the addresses we are told to use), and TCP is the only transport.
- ``addrs_factory=dialable``: the library advertises its listen addresses as they are (Identify, DHT
  provider records, peer routing), ``0.0.0.0`` included, which no other machine can dial; ``dialable``
  puts this machine's interface addresses in its place.
- Shutting down with dials in flight logs harmless ``LifecycleError`` warnings: expected, left alone.
- Every patch of the library's internals is in ``node/net/libp2p_patches/``, applied when this module is
  imported, after a check that the installed release is the one they were checked against (another one
  is refused with one line: a ``NetworkError``).

Found while writing this module (docs/py-libp2p.md, with the tests that show each):

- Leaving ``host.run()`` cancels the swarm, and its clean-up never closes the listening socket: the
  port keeps accepting connections nobody serves. ``open_host`` closes the host explicitly (shielded).
- Closing a yamux connection ends with a fixed 0.1 s sleep and ``host.close()`` closes connections one
  by one: ``open_host`` closes them concurrently first, so shutdown takes ~0.2 s whatever their number.
- The TCP transport listens with SO_REUSEPORT, so a second node could bind a port that is in use and
  share its incoming connections: ``open_host`` first checks that a fixed port is free.

Things the library does that callers should know: a peer whose every address failed is refused for 60 s
(a negative cache in the swarm); the addresses given to ``connect`` stay in the peer store for 120 s
(Identify and the DHT's signed records add longer-lived ones); Identify runs in the background after
each connection, and the DHT only adds a peer whose Identify lists the DHT protocol (see ``node/net/dht.py``).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.ed25519 import create_new_key_pair as new_ed25519_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import StreamHandlerFn, TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP

from node.errors import single_exception
from node.net import libp2p_patches
from node.net.addresses import DEFAULT_PORT as DEFAULT_PORT  # the daemon's, defined beside expand
from node.net.addresses import expand, interface_ips, is_unspecified
from node.net.errors import NetworkError
from node.net.noise_session import NoiseTransport

# before any host runs: refuse another py-libp2p release, then patch this one (node/net/libp2p_patches/)
libp2p_patches.apply()

IDENTITY_LEN = 32
DEFAULT_LISTEN = ("/ip4/127.0.0.1/tcp/0",)  # a command's temporary node and the tests: any free port
DEFAULT_MAX_CONNECTIONS = 64
CONNECT_TIMEOUT = 10.0
STREAM_TIMEOUT = 10.0
# a stream on a connection that already exists opens in milliseconds; one that has not in 5 s sits on a
# connection a network outage left silent, so it is dropped for a fresh dial (open_stream_redialing)
STALE_STREAM_TIMEOUT = 5.0
DROP_TIMEOUT = 1.0  # seconds to close such a connection before dialing afresh anyway
CLOSE_TIMEOUT = 5.0

# What a libp2p call can raise when the other side, the network or an address is at fault.
_NET_ERRORS = (BaseLibp2pError, OSError, ValueError, trio.TooSlowError)


@dataclass(frozen=True)
class Peer:
    """A peer as the rest of Sealbox sees it: its id (base58) and full multiaddrs (``.../p2p/<id>``)."""

    peer_id: str
    addrs: tuple[str, ...]


# -- identity -----------------------------------------------------------------------------------------


def new_identity() -> bytes:
    """A fresh Ed25519 identity: the 32-byte secret seed (keep it in a 0600 file)."""
    key = new_ed25519_key_pair().private_key
    assert isinstance(key, Ed25519PrivateKey)
    return key.to_bytes()


def load_identity(secret: bytes) -> KeyPair:
    """The key pair of a 32-byte Ed25519 seed made by :func:`new_identity`."""
    if not isinstance(secret, bytes) or len(secret) != IDENTITY_LEN:
        raise NetworkError(f"the node identity is not a {IDENTITY_LEN}-byte Ed25519 secret")
    try:
        private = Ed25519PrivateKey.new(secret)
    except ValueError:
        raise NetworkError("the node identity is not a usable Ed25519 secret") from None
    return KeyPair(private, private.get_public_key())


# -- addresses ----------------------------------------------------------------------------------------


def listen_multiaddr(text: str) -> multiaddr.Multiaddr:
    """A listen address, ``/ip4|ip6/<address>/tcp/<port>``; anything else raises :class:`NetworkError`."""
    try:
        addr = multiaddr.Multiaddr(text)
        names = [p.name for p in addr.protocols()]
    except ValueError:  # multiaddr's parse errors are ValueErrors
        raise NetworkError(f"not a listen address: {text[:100]!r}") from None
    if len(names) != 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp":
        raise NetworkError(f"listen addresses must be /ip4|ip6/<address>/tcp/<port>: {text[:100]!r}")
    return addr


def parse_peer_addr(text: str) -> PeerInfo:
    """The peer id and dial address of a full multiaddr ``/ip4/../tcp/../p2p/<id>``."""
    try:
        addr = multiaddr.Multiaddr(text)
        peer_id = addr.get_peer_id()
        if peer_id is None:
            raise NetworkError(f"a peer address must end with /p2p/<peer id>: {text[:100]!r}")
        pid = ID.from_base58(peer_id)
        transport = addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}"))
    except ValueError:  # multiaddr's and base58's parse errors are ValueErrors
        raise NetworkError(f"not a peer address: {text[:100]!r}") from None
    if not str(transport) or str(transport) == "/":
        raise NetworkError(f"a peer address needs a transport part before /p2p/: {text[:100]!r}")
    return PeerInfo(pid, [transport])


def listen_addrs(host: IHost) -> list[str]:
    """Where ``host`` really listens (the actual port when asked for port 0), as ``.../p2p/<id>``."""
    suffix = f"/p2p/{host.get_id().to_base58()}"
    return [str(addr) + suffix for addr in host.get_transport_addrs()]


def advertised_addrs(host: IHost) -> list[str]:
    """What ``host`` tells other peers (Identify, DHT provider records and peer routing), as
    ``.../p2p/<id>``: its listen addresses, an unspecified one expanded (:func:`dialable`)."""
    return [str(addr) for addr in host.get_addrs()]


def dialable(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """The host's ``addrs_factory``: ``candidates`` (listen addresses, without ``/p2p/``) with an
    unspecified one (``0.0.0.0``, ``::``) replaced by this machine's interface addresses of its family,
    non-loopback first (``node/net/addresses.py``).

    Without it py-libp2p advertises its listen addresses as they are, so a node on ``0.0.0.0`` announced
    ``0.0.0.0`` in its provider records and Identify: a peer that learnt of it there could not dial it. The
    interfaces are read at each call (cheap, no packet sent), so an address that changes while the node
    runs is advertised as it is now; where none can be read, ``candidates`` stay as they are.
    """
    texts = [str(addr) for addr in candidates]
    if not any(is_unspecified(text) for text in texts):
        return candidates
    return [multiaddr.Multiaddr(text) for text in expand(texts, interface_ips())] or candidates


def _check_port_free(addr: multiaddr.Multiaddr) -> None:
    """Refuse a fixed port something already listens on.

    The TCP transport binds with SO_REUSEPORT (for hole punching), so a second node on the same port would
    start without error and the kernel would hand each incoming connection to one of them at random. A
    probe bound without SO_REUSEPORT fails if anyone listens there (SO_REUSEADDR lets it ignore the
    TIME_WAIT connections a restarted node leaves behind).
    """
    port = int(addr.value_for_protocol("tcp"))
    if port == 0:
        return
    ip6 = addr.protocols()[0].name == "ip6"
    ip = addr.value_for_protocol("ip6" if ip6 else "ip4")
    with socket.socket(socket.AF_INET6 if ip6 else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as exc:
            raise NetworkError(f"cannot listen on {addr}: {exc.strerror or exc}") from None


def any_port_if_taken(addr: str, port: int) -> str:
    """``addr`` with port 0 (any free port) if it is a listen address on ``port`` that is in use; else
    ``addr`` unchanged (an unparsable one too: :func:`open_host` says what is wrong with it)."""
    try:
        parsed = listen_multiaddr(addr)
    except NetworkError:
        return addr
    if int(parsed.value_for_protocol("tcp")) != port:
        return addr
    try:
        _check_port_free(parsed)
    except NetworkError:
        family = parsed.protocols()[0].name
        return f"/{family}/{parsed.value_for_protocol(family)}/tcp/0"
    return addr


# -- the host -----------------------------------------------------------------------------------------


def connection_config(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> ConnectionConfig:
    """The connection limits (see the module docstring): one connection per peer, bounded watermarks."""
    if max_connections < 2:
        raise ValueError("max_connections must be at least 2")
    high = max(1, max_connections // 2)
    low = max(1, max_connections // 8)
    return ConnectionConfig(
        max_connections=max_connections,
        min_connections=0,
        low_watermark=low,
        high_watermark=high,
        max_connections_per_peer=1,
    )


def _new_host(key_pair: KeyPair, max_connections: int) -> IHost:
    """A host configured as the module docstring says, not yet listening."""
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        transports=[TCP()],
        connection_config=connection_config(max_connections),
        enable_mDNS=False,
        enable_upnp=False,
        bootstrap=None,
        addrs_factory=dialable,
    )


@asynccontextmanager
async def open_host(
    identity: bytes,
    listen: Sequence[str] = DEFAULT_LISTEN,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> AsyncIterator[IHost]:
    """Run a Noise + yamux host listening on ``listen`` until the block exits; then close everything."""
    addrs = [listen_multiaddr(a) for a in listen]
    if not addrs:
        raise NetworkError("a host needs at least one listen address")
    for addr in addrs:
        _check_port_free(addr)
    host = _new_host(load_identity(identity), max_connections)
    where = ", ".join(listen)
    started = False
    try:
        # no deadline around this: the host's nurseries must outlive any cancel scope opened around its start
        async with host.run(addrs):
            try:
                if not host.get_transport_addrs():  # the swarm logs why and carries on
                    raise NetworkError(f"cannot listen on {where}")
                started = True
                yield host
            finally:
                await _close(host)
    except BaseExceptionGroup as group:
        # host.run's nurseries wrap whatever crosses them, our own body's exceptions included: unwrap one
        leaf = single_exception(group)
        if leaf is group:
            raise
        if not started and isinstance(leaf, _NET_ERRORS):
            await _close(host)
            raise NetworkError(f"cannot listen on {where}: {_reason(leaf)}") from None
        raise leaf from None
    except _NET_ERRORS as exc:
        if started:
            raise
        await _close(host)
        raise NetworkError(f"cannot listen on {where}: {_reason(exc)}") from None


async def _close(host: IHost) -> None:
    """Close connections and listeners explicitly, shielded from cancellation, within ``CLOSE_TIMEOUT``.

    ``host.run`` alone stops the swarm by cancelling it, and its clean-up then never closes the listening
    socket: it keeps accepting connections nobody serves. Connections are closed concurrently because
    yamux sleeps 0.1 s at the end of every close, and ``host.close`` closes them one after the other.
    """
    with trio.CancelScope(deadline=trio.current_time() + CLOSE_TIMEOUT, shield=True):
        async with trio.open_nursery() as nursery:
            for conn in host.get_network().get_connections():
                nursery.start_soon(conn.close)
        await host.close()


def _unblock(host: IHost, peer_id: ID) -> None:
    """Lift the swarm's 60 s refusal of a peer whose addresses all failed (see the module docstring)."""
    unblock = getattr(host.get_network(), "unblock_peer", None)
    if unblock is not None:
        unblock(peer_id)


async def connect(host: IHost, target: str | Peer) -> str:
    """Connect to a peer (a full multiaddr, or a :class:`Peer`); return its peer id.

    Fails with :class:`NetworkError` after ``CONNECT_TIMEOUT`` seconds; a caller's cancel scope may cut it
    shorter.
    """
    if isinstance(target, Peer):
        infos = [parse_peer_addr(a) for a in target.addrs]
        if not infos or any(str(i.peer_id) != target.peer_id for i in infos):
            raise NetworkError(f"no usable address for peer {target.peer_id[:60]}")
        info = PeerInfo(infos[0].peer_id, [a for i in infos for a in i.addrs])
        shown = target.peer_id
    else:
        info = parse_peer_addr(target)
        shown = target
    if info.peer_id == host.get_id():
        raise NetworkError("cannot connect to this node itself")
    # An explicit connect is a deliberate try (a user's get, a bootstrap): lift the swarm's 60 s block on
    # a peer whose addresses all failed before, so a peer that came back (restarted, healed) is dialed.
    _unblock(host, info.peer_id)
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            await host.connect(info)
    except _NET_ERRORS as exc:
        raise NetworkError(f"cannot connect to {shown[:200]}: {_reason(exc)}") from None
    return info.peer_id.to_base58()


async def open_stream(
    host: IHost, peer_id: str, protocol: str, *, within: float = STREAM_TIMEOUT
) -> INetStream:
    """A new stream to a peer (dialing it from known addresses if needed) speaking ``protocol``.

    Fails with :class:`NetworkError` after ``within`` seconds (``STREAM_TIMEOUT``).
    """
    try:
        pid = ID.from_base58(peer_id)
        if not pid.to_bytes():
            raise ValueError(peer_id)
    except ValueError:
        raise NetworkError(f"not a peer id: {peer_id[:60]!r}") from None
    try:
        with trio.fail_after(within):
            return await host.new_stream(pid, [TProtocol(protocol)])
    except _NET_ERRORS as exc:
        raise NetworkError(f"cannot open {protocol} to {peer_id}: {_reason(exc)}") from None


async def open_stream_redialing(host: IHost, peer_id: str, protocol: str) -> INetStream:
    """:func:`open_stream`, and if that fails on a connection that already existed, close it and try
    once more over a fresh dial: a connection that outlived a network outage can stay silent for a long
    time (TCP's retransmission backoff) while a new one works at once. On such a connection the first
    try waits ``STALE_STREAM_TIMEOUT``, its close ``DROP_TIMEOUT``, the fresh dial ``STREAM_TIMEOUT``:
    a peer cut off mid-way is given up after about 16 s."""
    had_connection = any(p.to_base58() == peer_id for p in host.get_connected_peers())
    try:
        return await open_stream(
            host, peer_id, protocol, within=STALE_STREAM_TIMEOUT if had_connection else STREAM_TIMEOUT
        )
    except NetworkError:
        if not had_connection:
            raise
    pid = ID.from_base58(peer_id)
    with trio.move_on_after(DROP_TIMEOUT), suppress(*_NET_ERRORS):
        await host.disconnect(pid)
    _unblock(host, pid)
    return await open_stream(host, peer_id, protocol)


def set_handler(host: IHost, protocol: str, handler: StreamHandlerFn) -> None:
    """Serve ``protocol``: ``handler(stream)`` runs for each inbound stream."""
    host.set_stream_handler(TProtocol(protocol), handler)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
