"""The one walk of a sealed tree, sans-IO: it says which block it needs, takes it back, and goes on.

Every reader of a tree drives this walk - the local get and the add digest (node/files/get.py), a fetch
(node/store/tree_walk.py, node/net/netget.py), its pin, ``repo repair``, the reference opener
(protocol/tree.py) - so every rule of specs/format.md is enforced here once: each node, index and
listing block is verified against its CID and opened by its position; index blocks hold the counts the
node's size implies; entries are well formed and in name order; node numbers are unique; a tree holds
at most :data:`MAX_NODES` nodes and no node deeper than :data:`MAX_DEPTH`.

Driving: call :meth:`TreeWalk.next` for the next step. A :class:`Need` names a metadata block whose bytes
the walk must have to go on: answer it with :meth:`~TreeWalk.give`, or with :meth:`~TreeWalk.defer` to
set that part of the tree aside (a fetch does, for a block not held yet) and :meth:`~TreeWalk.resume` it
once the block is there; the rest of the tree is walked meanwhile. The other steps tell the caller what
the tree holds: :class:`Enter` and :class:`Exit` around each node, :class:`Leaves` for runs of a file's
data blocks (never read by the walk), :class:`Ahead` for a listing block needed once those before it
are read. Without defers the steps come in pre-order, entries in name order and a file's leaves in
order, which is what writing a tree out takes; with defers, only the rules hold, not the order.

A walk may be narrowed (specs/format.md, "Selecting a path"): ``select`` names one entry inside the tree by
its path components, each matched exactly against the names the listings hold (no normalization or case
folding); only the directories along that path (their node, index and listing blocks) and the selected
node's subtree are walked, and :attr:`TreeWalk.selected` is that node once found. ``data=False`` leaves
files' block trees out (neither index blocks nor leaves): the walk of a listing, which reads metadata only.
Memory stays bounded by the tree's shape (index blocks are opened as the walk reaches them), not its size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from protocol.cid import CID_LEN, split_cids, verify_block
from protocol.errors import ManifestError
from protocol.manifest import EntryDecoder, Node, data_bytes, fanout, open_node
from protocol.seal import TAG_LEN, NodeKeys
from protocol.stream import open_content

MAX_DEPTH = 255  # a node's depth: the root's is 0, an entry's its directory's plus one
MAX_NODES = 10_000_000  # nodes in one tree, the root included

BlockKind = Literal["node", "index", "listing"]


@dataclass(eq=False, slots=True)
class NodeInfo:
    """An opened node: its number, depth, name (the entry's, or the root's) and what it decodes to."""

    number: int
    depth: int
    name: str
    node: Node
    keys: NodeKeys


@dataclass(frozen=True, slots=True)
class Need:
    """The walk needs this block's bytes: :meth:`TreeWalk.give` them, or :meth:`TreeWalk.defer`."""

    cid: bytes
    kind: BlockKind


@dataclass(frozen=True, slots=True)
class Ahead:
    """A directory-listing block the walk will need once the blocks before it are read (a fetch can get
    it now)."""

    cid: bytes


@dataclass(frozen=True, slots=True)
class Enter:
    info: NodeInfo


@dataclass(frozen=True, slots=True)
class Exit:
    info: NodeInfo


@dataclass(frozen=True, slots=True)
class Leaves:
    """Data blocks ``start``, ``start + 1``, ... of a file, in order; the walk never reads them."""

    info: NodeInfo
    start: int
    cids: tuple[bytes, ...]


Step = Need | Ahead | Enter | Exit | Leaves


@dataclass(eq=False, slots=True)
class _Stream:
    """A node's block tree as the walk opens it, and for a directory its entry decoding."""

    info: NodeInfo
    counts: list[int]
    fan: int
    decoder: EntryDecoder | None = None  # directories only
    next: int = 0  # the next listing block to decode
    waiting: dict[int, _Listing] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _NodeBlock:
    cid: bytes
    number: int
    depth: int
    name: str | None  # None at the root: its name is in its node


@dataclass(frozen=True, slots=True)
class _Index:
    cid: bytes
    stream: _Stream
    level: int
    position: int


