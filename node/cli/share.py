"""``sealbox add`` and ``sealbox get``: a file or folder into the repo and its link out, and back."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from node.cli.common import daemon, open_repo, warn
from node.cli.output import Interrupted, Output, fetch_status, human, progress_bar
from node.cli.secrets import STDIN, SecretInputError, read_link, read_name
from node.cli.through_daemon import daemon_add, daemon_fetch, detach_fetch
from node.cli.trees import entry_path, fetch_keywords
from node.daemon.api_client import NoDaemon
from node.daemon.config_file import storage_limit
from node.daemon.errors import DaemonError
from node.daemon.views import add_json
from node.files.add import add_path, scan_size
from node.files.errors import DestinationError
from node.files.get import GetResult, check_output, get_link, stream_link
from node.net.progress import FetchProgress
from node.store.errors import NotFoundError
from node.store.pin_tree import remember_key
from node.store.repo import Repo
from protocol.cid import cid_to_text
from protocol.errors import LinkError
from protocol.link import SCHEME, ShareLink, parse_link
from protocol.manifest import DEFAULT_CHUNK

STDOUT = "-"  # get -o -


def _chunk_size(text: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("chunk size is a number of bytes, e.g. 256KiB") from None


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``add`` and ``get``: a file or folder into the repo and its link out, and back."""
    add = sub.add_parser(
        "add", parents=[common], help="seal a file or folder into the repo and print its share link"
    )
    add.add_argument("path", help="file or directory to add")
    named = add.add_mutually_exclusive_group()
    named.add_argument("--name", help="display name to show in 'ls' and carry (opt-in) in the link")
    named.add_argument(
        "--name-file",
        metavar="FILE",
        help="read the display name from FILE ('-': stdin), out of the process list other users see",
    )
    add.add_argument("--with-size", action="store_true", help="carry the total size in the link")
    add.add_argument(
        "--peer-hints",
        action="store_true",
        help="carry this node's listen addresses in the link (needs a running daemon)",
    )
    add.add_argument("--chunk-size", type=_chunk_size, default=DEFAULT_CHUNK, help=argparse.SUPPRESS)
    add.set_defaults(func=cmd_add)

    _register_get(sub, common)


def _register_get(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``get``'s arguments."""
    get = sub.add_parser(
        "get",
        parents=[common],
        help="rebuild a file or folder from its share link",
        description="Rebuild a file or folder from its share link, fetching what the repo lacks. With"
        " PATH, only that file or subfolder of a shared folder is fetched and written; such a partial"
        " get pins nothing (the tree is incomplete): its blocks stay in the repo, unpinned, for a later"
        " whole get (gc may remove them). 'sealbox ls LINK' lists the paths a folder holds.",
    )
    get.add_argument(
        "link",
        nargs="?",
        help="a sealbox:?... share link, or - to read it from stdin (safer: other local users see argv)",
    )
    get.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="one entry inside a shared folder (a/b.txt, names exactly as 'ls LINK' shows them)",
    )
    get.add_argument("--link-file", metavar="FILE", help="read the link from FILE, out of the process list")
    get.add_argument(
        "-o",
        "--output",
        help="destination path (default: ./NAME; into DEST/NAME if DEST is a folder; the folder must"
        " exist); '-' writes a file to stdout (not with --json)",
    )
    get.add_argument(
        "--no-keep-key",
        action="store_true",
        help="do not keep the link's key in the pin (then 'ls' shows no name and 'link' cannot print it"
        " again; whoever reads the repo then reads only blocks)",
    )
    get.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="without a daemon: a peer to find providers through (repeatable; adds to the config's)",
    )
    get.add_argument(
        "--no-seed",
        action="store_true",
        help="do not announce, pin or keep serving what was fetched (by default a fetcher becomes a seed)",
    )
    get.add_argument(
        "--detach",
        action="store_true",
        help="hand the fetch to the running daemon and return at once (follow it with 'sealbox transfers')",
    )
    get.set_defaults(func=cmd_get)


