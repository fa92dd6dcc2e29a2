"""The control API's tree endpoints: what a shared folder holds, and the fields that narrow a fetch.

- ``POST /v1/tree {link}`` -> what ``ls LINK --json`` prints: ``{name, kind, size, entries: [{path, kind,
  size, executable}]}``. Only the tree's metadata is fetched (node/files/listing.py); nothing is pinned
  or announced, and the metadata blocks stay unpinned (gc may remove them).
- ``POST /v1/fetch`` (node/daemon/transfers.py) takes ``keep_key`` (default true: the pin keeps the link's
  key, ``get --no-keep-key`` sends false) and ``path`` (a list of entry names: only that entry of the
  folder is fetched, and the tree is not pinned), read here by :func:`fetch_options`.

Nothing here logs a link, a key, a path or a name: roots and counts only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost

from node.daemon.errors import ApiError
from node.daemon.views import tree_json
from node.files.listing import list_tree
from node.net import netget
from node.net.dht import Dht
from node.store.errors import NotFoundError
from node.store.repo import Repo
from protocol.cid import cid_to_text
from protocol.link import parse_link
from protocol.names import check_name
from protocol.walk import MAX_DEPTH

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def fetch_options(args: dict[str, Any]) -> dict[str, Any]:
    """``keep_key`` and ``path`` of a fetch request, checked, as ``netget.fetch_link``'s keywords."""
    keep_key = args.get("keep_key", True)
    if not isinstance(keep_key, bool):
        raise ApiError("keep_key must be true or false")
    return {"keep_key": keep_key, "path": entry_path(args.get("path"))}


def entry_path(value: object) -> tuple[str, ...] | None:
    """A path inside a tree as sent: None, or a list of 1 to MAX_DEPTH names, each one a tree could hold
    (so nothing unbounded reaches the walk); an empty list is the whole tree."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_DEPTH or not all(isinstance(p, str) for p in value):
        raise ApiError(f"path must be a list of at most {MAX_DEPTH} entry names")
    for part in value:
        check_name(part)  # a ProtocolError answers 400 (names.py says why, without the name)
    return tuple(value) or None


def tree_route(repo: Repo, host: IHost, dht: Dht) -> Handler:
    """``POST /v1/tree``: the listing from the metadata held, fetched first when some is missing."""

    async def tree(args: dict[str, Any]) -> dict[str, Any]:
        text = args.get("link")
        if not isinstance(text, str) or not text:
            raise ApiError("link must be a non-empty string")
        link = parse_link(text)
        try:
            listing = await trio.to_thread.run_sync(list_tree, repo, link)
        except NotFoundError:
            await netget.fetch_link(host, dht, repo, link, announce=False, pin=False, data=False)
            listing = await trio.to_thread.run_sync(list_tree, repo, link)
        log.info("listed root %s: %d entries", cid_to_text(link.root), len(listing.entries))
        return tree_json(listing)

    return tree
