"""gc at any moment: against open writer sessions, leases, readers, pinning, and fetches over the network.

Real repos, real processes where another process is the point (a crashed lease holder, the CLI's gc),
real hosts on 127.0.0.1 in this process for the fetches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from node.files.add import add_path
from node.files.get import get_link
from node.net.netget import fetch_link
from node.store.blockstore import FRAME, BlockStore
from node.store.errors import NotFoundError
from node.store.pin_tree import pin_fetched
from node.store.repo import Repo
from protocol.cid import cid_of
from protocol.link import ShareLink
from tests.daemon.test_daemon import Daemon, daemons  # noqa: F401  (the fixture)
from tests.helpers import RunCli, file_sha256, ok, pack_files
from tests.net.test_netget import swarm

MIB = 1 << 20


def _block(size: int = 10_000) -> tuple[bytes, bytes]:
    data = os.urandom(size)
    return cid_of(data), data


def _store_of_four_blocks(tmp_path: Path) -> tuple[BlockStore, list[tuple[bytes, bytes]]]:
    """A store holding four 100 kB blocks in one pack (what a compaction test starts from)."""
    store = BlockStore(tmp_path / "blocks")
    store.create()
    blocks = [_block(100_000) for _ in range(4)]
    with store.writer() as writer:
        for cid, data in blocks:
            writer.put(cid, data)
        writer.commit()
    return store, blocks


def test_gc_leaves_an_open_writer_sessions_pack_and_rows_alone(repo: Repo, run_cli: RunCli) -> None:
    """A fetch's writer commits every few blocks and stays open: gc here or in another process (the
    CLI without a daemon) must neither drop its rows nor delete the pack it is still writing."""
    writer = repo.blocks.writer()
    first, second, third = _block(), _block(), _block()
    writer.put(*first)
    writer.commit()
    assert repo.gc()[0] == 0
    writer.put(*second)
    writer.commit()
    ok(run_cli("--repo", repo.path, "gc"))
    writer.put(*third)
    writer.commit()
    for cid, data in (first, second, third):
        assert repo.blocks.get(cid) == data
    writer.close()
    # closed and neither pinned nor leased: now they go
    assert repo.gc()[0] == 3 and pack_files(repo) == set()


def test_a_lease_keeps_its_blocks_until_it_ends_and_a_dead_holders_lease_goes(repo: Repo) -> None:
    cid, data = _block()
    with repo.lease() as lease:
        with repo.blocks.writer(lease) as writer:  # the writer leases what it stores
            writer.put(cid, data)
            writer.commit()
        assert repo.gc()[0] == 0  # the session has ended: only the lease holds the block now
        assert repo.blocks.get(cid) == data
    assert repo.gc()[0] == 1 and not repo.blocks.has(cid)
    # a holder that died leaves its file; gc keeps nothing for it and removes it
    other, other_data = _block()
    repo.blocks.put(other, other_data)
    died = (
        "import os, sys; from pathlib import Path; from node.store.repo import Repo\n"
        "lease = Repo.open(Path(sys.argv[1])).lease(); lease.add([bytes.fromhex(sys.argv[2])])\n"
        "lease.flush(); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", died, str(repo.path), other.hex()], check=True, timeout=60)
    assert len(list(repo.leases_dir.iterdir())) == 1
    assert repo.gc()[0] == 1 and not repo.blocks.has(other)
    assert list(repo.leases_dir.iterdir()) == []


def test_a_read_never_uses_a_descriptor_compaction_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader holds a pack's descriptor between its lookup and its pread; compaction closes the pack
    meanwhile and another file takes the freed number. The read must still return the block."""
    store, blocks = _store_of_four_blocks(tmp_path)
    kept, kept_data = blocks[0]
    where = store.locate([kept])[kept]
    store.get(kept)  # the pack's reader is cached
    at_pread, go = threading.Event(), threading.Event()
    real_pread = os.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        if threading.current_thread().name == "reader" and not at_pread.is_set():
            at_pread.set()
            assert go.wait(60)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", pread)
    got: list[bytes | BaseException] = []

    def read() -> None:
        try:
            got.append(store.get(kept, where=where))
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            got.append(exc)

    reader = threading.Thread(target=read, name="reader")
    reader.start()
    try:
        assert at_pread.wait(60)
        # one block of four lives: the pack is compacted (it frees three blocks and their frames)
        assert store.collect([kept]) == (3, 300_000 + 3 * FRAME.size)
        decoy = tmp_path / "decoy"
        decoy.write_bytes(os.urandom(500_000))
        decoy_fd = os.open(decoy, os.O_RDONLY)  # the lowest free number: the closed pack's, if closed
    finally:
        go.set()
        reader.join(60)
    os.close(decoy_fd)
    assert got == [kept_data]
    assert store.get(kept) == kept_data
    store.close()


def test_a_read_located_before_a_compaction_finds_the_block_where_it_moved(tmp_path: Path) -> None:
    store, blocks = _store_of_four_blocks(tmp_path)
    kept, kept_data = blocks[0]
    located = store.locate([cid for cid, _ in blocks])  # as get_link does, ahead of reading
    where = located[kept]
    assert store.collect([kept]) == (3, 300_000 + 3 * FRAME.size)  # compacted: the old pack is gone
    assert store.locate([kept])[kept][0] != where[0]
    assert store.get(kept, where=where) == kept_data
    with pytest.raises(NotFoundError):
        store.get(blocks[1][0], where=located[blocks[1][0]])  # collected meanwhile: not in the repo
    store.close()


