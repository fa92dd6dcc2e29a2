#!/usr/bin/env python3
"""Benchmark: a fetch's CPU per block as the tree grows (issue 13: fetching was quadratic in its size).

Drives the real fetch walk (node/store/tree_walk.py's ``Frontier`` over protocol/walk.py) and the real
fetch scheduler (protocol/fetch_plan.py) round by round, ``ROUND_LIMIT`` blocks a round as
node/net/netget.py asks, against an in-memory block store (``DictStore``: the store methods the walk
uses, backed by a dict) and one simulated provider that answers every request at once. No network,
disk or threads: what is timed (``time.process_time``) is the walk, the plan and the store's lookups.

The tree is one file of N data blocks at the smallest chunk size (16 KiB: a 10^6-block file has two
index levels, like a 1 TB file at 256 KiB). Data blocks are never read by a fetch's walk, so their
CIDs are made up and stand for blocks of 36 bytes; the index and node blocks are sealed for real.
Sealing is not timed.

``--old`` also measures the walk as it was before (a walk from the root every round, looking every held
block up again: ``missing_blocks``), by starting a fresh Frontier each round.

    scripts/bench_scale.py [--sizes 1000,10000,100000,1000000] [--old] [--old-max 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.net.netget import ROUND_LIMIT  # noqa: E402
from node.store.errors import NotFoundError  # noqa: E402
from node.store.tree_walk import Frontier  # noqa: E402
from protocol.cid import CID_PREFIX, cid_of  # noqa: E402
from protocol.fetch_plan import FetchPlan  # noqa: E402
from protocol.link import ShareLink  # noqa: E402
from protocol.manifest import MIN_CHUNK, Node, chunk_count, encode_node  # noqa: E402
from protocol.seal import NodeKeys, new_key  # noqa: E402
from protocol.stream import IndexBuilder  # noqa: E402
from protocol.walk import TreeWalk  # noqa: E402

CS = MIN_CHUNK
PEER = "provider"


class DictStore:
    """A block store in a dict: the interface the fetch walk uses (``get``, ``locate``, ``read_back``),
    and a lease (``lease``: a set). ``spent`` adds up the nanoseconds spent in it: the share of a
    fetch that is this stand-in's hash tables (the real store is SQLite and packs), not the walk's or
    the plan's."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}
        self.leased: set[bytes] = set()
        self.spent = 0

    def get(self, cid: bytes, *, verify: bool = True) -> bytes:
        started = time.perf_counter_ns()
        try:
            return self.blocks[cid]
        except KeyError:
            raise NotFoundError("not in the store") from None
        finally:
            self.spent += time.perf_counter_ns() - started

    def read_back(self, cid: bytes) -> bytes:
        return self.get(cid)

    def locate(self, cids: Iterable[bytes]) -> dict[bytes, tuple[int, int, int]]:
        started = time.perf_counter_ns()
        blocks = self.blocks
        found = {cid: (0, 0, len(blocks[cid])) for cid in cids if cid in blocks}
        self.spent += time.perf_counter_ns() - started
        return found

    def put(self, cid: bytes, block: bytes) -> None:
        started = time.perf_counter_ns()
        self.blocks[cid] = block
        self.spent += time.perf_counter_ns() - started

    def lease(self, cids: Iterable[bytes]) -> None:
        started = time.perf_counter_ns()
        self.leased.update(cids)
        self.spent += time.perf_counter_ns() - started


def build(leaves: int) -> tuple[ShareLink, dict[bytes, bytes], int]:
    """A sealed one-file tree of about ``leaves`` data blocks: its link, its metadata blocks (a data
    block's made-up bytes are its CID), and the exact count of data blocks."""
    master = new_key()
    keys = NodeKeys(master, 0)
    size = leaves * CS - CS // 2
    count = chunk_count(size, CS)
    blocks: dict[bytes, bytes] = {}
    index = IndexBuilder(keys, CS)
    for i in range(count):
        blocks.update(index.add(CID_PREFIX + i.to_bytes(32, "big")))  # made up: never read by a fetch
    level, top, rest = index.finish()
    blocks.update(rest)
    block = keys.node.seal(0, encode_node(Node("file", size, CS, level, top, False, "big.bin")))
    root = cid_of(block)
    blocks[root] = block
    return ShareLink(root, master), blocks, count


