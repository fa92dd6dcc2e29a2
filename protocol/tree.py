"""A reference sealer and opener that work on whole trees in memory.

They define the format in the fewest lines and make the test vectors; ``node/files/add.py`` and
``node/files/get.py`` produce and read exactly the same blocks, streaming from and to disk with threads.
Node numbers are given in pre-order: the root is 0, then each directory's entries in UTF-8 name order,
every subtree numbered before the next sibling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from protocol.cid import cid_of
from protocol.manifest import Entry, Node, encode_entry, encode_node
from protocol.names import check_name
from protocol.seal import NodeKeys
from protocol.stream import Chunker, IndexBuilder, open_content, seal_chunk
from protocol.walk import Enter, Exit, Leaves, TreeWalk


@dataclass(frozen=True)
class File:
    data: bytes
    executable: bool = False


@dataclass(frozen=True)
class Dir:
    entries: dict[str, File | Dir] = field(default_factory=dict)


Item = File | Dir


class _Sealer:
    def __init__(self, master: bytes, chunk_size: int) -> None:
        self.master = master
        self.cs = chunk_size
        self.blocks: dict[bytes, bytes] = {}
        self.next_number = 0

    def _stream(self, keys: NodeKeys, data: bytes) -> tuple[int, tuple[bytes, ...]]:
        chunker = Chunker(self.cs)
        index = IndexBuilder(keys, self.cs)
        for position, chunk in [*chunker.feed(data), *chunker.finish()]:
            cid, block = seal_chunk(keys.data, position, chunk)
            self.blocks[cid] = block
            self.blocks.update(index.add(cid))
        level, top, more = index.finish()
        self.blocks.update(more)
        return level, top

    def seal(self, item: Item, name: str | None) -> bytes:
        number = self.next_number
        self.next_number += 1
        keys = NodeKeys(self.master, number)
        if isinstance(item, File):
            data, kind, executable = item.data, "file", item.executable
        else:
            parts = []
            for child_name in sorted(item.entries, key=lambda n: n.encode("utf-8")):
                child_number = self.next_number
                child_cid = self.seal(item.entries[child_name], None)
                parts.append(encode_entry(Entry(check_name(child_name), child_number, child_cid)))
            data, kind, executable = b"".join(parts), "dir", False
        level, top = self._stream(keys, data)
        node = Node(kind, len(data), self.cs, level, top, executable, name)  # type: ignore[arg-type]
        block = keys.node.seal(0, encode_node(node))
        cid = cid_of(block)
        self.blocks[cid] = block
        return cid


def seal_tree(master: bytes, name: str, item: Item, chunk_size: int) -> tuple[bytes, dict[bytes, bytes]]:
    """Seal ``item`` as a root named ``name``; returns the root CID and every block by CID."""
    sealer = _Sealer(master, chunk_size)
    root = sealer.seal(item, check_name(name))
    return root, sealer.blocks


def open_tree(master: bytes, root: bytes, fetch: Callable[[bytes], bytes]) -> tuple[str, Item]:
    """Open a sealed tree; every check of the format applies (protocol/walk.py). Returns the root's name
    and content."""
    dirs: list[dict[str, Item]] = [{}]
    parts: list[bytes] = []
    for step in TreeWalk(master, root).steps(fetch):
        info = step.info
        if isinstance(step, Leaves):
            keys, node = info.keys, info.node
            parts += (
                open_content(keys.data, node, step.start + i, c, fetch(c)) for i, c in enumerate(step.cids)
            )
        elif isinstance(step, Enter) and info.node.kind == "dir":
            dirs.append({})
        elif isinstance(step, Exit):
            item: Item = (
                Dir(dirs.pop()) if info.node.kind == "dir" else File(b"".join(parts), info.node.executable)
            )
            parts = []
            dirs[-1][info.name] = item
    ((name, item),) = dirs[0].items()
    return name, item
