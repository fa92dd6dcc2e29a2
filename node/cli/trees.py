"""``sealbox ls LINK`` (what a shared folder holds, from its metadata alone) and what narrows a ``get``:
``get LINK PATH`` (one entry of a folder) and ``--no-keep-key``, as the fetch's keywords and as the
fields of the daemon's fetch request."""

from __future__ import annotations

import argparse
from typing import Any

from node.cli.common import daemon, open_repo
from node.cli.output import Output, human
from node.cli.secrets import STDIN, parse_cli_link, read_link
from node.daemon.api_client import NoDaemon
from node.daemon.views import tree_json
from node.files.listing import list_tree
from node.store.errors import NotFoundError
from node.store.repo import Repo
from protocol.cid import cid_to_text
from protocol.errors import LinkError
from protocol.link import SCHEME, ShareLink
from protocol.names import check_name


def entry_path(text: str | None) -> tuple[str, ...]:
    """``get LINK PATH``'s PATH as entry names: split at ``/``, empty parts dropped (``a/b/``, ``/a``);
    each part must be a name a tree can hold. Empty: the whole tree."""
    if text is None:
        return ()
    return tuple(check_name(part) for part in text.split("/") if part)


def fetch_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """``netget.fetch_link`` / ``get_from_network``'s ``keep_key`` and ``path`` for this get."""
    path: tuple[str, ...] = getattr(args, "entry", ())
    return {"keep_key": not getattr(args, "no_keep_key", False), "path": path or None}


def fetch_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The same as fields of the daemon's ``POST /v1/fetch`` (node/daemon/tree_routes.py)."""
    keywords = fetch_keywords(args)
    path = keywords["path"]
    return {"keep_key": keywords["keep_key"], "path": list(path) if path else None}


def cmd_ls_link(args: argparse.Namespace) -> None:
    """``ls LINK``: each entry of the tree with its kind, size and path, like ``tar tv``."""
    text = read_link(STDIN) if args.link == STDIN else str(args.link)
    if not text.strip().startswith(SCHEME):
        raise LinkError("ls LINK needs a share link (sealbox:?...): 'sealbox ls' alone lists this repo")
    link = parse_cli_link(text, "ls")
    try:
        data = daemon(args).call("POST", "/v1/tree", {"link": str(link)}, timeout=None)
    except NoDaemon:
        data = tree_json(_list_here(args, open_repo(args), link))
    rows = []
    for entry in data["entries"]:
        kind = "dir " if entry["kind"] == "dir" else ("exec" if entry["executable"] else "file")
        size = "-" if entry["kind"] == "dir" else human(int(entry["size"]))
        rows.append(f"{kind}  {size:>10}  {entry['path']}{'/' if entry['kind'] == 'dir' else ''}")
    files = sum(1 for e in data["entries"] if e["kind"] == "file")
    head = f"{data['name']}{'/' if data['kind'] == 'dir' else ''}: {files} file(s), {human(data['size'])}"
    Output(args).emit(data, "\n".join([head, *rows]))


def _list_here(args: argparse.Namespace, repo: Repo, link: ShareLink) -> Any:
    """The listing from the metadata this repo holds, fetched first by a temporary node when some is
    missing (the link's peer hints and the bootstrap peers; metadata only, nothing pinned)."""
    try:
        return list_tree(repo, link)
    except NotFoundError:
        pass
    from node.daemon import logs  # imports libp2p: only when the network is needed
    from node.daemon.config import load_config
    from node.net import netget

    logs.silence_libraries()
    config = load_config(repo.path, create=False)
    repo.blocks.set_limit(config.storage_limit)
    bootstrap = [*config.bootstrap, *(args.bootstrap or ())]
    if not link.peers and not bootstrap:
        raise NotFoundError(
            f"{cid_to_text(link.root)} is not in this repo, and there is nowhere to look for it: the link"
            " has no peer hints, no bootstrap peer is configured, and no daemon runs"
        )
    netget.get_from_network(repo, link, bootstrap=bootstrap, pin=False, data=False)
    return list_tree(repo, link)