def cmd_add(args: argparse.Namespace) -> None:
    if args.name_file is not None:
        args.name = read_name(args.name_file)
    path = Path(args.path)
    request = {
        "path": os.path.abspath(path),
        "name": args.name,
        "with_size": args.with_size,
        "peer_hints": args.peer_hints,
    }
    try:
        data = daemon_add(args, daemon(args), request)
    except NoDaemon:
        if args.peer_hints:
            raise DaemonError(
                "--peer-hints needs a running daemon (its listen addresses go into the link):"
                " start one with 'sealbox daemon'"
            ) from None
    else:
        Output(args).emit(data, str(data["link"]))
        return
    repo = open_repo(args)
    repo.blocks.set_limit(storage_limit(repo.path))  # as the daemon does: checked as each block is written
    total = scan_size(path) if sys.stderr.isatty() and not args.json and path.exists() else None
    with progress_bar(args, total, "sealing") as advance:
        result = add_path(
            repo,
            path,
            display_name=args.name,
            with_size=args.with_size,
            chunk_size=args.chunk_size,
            progress=advance,
            warn=warn,
        )
    Output(args).emit(add_json(result, str(result.link)), str(result.link))


def _link_arg(args: argparse.Namespace) -> str:
    """The link ``get`` was given: as LINK, on stdin (``-``) or in ``--link-file`` (then a lone
    positional argument is the PATH)."""
    if args.link_file is not None and args.link is not None and args.path is None:
        args.link, args.path = None, args.link
    two = args.path is not None and args.path.strip().startswith(SCHEME)  # never echoed as a PATH
    if two or (args.link is None) == (args.link_file is None):
        raise SecretInputError("get needs one link: LINK, '-' to read it from stdin, or --link-file FILE")
    if args.link_file is not None:
        return read_link(args.link_file)
    return read_link(STDIN) if args.link == STDIN else str(args.link)


def cmd_get(args: argparse.Namespace) -> None:
    text = _link_arg(args)
    to_stdout = args.output == STDOUT
    if to_stdout and args.json:
        raise DestinationError("--json cannot go with -o -: stdout carries the file")
    if not text.strip().startswith(SCHEME):
        raise LinkError("get needs a share link (sealbox:?...): a root alone does not carry the key")
    link = parse_link(text)
    args.entry = entry_path(args.path)  # read by fetch_keywords / fetch_fields (node/cli/trees.py)
    if args.output is not None and not to_stdout:
        check_output(args.output)  # a missing folder is said now, not after the fetch
    if args.detach:
        detach_fetch(args, link)
        return
    repo = open_repo(args)
    if not repo.blocks.has(link.root):
        _fetch_from_network(args, repo, link)
        result = _get_local(args, repo, link)
    else:
        try:
            result = _get_local(args, repo, link)
        except NotFoundError:  # a block under the root is missing (e.g. an interrupted fetch)
            _fetch_from_network(args, repo, link)
            result = _get_local(args, repo, link)
    if not args.entry and not args.no_keep_key:
        remember_key(repo, link)  # a root fetched before without its key, held whole: keep it now
    if to_stdout:
        return  # stdout holds the file, and nothing else
    data = {
        "root": cid_to_text(link.root),
        "path": str(result.path),
        "kind": result.kind,
        "size": result.size,
        "files": result.files,
    }
    Output(args).emit(data, str(result.path))


def _get_local(args: argparse.Namespace, repo: Repo, link: ShareLink) -> GetResult:
    total = None if args.entry else link.size
    with progress_bar(args, total, "opening") as advance:
        if args.output == STDOUT:
            return stream_link(repo, link, sys.stdout.buffer, path=args.entry, progress=advance)
        dest = Path(args.output) if args.output else None
        return get_link(repo, link, dest, path=args.entry, progress=advance)


def _fetch_from_network(args: argparse.Namespace, repo: Repo, link: ShareLink) -> None:
    """Bring the link's blocks into the repo: through the daemon if one runs, else with a temporary node
    that asks the link's peer hints and the configured bootstrap peers. With neither, say so."""
    try:
        daemon_fetch(args, daemon(args), link)
        return
    except NoDaemon:
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
    progress = FetchProgress()
    with fetch_status(args, link, progress):
        try:
            netget.get_from_network(
                repo,
                link,
                bootstrap=bootstrap,
                pin=not args.no_seed,
                progress=progress,
                **fetch_keywords(args),
            )
        except KeyboardInterrupt:
            raise Interrupted(_stopped_line(progress)) from None


def _stopped_line(progress: FetchProgress) -> str:
    """What an interrupted fetch of this process leaves: the blocks it stored stay, unpinned."""
    progress.refresh()
    stored = progress.done + progress.held
    if not stored:
        return "interrupted: nothing was fetched yet"
    return (
        f"interrupted: {human(stored)} already fetched stay in the repo (not pinned) and a later get"
        " resumes from them"
    )
