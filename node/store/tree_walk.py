"""The walk of a sealed tree (protocol/walk.py) over what a block store holds: what it has, and lacks.

:class:`Frontier` is a fetch's walk (node/net/netget.py), kept from one round to the next: each round it
looks again only at the blocks the last round asked for, resumes the parts of the tree those open, and
walks on until it has a round's worth of missing blocks, so a whole fetch looks each block up about once
(a walk from the root every round made a fetch quadratic in the size of the tree). ``repo repair``
(node/store/reporepair.py) uses one to list a pin's blocks. :func:`read_tree` is the walk a fetch pins
with: every block of a complete tree, read back once. A :class:`Selection` narrows a fetch's walk to one
path in the tree, or to its metadata (protocol/walk.py; specs/format.md, "Selecting a path").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.store.errors import NotFoundError
from protocol.link import ShareLink
from protocol.manifest import Node
from protocol.walk import Ahead, Enter, Leaves, Need, TreeWalk

Held = Callable[[list[bytes]], None]


class BlockSource(Protocol):
    """What a walk asks of the store (node/store/blockstore.py's BlockStore)."""

    def get(self, cid: bytes, *, verify: bool = ...) -> bytes: ...  # NotFoundError if absent

    def locate(
        self, cids: Iterable[bytes]
    ) -> Mapping[bytes, tuple[int, int, int]]: ...  # (pack, offset, length)

    def read_back(self, cid: bytes) -> bytes: ...


@dataclass
class TreeSummary:
    """What a walk learns of the tree on its way: the root's kind and the files' total size."""

    kind: str = "file"
    size: int = 0


@dataclass(frozen=True)
class Selection:
    """What a fetch walks of a tree: ``path`` (components inside it, matched exactly; empty: the root)
    and, with ``data``, the files' data. Only a whole tree (:attr:`whole`) is pinned: a part is not."""

    path: tuple[str, ...] = ()
    data: bool = True

    @property
    def whole(self) -> bool:
        return not self.path and self.data


WHOLE = Selection()


def _ignore(_: list[bytes]) -> None:
    pass


class Frontier:
    """A fetch's walk of ``link``'s tree over ``store``, kept across rounds.

    :meth:`round` returns the blocks the next round must fetch. ``on_held(cids)`` is told of every block
    found held, once (a fetch leases them there: gc keeps them until it pins).
    """

    def __init__(
        self,
        store: BlockSource,
        link: ShareLink,
        on_held: Held = _ignore,
        selection: Selection = WHOLE,
    ) -> None:
        self._store = store
        self._walk = TreeWalk(link.key, link.root, select=selection.path, data=selection.data)
        self._on_held = on_held
        self._asked: list[bytes] = []  # the last round's blocks: looked at again at the next
        self._queued: dict[bytes, None] = {}  # found missing, not asked for yet
        self.held = 0  # blocks found held so far (a round that raised it made progress)
        self.held_bytes = 0  # their bytes (a fetch's progress: what was already there)
        self.root: Node | None = None  # the root's node, once the walk has opened it (its size)

    @property
    def complete(self) -> bool:
        return self._walk.done and not self._queued and not self._asked

    @property
    def expected_bytes(self) -> int | None:
        """Block bytes of all the data this walk reaches, once every node on its way is open (None
        before): a fetch's progress total."""
        return self._walk.data_bytes if self._walk.sized else None

    def round(self, limit: int) -> list[bytes]:
        """Up to ``limit`` blocks the next round must fetch (empty once the tree is complete)."""
        self._recheck()
        queued = self._queued
        while len(queued) < limit and (step := self._walk.next()) is not None:
            if isinstance(step, Need):
                self._need(step.cid)
            elif isinstance(step, Leaves):
                self._look(step.cids)
            elif isinstance(step, Ahead):
                self._look((step.cid,))
            elif isinstance(step, Enter) and step.info.depth == 0:
                self.root = step.info.node
        asked = list(itertools.islice(queued, limit))
        for cid in asked:
            del queued[cid]
        self._asked = asked
        return asked

    def _recheck(self) -> None:
        """What the last round asked for and got is held now: the parts of the tree it opens go on."""
        asked, self._asked = self._asked, []
        if not asked:
            return
        where = self._store.locate(asked)
        held = [cid for cid in asked if cid in where]
        self._found(held, sum(where[cid][2] for cid in held))
        for cid in held:
            self._walk.resume(cid)
        self._queued.update((cid, None) for cid in asked if cid not in where)

    def _need(self, cid: bytes) -> None:
        try:
            block = self._store.get(cid, verify=False)  # the walk verifies it
        except NotFoundError:
            self._walk.defer()
            self._queued[cid] = None
            return
        self._found([cid], len(block))
        self._walk.give(block)

    def _look(self, cids: Sequence[bytes]) -> None:  # read thrice: a sequence, not an iterator
        where = self._store.locate(cids)
        self._found([cid for cid in cids if cid in where], sum(loc[2] for loc in where.values()))
        self._queued.update((cid, None) for cid in cids if cid not in where)

    def _found(self, cids: list[bytes], size: int) -> None:
        if cids:
            self.held += len(cids)
            self.held_bytes += size
            self._on_held(cids)


def read_tree(store: BlockSource, link: ShareLink, summary: TreeSummary) -> Iterator[tuple[bytes, int]]:
    """Every block of ``link``'s tree as ``(cid, length)``, each read back from a pack still linked in the
    repo and hashed (``BlockStore.read_back``), once per time the tree names it: what a fetch pins with.
    NotFoundError if one is missing. ``summary`` is filled in on the way."""
    walk = TreeWalk(link.key, link.root)
    while (step := walk.next()) is not None:
        if isinstance(step, Need):
            block = store.read_back(step.cid)
            walk.give(block)
            yield step.cid, len(block)
        elif isinstance(step, Leaves):
            for cid in step.cids:
                yield cid, len(store.read_back(cid))
        elif isinstance(step, Enter):
            if step.info.depth == 0:
                summary.kind = step.info.node.kind
            if step.info.node.kind == "file":
                summary.size += step.info.node.size
