"""The block exchange between real libp2p hosts on 127.0.0.1 (port 0), several nodes in one process."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.exceptions import BaseLibp2pError

from node.files.add import add_path
from node.files.get import get_link
from node.net.exchange import BlockServer, FetchError, fetch_blocks
from node.net.host import connect, listen_addrs, new_identity, open_host, set_handler
from node.store.repo import Repo
from protocol.cid import cid_of
from protocol.link import ShareLink
from protocol.messages import PROTOCOL_ID, BlockMessage, FrameDecoder, Have, Message, Want, encode_message

if TYPE_CHECKING:
    # trio-typing (a py-libp2p dependency) installs trio-stubs, which mypy reads instead of trio's own
    from trio_typing import TaskStatus

CHUNK = 16 * 1024


@dataclass
class Node:
    host: IHost
    repo: Repo
    server: BlockServer
    addr: str

    @property
    def peer_id(self) -> str:
        return self.host.get_id().to_base58()


@asynccontextmanager
async def node(path: Path) -> AsyncIterator[Node]:
    repo = Repo.open(path)
    try:
        async with open_host(new_identity()) as host:
            server = BlockServer(repo.blocks)
            server.install(host)
            yield Node(host, repo, server, listen_addrs(host)[0])
    finally:
        repo.close()


def seed(source: Node, targets: list[Node], path: Path) -> tuple[ShareLink, list[bytes]]:
    """Add ``path`` on ``source`` and copy every block to ``targets``; returns the link and the CIDs."""
    result = add_path(source.repo, path, chunk_size=CHUNK)
    cids = list(source.repo.pin_blocks(result.link.root))
    for target in targets:
        with target.repo.blocks.writer() as writer:
            for cid in cids:
                writer.put(cid, source.repo.blocks.get(cid))
            writer.commit()
    return result.link, cids


def sample(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "sample.bin"
    path.write_bytes(os.urandom(size))
    return path


async def test_four_providers_share_the_load_and_the_file_comes_back_exact(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            providers = [await stack.enter_async_context(node(tmp_path / f"p{i}")) for i in range(4)]
            fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
            link, cids = seed(providers[0], providers[1:], sample(tmp_path, 3 * 1024 * 1024))
            for provider in providers:
                await connect(fetcher.host, provider.addr)
            stats = await fetch_blocks(
                fetcher.host, fetcher.repo.blocks, [p.peer_id for p in providers], cids
            )
            total = sum(len(fetcher.repo.blocks.get(c)) for c in cids)
    assert stats.blocks == len(cids) > 150
    counts = [stats.received_from.get(p.peer_id, 0) for p in providers]
    assert all(c >= len(cids) // 8 for c in counts), counts  # every provider carried a real share
    assert stats.bytes <= 1.05 * total
    for provider, count in zip(providers, counts, strict=True):
        assert provider.server.served_blocks >= count  # endgame copies may be served, then dropped
    out = get_link(fetcher.repo, link, tmp_path / "out.bin")
    assert out.path.read_bytes() == (tmp_path / "sample.bin").read_bytes()


async def run_node(path: Path, stop: trio.Event, *, task_status: TaskStatus[Node]) -> None:
    """A node in a task of its own, so that the test can stop it while others go on."""
    async with node(path) as running:
        task_status.started(running)
        await stop.wait()


async def test_a_provider_stopped_mid_transfer_and_the_rest_finish_it(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
            stay = [await stack.enter_async_context(node(tmp_path / f"p{i}")) for i in range(2)]
            halfway = trio.Event()
            leaving: Node = await nursery.start(run_node, tmp_path / "leaving", halfway)
            link, cids = seed(stay[0], [stay[1], leaving], sample(tmp_path, 3 * 1024 * 1024))
            for provider in [*stay, leaving]:
                await connect(fetcher.host, provider.addr)
            seen_from_leaving = 0

            def on_block(_cid: bytes, peer: str, _size: int) -> None:
                nonlocal seen_from_leaving
                seen_from_leaving += peer == leaving.peer_id
                if seen_from_leaving >= 5:
                    halfway.set()  # run_node returns: the leaving provider's host shuts down

            peers = [p.peer_id for p in [*stay, leaving]]
            stats = await fetch_blocks(fetcher.host, fetcher.repo.blocks, peers, cids, on_block=on_block)
    assert halfway.is_set()
    assert stats.blocks == len(cids)
    assert 5 <= stats.received_from[leaving.peer_id] < len(cids) // 2
    out = get_link(fetcher.repo, link, tmp_path / "out.bin")
    assert out.path.read_bytes() == (tmp_path / "sample.bin").read_bytes()


async def requests_of(stream: INetStream) -> AsyncIterator[list[Message]]:
    """The messages of each read of ``stream`` (as a fake peer receives them), until the stream ends."""
    decoder = FrameDecoder()
    while True:
        try:
            data = await stream.read(1 << 16)
        except Exception:  # noqa: BLE001 - any end of the stream ends this fake peer
            return
        if not data:
            return
        yield list(decoder.feed(data))


async def lying_handler(stream: INetStream) -> None:
    """A peer that answers every request with bytes that do not match the CID asked for."""
    async for messages in requests_of(stream):
        for message in messages:
            if isinstance(message, Want):
                await stream.write(encode_message(BlockMessage(message.request, b"not the block" * 100)))


async def test_a_peer_serving_corrupted_blocks_is_dropped_and_nothing_bad_is_stored(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            good = await stack.enter_async_context(node(tmp_path / "good"))
            liar = await stack.enter_async_context(node(tmp_path / "liar"))
            set_handler(liar.host, PROTOCOL_ID, lying_handler)
            fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
            link, cids = seed(good, [], sample(tmp_path, 1024 * 1024))
            for provider in (good, liar):
                await connect(fetcher.host, provider.addr)
            stats = await fetch_blocks(fetcher.host, fetcher.repo.blocks, [liar.peer_id, good.peer_id], cids)
    assert stats.dropped == {liar.peer_id}
    assert liar.peer_id not in stats.received_from
    assert stats.blocks == len(cids)
    for cid in cids:
        fetcher.repo.blocks.get(cid)  # verified read: every stored block is the right one
    out = get_link(fetcher.repo, link, tmp_path / "out.bin")
    assert out.path.read_bytes() == (tmp_path / "sample.bin").read_bytes()


def mixed_handler(repo: Repo) -> Callable[[INetStream], Awaitable[None]]:
    """A peer that answers the requests of each read in one write, with the true blocks except for the
    second block it is asked for, which it replaces by wrong bytes."""
    asked = 0

    async def handle(stream: INetStream) -> None:
        nonlocal asked
        async for messages in requests_of(stream):
            replies = []
            for want in messages:
                assert isinstance(want, Want)
                asked += 1
                payload = b"wrong" * 100 if asked == 2 else repo.blocks.get(want.cid)
                replies.append(BlockMessage(want.request, payload))
            await stream.write(b"".join(encode_message(reply) for reply in replies))

    return handle


async def test_a_bad_block_among_good_ones_drops_the_peer_and_nothing_after_it_is_stored(
    tmp_path: Path,
) -> None:
    """Blocks of one read are stored together: the good one before the bad is kept, the bad one and
    those that follow it (in the same read or not) are not."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            mixed = await stack.enter_async_context(node(tmp_path / "mixed"))
            fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
            _, cids = seed(mixed, [], sample(tmp_path, 2 * 1024 * 1024))
            wanted = cids[:4]
            set_handler(mixed.host, PROTOCOL_ID, mixed_handler(mixed.repo))
            await connect(fetcher.host, mixed.addr)
            with pytest.raises(FetchError) as failure:
                await fetch_blocks(fetcher.host, fetcher.repo.blocks, [mixed.peer_id], wanted, window=4)
    assert failure.value.stats is not None and failure.value.stats.dropped == {mixed.peer_id}
    assert [fetcher.repo.blocks.has(cid) for cid in wanted] == [True, False, False, False]
    fetcher.repo.blocks.get(wanted[0])  # verified read


