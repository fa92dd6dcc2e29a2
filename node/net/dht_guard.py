"""Bounds on what a remote peer can make our DHT node hold or do; installed by ``node.net.dht.open_dht``.

py-libp2p's ``KadDHT`` (0.8.1) serves every inbound request as it comes. What a peer could do to us,
measured on loopback, and what this module does about it:

- **Values.** PUT_VALUE under a namespace with no validator stored 1 MB values (300 in 11 s took a node
  from 87 to 388 MB RSS; the library's only cap is 50,000 entries), and GET_VALUE served them back to
  anyone. Sealbox uses no DHT values: :class:`DhtGuard` refuses both requests (the stream is reset)
  before the library sees them, so the value store stays empty.
- **Message size.** The library reads any request up to 4 MiB (``MAX_DHT_MESSAGE_SIZE``), 12 streams at
  once. Every request Sealbox peers send is a few KiB at most: ``MAX_INBOUND_MESSAGE`` = 32 KiB, checked
  on the length prefix before the body is read.
- **Provider records.** The library keeps up to 20 providers per key and nothing else bounds the store
  (~3.4 KiB of RSS per record; 1,080 stored in 90 s from 40 identities). :class:`CappedProviderStore`
  caps records per providing peer (``MAX_RECORDS_PER_PROVIDER``), in total (``MAX_PROVIDER_RECORDS``)
  and in bytes (``MAX_PROVIDER_BYTES``, a record's peer id and addresses as sent; at most
  ``MAX_PROVIDER_ADDRS`` addresses of at most ``MAX_ADDR_BYTES`` each are kept). A record a peer
  announces again is always refreshed (our 12 h reprovide keeps real roots alive). When the store is
  full, a new record from a peer takes the place of the oldest record of the peer holding the most
  records, as long as that peer holds more than the newcomer would: flooding from many identities
  crowds out the flooders first. This node's own records are never counted nor evicted.
- **ADD_PROVIDER rate.** Per peer, a token bucket: ``ADD_PROVIDER_BURST`` at once, then
  ``ADD_PROVIDER_RATE`` per second (our own announcements are spaced 1.1 s apart, ``PROVIDE_SPACING``);
  a request over the rate is refused. The library's own limit (10 per 10 s window) stays too.

- **Streams held open.** The library serves at most 12 inbound DHT streams at once and resets the
  rest, and waits for a stream's next request for ever: one peer holding 12 idle streams shut
  everyone else out of our DHT. A peer gets at most ``MAX_STREAMS_PER_PEER`` streams served at once,
  and a stream that does not deliver its next request within ``READ_TIMEOUT`` is reset.

A refused request resets its stream, as the library does for the requests it refuses, and is counted
in ``DhtGuard.refused``; it is logged at debug level only (a flood must not flood the logs).
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import suppress
from typing import TYPE_CHECKING, Any, NoReturn, cast

import trio
from libp2p.abc import IHost, INetStream
from libp2p.io.exceptions import MessageTooLarge
from libp2p.kad_dht.common import BUCKET_SIZE
from libp2p.kad_dht.pb.kademlia_pb2 import Message as KadMessage
from libp2p.kad_dht.provider_store import ProviderStore
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.utils.varint import encode_uvarint, read_varint_prefixed_bytes_limited

from node.net.errors import NetworkError

if TYPE_CHECKING:
    from libp2p.kad_dht.kad_dht import KadDHT

log = logging.getLogger(__name__)

MAX_INBOUND_MESSAGE = 32 * 1024
MAX_PROVIDER_RECORDS = 8192
MAX_PROVIDER_BYTES = 2 * 1024 * 1024
MAX_RECORDS_PER_PROVIDER = 1024
MAX_PROVIDER_ADDRS = 8
MAX_ADDR_BYTES = 256
ADD_PROVIDER_RATE = 1.0  # per second, per peer
ADD_PROVIDER_BURST = 10.0
MAX_STREAMS_PER_PEER = 4  # inbound DHT streams of one peer served at once (the library serves 12 in all)
READ_TIMEOUT = 10.0  # seconds an inbound DHT stream may take to deliver its next request
MAX_RATE_TRACKED = 4096  # peers whose bucket is remembered; the fullest are forgotten first

_REFUSED_TYPES = {
    KadMessage.MessageType.PUT_VALUE: "PUT_VALUE",
    KadMessage.MessageType.GET_VALUE: "GET_VALUE",
}


class DhtRefused(NetworkError):
    """Raised to the library's handler for a request we refuse: it then resets the stream."""