@dataclass(frozen=True, slots=True)
class _Listing:
    cid: bytes
    stream: _Stream
    position: int


_Task = _NodeBlock | _Index | _Listing
_KIND: dict[type, BlockKind] = {_NodeBlock: "node", _Index: "index", _Listing: "listing"}


def open_index(
    keys: NodeKeys, counts: list[int], fan: int, level: int, position: int, cid: bytes, block: bytes
) -> list[bytes]:
    """Verify and open index block ``position`` at ``level``; returns the CIDs of level ``level - 1`` it
    holds, as many as the node's size implies (truncation, reordering and substitution fail here)."""
    expected = min(fan, counts[level - 1] - position * fan)
    verify_block(cid, block)
    if len(block) != expected * CID_LEN + TAG_LEN:
        raise ManifestError("index block has the wrong length for its position")
    return split_cids(keys.index(level).open(position, block, "index block"))


def iter_leaves(
    node: Node,
    keys: NodeKeys,
    fetch: Callable[[bytes], bytes],
    on_index: Callable[[bytes], None] | None = None,
) -> Iterator[tuple[int, bytes]]:
    """``(position, cid)`` of every data chunk of a file ``node`` in order, its index blocks fetched
    with ``fetch(cid)`` and opened by :func:`open_index` (``on_index(cid)`` is told of each): the
    leaves alone, for callers that hold the node already."""
    counts, fan = node.counts(), fanout(node.chunk_size)
    if node.level == 0:
        yield from enumerate(node.top)
        return

    def below(level: int, position: int, cid: bytes) -> Iterator[bytes]:
        children = open_index(keys, counts, fan, level, position, cid, fetch(cid))
        if on_index is not None:
            on_index(cid)
        for i, child in enumerate(children):
            if level == 1:
                yield child
            else:
                yield from below(level - 1, position * fan + i, child)

    leaves = (leaf for i, cid in enumerate(node.top) for leaf in below(node.level, i, cid))
    yield from enumerate(leaves)