async def test_a_block_nobody_has_fails_fast_and_clearly(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        providers = [await stack.enter_async_context(node(tmp_path / f"p{i}")) for i in range(2)]
        fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
        for provider in providers:
            await connect(fetcher.host, provider.addr)
        # a request timeout far beyond the test's bound: only the NOT_FOUND answers can end the fetch
        with trio.fail_after(60), pytest.raises(FetchError, match="no peer has block") as failure:
            await fetch_blocks(
                fetcher.host,
                fetcher.repo.blocks,
                [p.peer_id for p in providers],
                [cid_of(b"nobody has this")],
                request_timeout=3600,
            )
    stats = failure.value.stats
    assert stats is not None and stats.not_found == len(providers) and not stats.dropped


async def test_no_reachable_peer_is_a_clear_error(tmp_path: Path) -> None:
    async with node(tmp_path / "fetcher") as fetcher:
        with trio.fail_after(20), pytest.raises(FetchError, match="no peer could provide"):
            await fetch_blocks(fetcher.host, fetcher.repo.blocks, [], [cid_of(b"x")])


async def test_providers_that_cannot_be_reached_are_named_as_such(tmp_path: Path) -> None:
    async with node(tmp_path / "fetcher") as fetcher:
        async with node(tmp_path / "gone") as gone:
            await connect(fetcher.host, gone.addr)
            peer_id = gone.peer_id
        with (
            trio.fail_after(30),
            pytest.raises(FetchError, match=r"cannot reach the 1 peer\(s\) that hold it"),
        ):
            await fetch_blocks(fetcher.host, fetcher.repo.blocks, [peer_id], [cid_of(b"x")])


async def test_blocks_already_held_are_never_fetched_again(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            provider = await stack.enter_async_context(node(tmp_path / "provider"))
            fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
            _, cids = seed(provider, [], sample(tmp_path, 1024 * 1024))
            held = cids[::2]
            with fetcher.repo.blocks.writer() as writer:
                for cid in held:
                    writer.put(cid, provider.repo.blocks.get(cid))
                writer.commit()
            await connect(fetcher.host, provider.addr)
            stats = await fetch_blocks(fetcher.host, fetcher.repo.blocks, [provider.peer_id], cids)
    assert stats.already_held == len(held)
    assert stats.blocks == len(cids) - len(held) == provider.server.served_blocks


def slow_handler(store: Repo, delay: float) -> Callable[[INetStream], Awaitable[None]]:
    """A provider on a slow link: it answers each request in order, ``delay`` seconds apiece."""

    async def handle(stream: INetStream) -> None:
        with contextlib.suppress(BaseLibp2pError):  # the asker resets the stream when it is done
            async for messages in requests_of(stream):
                for message in messages:
                    if not isinstance(message, Want):
                        continue  # a CANCEL: the block came from elsewhere
                    await trio.sleep(delay)  # the slow link itself, not a wait for anything
                    block = store.blocks.get(message.cid)
                    await stream.write(encode_message(BlockMessage(message.request, block)))

    return handle


async def silent_handler(stream: INetStream) -> None:
    """A provider that takes requests and never answers (hung, or cut off behind a live connection)."""
    while await stream.read(65536):
        pass


async def test_a_slow_but_steady_provider_is_not_timed_out(tmp_path: Path) -> None:
    # 24 blocks from one provider that needs 0.2 s per block, with a 1.5 s timeout: the 16th request of
    # the first window waits 3.2 s for its answer, yet the peer answers every 0.2 s, so it never stalls
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            slow = await stack.enter_async_context(node(tmp_path / "slow"))
            fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
            _, cids = seed(slow, [], sample(tmp_path, 23 * CHUNK))
            set_handler(slow.host, PROTOCOL_ID, slow_handler(slow.repo, 0.2))
            await connect(fetcher.host, slow.addr)
            stats = await fetch_blocks(
                fetcher.host, fetcher.repo.blocks, [slow.peer_id], cids, request_timeout=1.5
            )
    assert len(cids) >= 24
    assert stats.received_from == {slow.peer_id: len(cids)} and not stats.dropped


async def test_a_silent_provider_stalls_and_the_others_take_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node")
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            good = await stack.enter_async_context(node(tmp_path / "good"))
            mute = await stack.enter_async_context(node(tmp_path / "mute"))
            fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
            _, cids = seed(good, [mute], sample(tmp_path, 1024 * 1024))
            set_handler(mute.host, PROTOCOL_ID, silent_handler)
            for provider in (good, mute):
                await connect(fetcher.host, provider.addr)
            stats = await fetch_blocks(
                fetcher.host, fetcher.repo.blocks, [mute.peer_id, good.peer_id], cids, request_timeout=1.0
            )
    # one stall (1 s) moves the mute peer's requests to the good one, which serves them all
    assert stats.received_from == {good.peer_id: len(cids)}
    stalls = [r for r in caplog.records if "answered nothing for" in r.getMessage()]
    assert [mute.peer_id in r.getMessage() for r in stalls] == [True]


async def test_a_peer_that_lacked_blocks_says_have_once_it_holds_them_and_serves_them(tmp_path: Path) -> None:
    # The seed is slow; the other provider holds nothing at first (it is a downloader too) and answers
    # NOT_FOUND. Once the blocks land in its store, it sends HAVE and the fetcher takes them from it.
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            seed_node = await stack.enter_async_context(node(tmp_path / "seed"))
            peer = await stack.enter_async_context(node(tmp_path / "peer"))
            fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
            _, cids = seed(seed_node, [], sample(tmp_path, 40 * CHUNK))
            set_handler(seed_node.host, PROTOCOL_ID, slow_handler(seed_node.repo, 0.3))
            for provider in (seed_node, peer):
                await connect(fetcher.host, provider.addr)
            first_block = trio.Event()
            lacked = 0

            def on_block(_cid: bytes, _peer: str, _size: int) -> None:
                first_block.set()

            async def peer_catches_up() -> None:
                nonlocal lacked
                await first_block.wait()  # 0.3 s in: the peer has long answered NOT_FOUND
                lacked = peer.server.haves_sent
                with peer.repo.blocks.writer() as writer:
                    for cid in cids:
                        writer.put(cid, seed_node.repo.blocks.get(cid))
                    await trio.to_thread.run_sync(writer.commit)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer_catches_up)
                stats = await fetch_blocks(
                    fetcher.host,
                    fetcher.repo.blocks,
                    [seed_node.peer_id, peer.peer_id],
                    cids,
                    on_block=on_block,
                )
    assert lacked == 0  # no HAVE before the peer held anything
    assert peer.server.haves_sent > 0 and stats.haves > 0  # NOT_FOUND, then HAVE, then the block
    assert stats.not_found >= stats.haves  # every HAVE that counted answered an earlier NOT_FOUND
    assert stats.received_from.get(peer.peer_id, 0) > len(cids) // 2  # the slow seed gave the least
    assert sum(stats.received_from.values()) == len(cids)


async def test_a_fetch_ends_even_when_providers_go_on_talking(tmp_path: Path) -> None:
    # Providers that flood the asker with HAVEs around each block: events pile up faster than the
    # fetch loop takes them, and it must still end as soon as it has everything (a full event channel
    # once left the readers blocked forever in their last, shielded, send).
    def chatty(holder: Node) -> Callable[[INetStream], Awaitable[None]]:
        async def handle(stream: INetStream) -> None:
            flood = b"".join(encode_message(Have(n)) for n in range(3000))
            with contextlib.suppress(BaseLibp2pError):
                async for messages in requests_of(stream):
                    for message in messages:
                        if isinstance(message, Want):
                            block = holder.repo.blocks.get(message.cid)
                            await stream.write(
                                flood + encode_message(BlockMessage(message.request, block)) + flood
                            )

        return handle

    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            talkers = [await stack.enter_async_context(node(tmp_path / f"talker{i}")) for i in range(4)]
            fetcher = await stack.enter_async_context(node(tmp_path / "fetcher"))
            _, cids = seed(talkers[0], talkers[1:], sample(tmp_path, 8 * CHUNK))
            for talker in talkers:
                set_handler(talker.host, PROTOCOL_ID, chatty(talker))
                await connect(fetcher.host, talker.addr)
            stats = await fetch_blocks(
                fetcher.host, fetcher.repo.blocks, [t.peer_id for t in talkers], cids, window=2
            )
    assert sum(stats.received_from.values()) == len(cids)