def fetch(link: ShareLink, metadata: dict[bytes, bytes], *, old: bool) -> tuple[float, float, float, int]:
    """CPU seconds of a whole fetch into an empty store (all of it, the walk's share and the in-memory
    store's share), and its rounds."""
    store = DictStore()
    frontier = Frontier(store, link, store.lease)
    rounds = 0
    walking = 0.0
    started = time.process_time()
    while True:
        if old:  # the walk from the root every round that missing_blocks made
            frontier = Frontier(store, link, store.lease)
        walk_started = time.process_time()
        missing = frontier.round(ROUND_LIMIT)
        walking += time.process_time() - walk_started
        if not missing:
            break
        rounds += 1
        plan = FetchPlan(window=16)
        plan.add_peer(PEER)
        for cid in missing:
            plan.want(cid)
        while not plan.done:
            for request in plan.next_requests():
                cid = request.cid
                store.put(cid, metadata.get(cid, cid))
                plan.received(request.peer, cid)
    return time.process_time() - started, walking, store.spent / 1e9, rounds


def walk_alone(link: ShareLink, metadata: dict[bytes, bytes]) -> float:
    """CPU seconds of protocol/walk.py's walk alone, every block held: no store, no lease, no plan."""
    started = time.process_time()
    for _step in TreeWalk(link.key, link.root).steps(metadata.__getitem__):
        pass
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="data blocks, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each size: the least CPU time is shown")
    parser.add_argument("--old", action="store_true", help="also measure the walk from the root every round")
    parser.add_argument("--old-max", type=int, default=1_000_000, help="largest size --old is run at (once)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        "CPU microseconds per data block (tree walk = protocol/walk.py alone; walk = Frontier.round;"
        " fetch = walk + plan + store; store = the in-memory store's and lease's share of it)"
    )
    head = f"{'data blocks':>12} {'rounds':>7} {'tree walk':>9} {'walk':>7} {'fetch':>7} {'store':>7}"
    head += f" {'fetch-store':>11}"
    print(head + (f" {'old walk':>9} {'old fetch':>10}" if args.old else ""))
    fetch(*build(1000)[:2], old=False)  # warm up: the first run pays for imports and first calls
    figures = []
    for n in sizes:
        link, blocks, count = build(n)
        runs = [fetch(link, blocks, old=False) for _ in range(args.runs)]
        total, _, spent, rounds = min(runs)
        walk = min(r[1] for r in runs) / count * 1e6
        whole, store = total / count * 1e6, spent / count * 1e6
        figures.append((whole, walk, whole - store))
        alone = min(walk_alone(link, blocks) for _ in range(args.runs)) / count * 1e6
        line = f"{count:>12,} {rounds:>7} {alone:>9.2f} {walk:>7.2f} {whole:>7.2f} {store:>7.2f}"
        line += f" {whole - store:>11.2f}"
        if args.old and n <= args.old_max:
            old_total, old_walking, _, _ = fetch(link, blocks, old=True)
            line += f" {old_walking / count * 1e6:>9.2f} {old_total / count * 1e6:>10.2f}"
        print(line, flush=True)
    first, last = figures[0], figures[-1]
    print(
        f"largest / smallest: walk {last[1] / first[1]:.2f}x, fetch {last[0] / first[0]:.2f}x,"
        f" fetch less the in-memory store {last[2] / first[2]:.2f}x (goal: within 1.5x)"
    )


if __name__ == "__main__":
    main()