class TreeWalk:
    """The walk of the tree under ``root``, opened with ``master`` (see the module's docstring)."""

    def __init__(
        self, master: bytes, root: bytes, *, select: tuple[str, ...] = (), data: bool = True
    ) -> None:
        self._master = master
        self._stack: list[_Task | Enter | Exit | Leaves] = [_NodeBlock(root, 0, 0, None)]
        self._current: _Task | None = None
        self._parked: dict[bytes, list[_Task]] = {}
        self._numbers: set[int] = {0}
        self._select = select
        self._data = data
        self.selected: NodeInfo | None = None  # the node ``select`` names, once the walk opened it
        self.data_bytes = 0  # block bytes of the file data the walk will reach, of the nodes opened so far
        self._unopened = 1  # node and listing blocks the walk knows of and has not opened (sized at 0)

    @property
    def done(self) -> bool:
        """Nothing is left to walk, set aside or answered."""
        return not self._stack and not self._parked and self._current is None

    @property
    def sized(self) -> bool:
        """Every node the walk will reach is open, so :attr:`data_bytes` is the whole of the data
        (each file's padded size plus one tag per chunk): a fetch's progress total, before any data came."""
        return self._unopened == 0

    @property
    def deferred(self) -> int:
        """Blocks set aside with :meth:`defer` and not resumed yet."""
        return len(self._parked)

    def next(self) -> Step | None:
        """The next step; None once nothing is left but what was deferred."""
        if self._current is not None:
            raise RuntimeError("the walk's last Need was neither given nor deferred")
        while self._stack:
            task = self._stack.pop()
            if isinstance(task, Enter | Exit | Leaves):
                return task
            if isinstance(task, _Listing) and task.position != task.stream.next:
                task.stream.waiting[task.position] = task
                return Ahead(task.cid)
            self._current = task
            return Need(task.cid, _KIND[type(task)])
        return None

    def give(self, block: bytes) -> None:
        """The bytes of the block the last :class:`Need` named; a ProtocolError if they are wrong."""
        task = self._take()
        if isinstance(task, _NodeBlock):
            self._open_node(task, block)
        elif isinstance(task, _Index):
            self._open_index(task, block)
        else:
            self._open_listing(task, block)

    def defer(self) -> None:
        """Set the last Need's part of the tree aside until :meth:`resume` is called with its CID."""
        task = self._take()
        self._parked.setdefault(task.cid, []).append(task)

    def resume(self, cid: bytes) -> None:
        """Walk again what was deferred on ``cid`` (nothing if nothing was)."""
        self._stack.extend(self._parked.pop(cid, ()))

    def steps(self, fetch: Callable[[bytes], bytes]) -> Iterator[Enter | Exit | Leaves]:
        """Drive the walk with ``fetch(cid)``, which always has the block (or raises): every step but
        the needs, in pre-order."""
        while (step := self.next()) is not None:
            if isinstance(step, Need):
                self.give(fetch(step.cid))
            elif not isinstance(step, Ahead):  # no Ahead without defers
                yield step

    def _take(self) -> _Task:
        task = self._current
        if task is None:
            raise RuntimeError("the walk needs no block now")
        self._current = None
        return task

    def _open_node(self, task: _NodeBlock, block: bytes) -> None:
        root = task.name is None
        node, keys = open_node(self._master, task.number, task.cid, block, root=root)
        name = node.name if task.name is None else task.name
        assert name is not None  # decode_node(root=True) checks it
        info = NodeInfo(task.number, task.depth, name, node, keys)
        stream = _Stream(info, node.counts(), fanout(node.chunk_size))
        if task.depth == len(self._select):
            self.selected = info
        self._unopened -= 1
        if node.kind == "dir":
            stream.decoder = EntryDecoder()
            self._unopened += stream.counts[0]  # its listing blocks
            if stream.counts[0] == 0:
                stream.decoder.finish()
        elif self._data and task.depth >= len(self._select):
            self.data_bytes += data_bytes(node.size, node.chunk_size)
        self._stack.append(Exit(info))
        # a file's data is left out of a listing, and of a path that goes on through the file
        if node.kind == "dir" or (self._data and task.depth >= len(self._select)):
            if node.level == 0:
                self._push_items(stream, 0, list(node.top))
            else:
                self._stack.extend(
                    _Index(cid, stream, node.level, i) for i, cid in reversed(list(enumerate(node.top)))
                )
        self._stack.append(Enter(info))

    def _open_index(self, task: _Index, block: bytes) -> None:
        s = task.stream
        children = open_index(s.info.keys, s.counts, s.fan, task.level, task.position, task.cid, block)
        start = task.position * s.fan
        if task.level == 1:
            self._push_items(s, start, children)
        else:
            level = task.level - 1
            self._stack.extend(
                _Index(cid, s, level, start + i) for i, cid in reversed(list(enumerate(children)))
            )

    def _push_items(self, stream: _Stream, start: int, cids: list[bytes]) -> None:
        """Level 0 of a block tree: a file's data blocks, or a directory's listing blocks."""
        if stream.decoder is None:
            if cids:
                self._stack.append(Leaves(stream.info, start, tuple(cids)))
            return
        self._stack.extend(_Listing(cid, stream, start + i) for i, cid in reversed(list(enumerate(cids))))

    def _open_listing(self, task: _Listing, block: bytes) -> None:
        s = task.stream
        info = s.info
        assert s.decoder is not None
        plain = open_content(info.keys.data, info.node, task.position, task.cid, block)
        children = []
        wanted = self._select[info.depth] if info.depth < len(self._select) else None
        for entry in s.decoder.feed(plain):
            if info.depth + 1 > MAX_DEPTH:
                raise ManifestError("directory tree is nested too deeply")
            if entry.number in self._numbers or len(self._numbers) >= MAX_NODES:
                raise ManifestError("manifest reuses a node number or holds too many entries")
            self._numbers.add(entry.number)
            if wanted is not None and entry.name != wanted:
                continue  # off the selected path: neither walked nor fetched
            children.append(_NodeBlock(entry.cid, entry.number, info.depth + 1, entry.name))
        self._unopened += len(children) - 1
        s.next += 1
        if s.next == s.counts[0]:
            s.decoder.finish()
        later = s.waiting.pop(s.next, None)
        if later is not None:
            self._stack.append(later)
        self._stack.extend(reversed(children))