def test_pin_fetched_refuses_blocks_whose_pack_is_gone(repo: Repo, tmp_path: Path) -> None:
    """Index rows alone are not enough to pin: here every pack was deleted behind this process's back (as
    a gc elsewhere did) while its readers stayed cached, so every read would still succeed."""
    source = tmp_path / "f"
    source.write_bytes(os.urandom(300_000))
    link = add_path(repo, source, chunk_size=64 * 1024).link
    repo.unpin(link.root)
    for cid, _length in repo.blocks:
        repo.blocks.get(cid)
    for name in pack_files(repo):
        (repo.blocks.packs / name).unlink()
    with pytest.raises(NotFoundError, match="deleted"):
        pin_fetched(repo, ShareLink(link.root, link.key))
    assert repo.pins() == []


def test_sealbox_gc_goes_through_a_running_daemon(
    tmp_path: Path,
    run_cli: RunCli,
    daemons: Callable[..., Daemon],  # noqa: F811
) -> None:
    path = tmp_path / "repo"
    daemon = daemons(path)
    daemon.wait_ready()
    sample = tmp_path / "sample"
    sample.write_bytes(os.urandom(200_000))
    link = ok(run_cli("--repo", path, "add", sample)).strip()
    ok(run_cli("--repo", path, "rm", link))
    assert "removed 2 unpinned blocks" in ok(run_cli("--repo", path, "gc"))  # a node and a data block
    daemon.wait_for(r"gc: removed 2 unpinned blocks")


def _random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        for _ in range(size // (4 * MIB)):
            f.write(os.urandom(4 * MIB))
    return path


async def test_gc_in_a_loop_during_fetches_and_an_add_keeps_every_pinned_root_whole(tmp_path: Path) -> None:
    """The issue's trial: gc over and over on the fetching node (in its process, and as another
    process would, with a repo object of its own) while it fetches 256 MiB, a third node fetches the
    same root from it and the seed at once, and an add runs on it. Then every pin is byte-exact."""
    big = _random_file(tmp_path / "big", 256 * MIB)
    small = _random_file(tmp_path / "small", 16 * MIB)
    with trio.fail_after(900):
        async with swarm(tmp_path) as new_peer:
            seed, fetcher, third = await new_peer(), await new_peer(), await new_peer()
            link = (await trio.to_thread.run_sync(add_path, seed.repo, big)).link
            assert await seed.dht.provide(link.root)
            running = fetching = True  # all three operations / the fetcher's own fetch
            gcs_during_fetch = 0
            quarter = trio.Event()
            stored = 0

            def on_bytes(size: int) -> None:
                nonlocal stored
                stored += size
                if stored >= 64 * MIB:
                    quarter.set()

            async def gc_loop(repo: Repo) -> None:
                nonlocal gcs_during_fetch
                elsewhere = Repo.open(repo.path, create=False)  # what a gc in another process sees
                try:
                    while running:
                        await trio.to_thread.run_sync(repo.gc)
                        await trio.to_thread.run_sync(elsewhere.gc)
                        gcs_during_fetch += 2 if repo is fetcher.repo and fetching else 0
                        await trio.lowlevel.checkpoint()
                finally:
                    elsewhere.close()

            added: list[ShareLink] = []

            async def fetch_all() -> None:
                nonlocal running, fetching
                try:
                    async with trio.open_nursery() as inner:

                        async def swarm_fetch() -> None:
                            await quarter.wait()  # the fetcher holds blocks to serve by now
                            await fetch_link(third.dht.host, third.dht, third.repo, link)

                        async def add() -> None:
                            await quarter.wait()
                            result = await trio.to_thread.run_sync(add_path, fetcher.repo, small)
                            added.append(result.link)

                        inner.start_soon(swarm_fetch)
                        inner.start_soon(add)
                        report = await fetch_link(
                            fetcher.dht.host, fetcher.dht, fetcher.repo, link, on_bytes=on_bytes
                        )
                        fetching = False
                        assert report.pinned
                finally:
                    running = fetching = False

            async with trio.open_nursery() as nursery:
                nursery.start_soon(gc_loop, fetcher.repo)
                nursery.start_soon(gc_loop, third.repo)
                nursery.start_soon(fetch_all)
            assert gcs_during_fetch >= 2
            sources = {link.root: (link, file_sha256(big)), added[0].root: (added[0], file_sha256(small))}
            for number, peer in enumerate((fetcher, third)):
                await trio.to_thread.run_sync(peer.repo.gc)
                pins = {pin.root for pin in peer.repo.pins()}
                assert pins == ({link.root, added[0].root} if peer is fetcher else {link.root})
                for root in pins:
                    got, expected = sources[root]
                    out = tmp_path / f"out-{number}-{root.hex()[-8:]}"
                    result = await trio.to_thread.run_sync(get_link, peer.repo, got, out)
                    assert await trio.to_thread.run_sync(file_sha256, result.path) == expected
                    result.path.unlink()
