"""``sealbox add`` and ``sealbox get``: a file or folder into the repo and its link out, and back."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from node.cli.common import daemon, open_repo, warn
from node.cli.errors import CliError
from node.cli.output import Interrupted, Output, fetch_status, human, progress_bar
from node.cli.secrets import STDIN, SecretInputError, parse_cli_link, read_link, read_name, spooled_stdin
from node.cli.through_daemon import daemon_add, daemon_fetch, detach_fetch
from node.cli.trees import entry_path, fetch_keywords
from node.daemon.api_client import NoDaemon
from node.daemon.config_file import storage_limit
from node.daemon.errors import DaemonError
from node.daemon.views import add_json
from node.files.add import add_path
from node.files.errors import DestinationError, InputError
from node.files.get import GetResult, check_output, get_link, stream_link
from node.files.inputs import Folder, scan_size
from node.net.progress import FetchProgress
from node.store.errors import NotFoundError
from node.store.pin_tree import remember_key
from node.store.repo import Repo
from protocol.cid import cid_to_text
from protocol.errors import LinkError
from protocol.link import SCHEME, ShareLink
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
    _register_add(sub, common)
    _register_get(sub, common)


def _register_add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    add = sub.add_parser(
        "add",
        parents=[common],
        help="seal files or folders into the repo and print their share links",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Seal each PATH (a file or a folder) under a fresh key into the repo, pin it, and print\n"
        "its share link, one line per PATH (--json: a list when there are several). With --as-folder\n"
        "NAME all the PATHs become one folder NAME and one link. '-' reads the file from stdin and needs\n"
        "--name (or --name-file), which names the file, as stdin has no name.",
        epilog="examples:\n"
        "  sealbox add photo.jpg\n"
        "  sealbox add a.txt b.txt ~/photos              # three links\n"
        "  sealbox add a.txt b.txt --as-folder notes     # one link to a folder 'notes'\n"
        "  pg_dump db | sealbox add - --name db.sql      # from stdin",
    )
    add.add_argument("paths", nargs="+", metavar="PATH", help="file or directory to add; '-' for stdin")
    named = add.add_mutually_exclusive_group()
    named.add_argument("--name", help="display name to show in 'ls' and carry (opt-in) in the link")
    named.add_argument(
        "--name-file",
        metavar="FILE",
        help="read the display name from FILE ('-': stdin), out of the process list other users see",
    )
    add.add_argument(
        "--as-folder", metavar="NAME", help="seal all the PATHs as one folder NAME (one link, not one each)"
    )
    add.add_argument("--with-size", action="store_true", help="carry the total size in the link")
    add.add_argument(
        "--peer-hints",
        action="store_true",
        help="carry this node's listen addresses in the link (needs a running daemon)",
    )
    add.add_argument("--chunk-size", type=_chunk_size, default=DEFAULT_CHUNK, help=argparse.SUPPRESS)
    add.set_defaults(func=cmd_add)


def _register_get(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    get = sub.add_parser(
        "get",
        parents=[common],
        help="rebuild a file or folder from its share link",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fetch what a share link names (from this repo, else through the daemon or the link's\n"
        "peers) and write it to ./NAME or -o DEST. Quote the link: it holds '&' and '#'. With PATH,\n"
        "only that file or subfolder of a shared folder is fetched and written; such a partial get\n"
        "pins nothing (the tree is incomplete): its blocks stay in the repo, unpinned, for a later\n"
        "whole get (gc may remove them). 'sealbox ls LINK' lists the paths a folder holds.",
        epilog="examples:\n"
        "  sealbox get 'sealbox:?v=1&xt=urn:sealbox:bafkrei...#k=...&c=...'\n"
        "  sealbox get - -o copy.mp4 < link.txt          # the link out of argv (other users see argv)\n"
        "  sealbox get 'sealbox:?v=1&...' docs/report.pdf # one file of a shared folder\n"
        "  sealbox get 'sealbox:?v=1&...' -o - | mpv -    # a file to stdout",
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
    """One link per PATH (or one for ``--as-folder``); ``-`` is stdin, spooled to a private file first."""
    if STDIN in args.paths and (len(args.paths) > 1 or args.as_folder is not None):
        raise CliError("'-' (stdin) must be add's only PATH")
    if args.name_file is not None:
        if args.name_file == STDIN and args.paths == [STDIN]:
            raise CliError("'add -' reads the file from stdin: give the name with --name or --name-file FILE")
        args.name = read_name(args.name_file)
    if args.paths == [STDIN]:
        if args.name is None:
            raise CliError("'add -' needs --name NAME: a file read from stdin has no name of its own")
        repo = open_repo(args)
        with repo.lock(), spooled_stdin(repo) as spool:  # gc waits: it would delete the spool in tmp/
            Output(args).emit(*_add_one(args, [spool], entry_name=args.name))
        return
    paths = [Path(os.path.abspath(p)) for p in args.paths]
    if args.as_folder is not None or len(paths) == 1:
        Output(args).emit(*_add_one(args, paths))
        return
    if args.name is not None:
        raise CliError("--name names one root: add the paths one at a time, or --as-folder NAME")
    for path in paths:  # refuse a missing path before adding any
        if not os.path.lexists(path):
            raise InputError(f"no such file or directory: {path}")
    added = []
    for path in paths:
        data, link = _add_one(args, [path])
        if not args.json:
            print(link, flush=True)  # each link as soon as it exists: a later failure keeps it seen
        added.append(data)
    if args.json:
        Output(args).emit(added, None)


def _add_one(
    args: argparse.Namespace, paths: list[Path], *, entry_name: str | None = None
) -> tuple[dict[str, Any], str]:
    """One root, through the daemon if one runs: ``paths[0]``, or a folder of them with --as-folder.
    Returns what ``--json`` prints and the link."""
    request: dict[str, Any] = {
        "name": args.name,
        "with_size": args.with_size,
        "peer_hints": args.peer_hints,
    }
    if args.as_folder is not None:
        request |= {"paths": [str(p) for p in paths], "as_folder": args.as_folder}
    else:
        request |= {"path": str(paths[0])} | ({"entry_name": entry_name} if entry_name else {})
    try:
        data = daemon_add(args, daemon(args), request)
    except NoDaemon:
        if args.peer_hints:
            raise DaemonError(
                "--peer-hints needs a running daemon (its listen addresses go into the link):"
                " start one with 'sealbox daemon'"
            ) from None
    else:
        return data, str(data["link"])
    repo = open_repo(args)
    repo.blocks.set_limit(storage_limit(repo.path))  # as the daemon does: checked as each block is written
    source: Path | Folder = Folder(args.as_folder, tuple(paths)) if args.as_folder else paths[0]
    total = scan_size(source) if sys.stderr.isatty() and not args.json else None
    with progress_bar(args, total, "sealing") as advance:
        result = add_path(
            repo,
            source,
            entry_name=entry_name,
            display_name=args.name,
            with_size=args.with_size,
            chunk_size=args.chunk_size,
            progress=advance,
            warn=warn,
        )
    return add_json(result, str(result.link)), str(result.link)


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
    link = parse_cli_link(text, "get")
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
