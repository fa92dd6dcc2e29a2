"""What a tree holds, read from its metadata alone: ``sealbox ls LINK`` and the names ``sealbox ls`` shows.

A listing walks the root, the folders' node, index and listing blocks and each file's node block, never
a file's index or data blocks (protocol/walk.py with ``data=False``): a file's size and mode are in its
node. So ``ls LINK`` needs only those blocks from the network (node/net/netget.py, metadata only).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import NodeError
from node.store.errors import NotFoundError
from node.store.repo import Pin, Repo
from protocol.cid import cid_to_text
from protocol.errors import LinkError, ProtocolError
from protocol.link import ShareLink
from protocol.manifest import open_node
from protocol.walk import Enter, Exit, TreeWalk


@dataclass(frozen=True)
class ListedEntry:
    """One entry of a tree: its path inside the folder (components joined with ``/``; for a file link,
    the file's name), kind, size (a file's bytes; 0 for a folder) and mode."""

    path: str
    kind: str
    size: int
    executable: bool


@dataclass(frozen=True)
class TreeListing:
    name: str  # the root's own name, from its sealed node
    kind: str
    size: int  # the files' total
    entries: list[ListedEntry]


def list_tree(repo: Repo, link: ShareLink) -> TreeListing:
    """Every entry of ``link``'s tree in name order (pre-order), from the metadata blocks ``repo`` holds.
    NotFoundError if one of them is missing (fetch the metadata first)."""

    def fetch(cid: bytes) -> bytes:
        return repo.blocks.get(cid, verify=False)  # the walk verifies every block it is given

    entries: list[ListedEntry] = []
    names: list[str] = []
    root: Enter | None = None
    total = 0
    steps = TreeWalk(link.key, link.root, data=False).steps(fetch)
    try:
        for step in steps:
            info = step.info
            if isinstance(step, Exit):
                if info.node.kind == "dir" and names:
                    names.pop()
                continue
            assert isinstance(step, Enter)  # no leaves in a walk without data
            if root is None:
                root = step
                if info.node.kind == "dir":
                    continue
            path = "/".join([*names, info.name])
            node = info.node
            if node.kind == "dir":
                names.append(info.name)
                entries.append(ListedEntry(path, "dir", 0, False))
            else:
                total += node.size
                entries.append(ListedEntry(path, "file", node.size, node.executable))
    except NotFoundError:
        raise NotFoundError(f"the metadata of {cid_to_text(link.root)} is not all in this repo") from None
    assert root is not None
    if link.size is not None and link.size != total:
        raise LinkError("the link's size does not match the content: the link is wrong")
    return TreeListing(root.info.name, root.info.node.kind, total, entries)


def root_name(repo: Repo, pin: Pin) -> str | None:
    """The name sealed in a pinned root's node (the added file's or folder's name), opened with the key
    the pin keeps; None without a key or when the root block cannot be read or opened."""
    if pin.key is None:
        return None
    try:
        block = repo.blocks.get(pin.root, verify=False)
        node, _keys = open_node(pin.key, 0, pin.root, block, root=True)
    except (NodeError, ProtocolError):
        return None
    return node.name
