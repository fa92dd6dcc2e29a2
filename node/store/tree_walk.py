"""The walk of a sealed tree over what a block store holds: which blocks it has, and which it lacks.

A fetch (node/net/netget.py) walks it each round to find what to ask for and, once nothing is missing, to
list what it pins; ``repo repair`` (node/store/reporepair.py) walks it to rebuild a pin's block list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from node.store.blockstore import BlockStore
from node.store.errors import NotFoundError
from protocol.link import ShareLink
from protocol.manifest import EntryDecoder, Node, open_node
from protocol.seal import NodeKeys
from protocol.stream import iter_leaves, open_content

MAX_DEPTH = 255  # directory levels walked


class _Missing(Exception):
    """Control flow inside the walk (a block the store lacks); never escapes this module."""

    def __init__(self, cid: bytes) -> None:
        self.cid = cid


@dataclass
class TreeSummary:
    """What a walk learns of the tree on its way: the root's kind and the files' total size."""

    kind: str = "file"
    size: int = 0


def walk_tree(blocks: BlockStore, link: ShareLink, summary: TreeSummary) -> Iterator[tuple[bytes, bool]]:
    """Every block of the tree reachable from what ``blocks`` holds, as ``(cid, held)``.

    Below a missing node, index block or listing the walk cannot see, so it yields that block and
    skips the subtree (a fetch's next round goes further). Data blocks are yielded, never read.
    """

    def fetch(cid: bytes) -> bytes:
        try:
            return blocks.get(cid, verify=False)
        except NotFoundError:
            raise _Missing(cid) from None

    def open_node_at(number: int, cid: bytes, root: bool) -> tuple[Node, NodeKeys]:
        return open_node(link.key, number, cid, fetch(cid), root=root)

    def visit(number: int, cid: bytes, root: bool, depth: int) -> Iterator[tuple[bytes, bool]]:
        try:
            node, keys = open_node_at(number, cid, root)
        except _Missing:
            yield cid, False
            return
        yield cid, True
        if root:
            summary.kind = node.kind
        if depth > MAX_DEPTH:
            return
        leaves = []
        index: list[bytes] = []
        try:
            for _position, leaf in iter_leaves(node, keys, fetch, index.append):
                if node.kind == "file":
                    yield leaf, blocks.has(leaf)
                else:
                    leaves.append(leaf)
        except _Missing as missing:
            yield from ((c, True) for c in index)
            yield missing.cid, False
            return
        yield from ((c, True) for c in index)
        if node.kind == "file":
            summary.size += node.size
            return
        held = [(leaf, blocks.has(leaf)) for leaf in leaves]
        yield from held
        if not all(h for _, h in held):
            return
        decoder = EntryDecoder()
        for position, leaf in enumerate(leaves):
            for entry in decoder.feed(open_content(keys.data, node, position, leaf, fetch(leaf))):
                yield from visit(entry.number, entry.cid, False, depth + 1)
        decoder.finish()

    yield from visit(0, link.root, True, 0)