class DhtGuard:
    """Admits each inbound DHT request before py-libp2p's handler reads it (see the module docstring)."""

    def __init__(
        self,
        kad: KadDHT,
        *,
        max_message: int = MAX_INBOUND_MESSAGE,
        provide_rate: float = ADD_PROVIDER_RATE,
        provide_burst: float = ADD_PROVIDER_BURST,
    ) -> None:
        self.kad = kad
        self.max_message = max_message
        self.provide_rate = provide_rate
        self.provide_burst = provide_burst
        self.refused: Counter[str] = Counter()
        self._buckets: dict[ID, tuple[float, float]] = {}  # peer -> (tokens, when)
        self.max_streams_per_peer = MAX_STREAMS_PER_PEER
        self.read_timeout = READ_TIMEOUT
        self._streams: Counter[ID] = Counter()

    async def handle_stream(self, stream: INetStream) -> None:
        """The DHT protocol's stream handler: the library's, reading through :class:`_GuardedStream`,
        for at most ``max_streams_per_peer`` streams of one peer at a time."""
        peer = stream.muxed_conn.peer_id
        if self._streams[peer] >= self.max_streams_per_peer:
            self.refused["streams"] += 1
            with suppress(StreamError, MuxedStreamError, trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.reset()
            return
        self._streams[peer] += 1
        try:
            await self.kad.handle_stream(cast(INetStream, _GuardedStream(stream, self)))
        finally:
            self._streams[peer] -= 1
            if not self._streams[peer]:
                del self._streams[peer]

    def admit(self, peer: ID, message: KadMessage) -> None:
        """Raise :class:`DhtRefused` for a request we do not serve."""
        refused = _REFUSED_TYPES.get(message.type)
        if refused is None and message.type == KadMessage.MessageType.ADD_PROVIDER and not self._take(peer):
            refused = "ADD_PROVIDER rate"
        if refused is not None:
            self.refuse(refused)

    def refuse(self, reason: str) -> NoReturn:
        self.refused[reason] += 1
        log.debug("DHT request refused: %s", reason)
        raise DhtRefused(reason)

    def _take(self, peer: ID) -> bool:
        """One ADD_PROVIDER token from ``peer``'s bucket, if it has one."""
        now = trio.current_time()
        tokens, when = self._buckets.pop(peer, (self.provide_burst, now))
        tokens = min(self.provide_burst, tokens + (now - when) * self.provide_rate)
        allowed = tokens >= 1
        self._buckets[peer] = (tokens - 1 if allowed else tokens, now)  # most recent last
        if len(self._buckets) > MAX_RATE_TRACKED:
            # forget the least recently seen peer: its bucket has been refilling longest
            del self._buckets[next(iter(self._buckets))]
        return allowed


class _GuardedStream:
    """An inbound DHT stream as the library's handler reads it: one whole message at a time is read
    here first (length prefix capped before the body is read), parsed and admitted by the guard, then
    handed over byte for byte. Everything else is the stream itself."""

    def __init__(self, stream: INetStream, guard: DhtGuard) -> None:
        self._stream = stream
        self._guard = guard
        self._pending = b""

    async def read(self, n: int | None = None) -> bytes:
        if not self._pending:
            body = b""
            with trio.move_on_after(self._guard.read_timeout) as waiting:
                try:
                    body = await read_varint_prefixed_bytes_limited(self._stream, self._guard.max_message)
                except MessageTooLarge:
                    self._guard.refuse("too large")
            if waiting.cancelled_caught:
                self._guard.refuse("idle")
            message = KadMessage()
            message.ParseFromString(body)  # a DecodeError goes to the library's handler, which resets
            self._guard.admit(self._stream.muxed_conn.peer_id, message)
            self._pending = encode_uvarint(len(body)) + body
        size = len(self._pending) if n is None or n < 0 else n
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class CappedProviderStore(ProviderStore):
    """py-libp2p's provider store with caps on what remote peers can make it hold (module docstring).

    The library removes expired records in ``get_providers`` and ``cleanup_expired``; both are followed
    here so the accounting stays exact.
    """

    def __init__(
        self,
        host: IHost,
        peer_routing: Any,
        *,
        max_records: int = MAX_PROVIDER_RECORDS,
        max_bytes: int = MAX_PROVIDER_BYTES,
        max_per_provider: int = MAX_RECORDS_PER_PROVIDER,
    ) -> None:
        super().__init__(host=host, peer_routing=peer_routing)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_per_provider = max_per_provider
        self.total_bytes = 0
        self._sizes: dict[tuple[bytes, str], int] = {}  # (key, provider) -> bytes, remote records only
        self._by_provider: dict[str, dict[bytes, None]] = {}  # provider -> its keys, oldest first
        self._by_key: dict[bytes, set[str]] = {}

    @property
    def remote_records(self) -> int:
        return len(self._sizes)

    def records_of(self, peer_id: ID) -> int:
        return len(self._by_provider.get(str(peer_id), ()))

    def add_provider(self, key: bytes, provider: PeerInfo) -> None:
        if not provider or not provider.peer_id or provider.peer_id == self.local_peer_id:
            super().add_provider(key, provider)  # the library's checks; our own records are not capped
            return
        addrs = [a for a in provider.addrs if len(a.to_bytes()) <= MAX_ADDR_BYTES][:MAX_PROVIDER_ADDRS]
        if not addrs:
            return
        peer = str(provider.peer_id)
        size = len(provider.peer_id.to_bytes()) + sum(len(a.to_bytes()) for a in addrs)
        if (key, peer) in self._sizes:
            self._unaccount(key, peer)  # a refresh: always taken
        elif not self._room_for(key, peer, size):
            return
        super().add_provider(key, PeerInfo(provider.peer_id, addrs))
        if peer in self.providers.get(key, {}):
            self._sizes[(key, peer)] = size
            self._by_provider.setdefault(peer, {})[key] = None
            self._by_key.setdefault(key, set()).add(peer)
            self.total_bytes += size

    def _room_for(self, key: bytes, peer: str, size: int) -> bool:
        if len(self.providers.get(key, {})) >= BUCKET_SIZE:
            return False  # the library's per-key cap
        held = len(self._by_provider.get(peer, ()))
        if held >= self.max_per_provider:
            return False
        while len(self._sizes) >= self.max_records or self.total_bytes + size > self.max_bytes:
            biggest = max(self._by_provider, key=lambda p: len(self._by_provider[p]), default=None)
            if biggest is None or len(self._by_provider[biggest]) <= held + 1:
                return False
            self._evict(next(iter(self._by_provider[biggest])), biggest)
        return True

    def _evict(self, key: bytes, peer: str) -> None:
        records = self.providers.get(key, {})
        records.pop(peer, None)
        if not records:
            self.providers.pop(key, None)
        self._unaccount(key, peer)

    def _unaccount(self, key: bytes, peer: str) -> None:
        self.total_bytes -= self._sizes.pop((key, peer), 0)
        keys = self._by_provider.get(peer)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._by_provider[peer]
        peers = self._by_key.get(key)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self._by_key[key]

    def _forget_removed(self, key: bytes) -> None:
        present = self.providers.get(key, {})
        for peer in [p for p in self._by_key.get(key, ()) if p not in present]:
            self._unaccount(key, peer)

    def get_providers(self, key: bytes) -> list[PeerInfo]:
        found = super().get_providers(key)
        self._forget_removed(key)
        return found

    def cleanup_expired(self) -> None:
        super().cleanup_expired()
        for key in list(self._by_key):
            self._forget_removed(key)
