"""Pinning a tree a fetch completed (node/net/netget.py): its block list read back from the store."""

from __future__ import annotations

import contextlib
import os

from node.store.errors import NotFoundError
from node.store.repo import Pin, Repo, now
from node.store.tree_walk import TreeSummary, read_tree
from protocol.link import ShareLink


def pin_fetched(repo: Repo, link: ShareLink, *, keep_key: bool = True) -> Pin:
    """Pin a complete tree with its block list, so gc keeps it and the node serves and announces it.

    With ``keep_key`` the pin holds the link's key, so ``ls`` can show the root's own name and
    ``sealbox link`` print the link again (specs/format.md, "Pins"). A root pinned already (added here,
    or fetched before) keeps its pin, except that a pin without a key is given this link's key when
    ``keep_key`` (the later get asked for it); ``keep_key=False`` never removes a key a pin holds.
    Under the repo's shared lock (no gc meanwhile), and only once every block has been read back from
    a pack that still exists and found to hash to its CID: an index row alone is not enough
    (NotFoundError).
    """
    with repo.lock():
        return _pin_fetched(repo, link, link.key if keep_key else None)


def remember_key(repo: Repo, link: ShareLink) -> None:
    """A get of a whole tree the repo held already (no fetch, so no :func:`pin_fetched`): its pin, if it
    keeps no key, is given the link's key, which the get just opened the tree with."""
    with repo.lock(), contextlib.suppress(NotFoundError):
        pin = repo.read_pin(link.root)
        if pin.key is None:
            repo.set_key(pin, link.key)


def _pin_fetched(repo: Repo, link: ShareLink, key: bytes | None) -> Pin:
    with contextlib.suppress(NotFoundError):
        pin = repo.read_pin(link.root)
        return pin if pin.key is not None or key is None else repo.set_key(pin, key)
    summary = TreeSummary()
    path = repo.new_block_list()
    count = stored = 0
    seen: set[bytes] = set()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            for cid, length in read_tree(repo.blocks, link, summary):  # NotFoundError if one is missing
                if cid in seen:
                    continue
                seen.add(cid)
                f.write(cid)
                count += 1
                stored += length
            f.flush()
            os.fsync(f.fileno())
        pin = Pin(link.root, summary.kind, summary.size, count, stored, now(), link.name, key)
        repo.write_pin(pin, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return pin
