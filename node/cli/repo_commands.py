"""``sealbox ls``, ``link``, ``rm``, ``gc`` and ``repo``: what the repo holds, and its upkeep."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from node.cli.common import daemon, open_repo, warn
from node.cli.output import Output, human
from node.cli.secrets import STDIN, SecretInputError, parse_cli_link, read_targets
from node.cli.trees import cmd_ls_link
from node.daemon.api_client import NoDaemon
from node.daemon.views import listed_pins
from node.store.errors import NotFoundError, RepoDamagedError
from node.store.repo import Pin, Repo
from protocol.cid import cid_from_text, cid_to_text
from protocol.link import SCHEME, ShareLink

EMPTY_LS = "this repo pins nothing yet ('sealbox add FILE' adds one)"
MIN_PREFIX = 12  # characters of a root "link" takes: every root starts "bafkrei", so fewer say little


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``ls``, ``link``, ``rm``, ``gc`` and ``repo``: what the repo holds, and its upkeep."""
    _register_listing(sub, common)
    _register_upkeep(sub, common)


def _register_listing(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``ls`` and ``link``: what the repo (or a link) holds, and a pinned root's link again."""
    ls = sub.add_parser(
        "ls",
        parents=[common],
        help="list what this repo holds, or what a shared folder holds",
        description="Without LINK: every root this repo pins, with its name (the display name given\n"
        "with --name, else the name sealed in the root; '-' when the repo keeps no key for it). With\n"
        "LINK: each file and folder of the shared tree (kind, size, path, as 'get LINK PATH' takes\n"
        "it), from its metadata alone: no file data is fetched, and nothing is pinned.",
        epilog="examples:\n"
        "  sealbox ls\n"
        "  sealbox ls --json\n"
        "  sealbox ls 'sealbox:?v=1&...'      # what a shared folder holds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.add_argument("link", nargs="?", metavar="LINK", help="a share link ('-' reads it from stdin)")
    ls.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="ls LINK without a daemon: a peer to find providers through (repeatable)",
    )
    ls.set_defaults(func=cmd_ls)

    link = sub.add_parser(
        "link",
        parents=[common],
        help="print the share link of a pinned root again",
        description="Print the share link of a root this repo pins, from the key its pin keeps (roots\n"
        "added here, and roots fetched without --no-keep-key). ROOT may be a unique prefix of the\n"
        "root as 'ls' shows it. The link is the secret: whoever holds it reads the content.",
        epilog="example:\n  sealbox link bafkreiabc123def",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    link.add_argument("root", metavar="ROOT", help="a root CID as 'ls' shows it, or a unique prefix")
    link.add_argument("--with-size", action="store_true", help="carry the total size in the link")
    link.set_defaults(func=cmd_link)


def _register_upkeep(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``rm``, ``gc`` and ``repo``."""
    rm = sub.add_parser(
        "rm",
        parents=[common],
        help="unpin roots (their blocks go at the next gc)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Unpin each root (given as a root or a share link); 'sealbox gc' then frees its blocks.",
        epilog="examples:\n  sealbox rm bafkrei...\n  sealbox rm - < links.txt      # links out of argv",
    )
    rm.add_argument("targets", nargs="*", metavar="LINK|ROOT", help="- reads them from stdin")
    rm.add_argument(
        "--link-file",
        action="append",
        metavar="FILE",
        help="read links or roots from FILE, out of the process list (repeatable)",
    )
    rm.set_defaults(func=cmd_rm)

    gc = sub.add_parser(
        "gc",
        parents=[common],
        help="remove blocks no pinned root needs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Delete every block no pin and no running fetch needs, after checking the index and the\n"
        "pins (it deletes nothing if a check fails). Safe at any moment; through the daemon if one runs.",
        epilog="example:\n  sealbox gc",
    )
    gc.set_defaults(func=cmd_gc)

    repo = sub.add_parser(
        "repo",
        parents=[common],
        help="check or repair the block index and the pins",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="check: report what is wrong with the block index and the pins, one line each.\n"
        "repair (with the daemon stopped): rebuild the index from the packs and mend the pins.",
        epilog="examples:\n  sealbox repo check --deep\n  sealbox repo repair",
    )
    repo.add_argument("action", choices=["check", "repair"], help="check: report; repair: rebuild what fails")
    repo.add_argument("--deep", action="store_true", help="check: also read and hash every stored block")
    repo.set_defaults(func=cmd_repo)


def cmd_ls(args: argparse.Namespace) -> None:
    if args.link is not None:
        cmd_ls_link(args)
        return
    try:
        answer = daemon(args).call("GET", "/v1/ls")
        pins = answer["pins"]
        for message in answer.get("damaged", []):
            warn(str(message))
    except NoDaemon:
        pins = listed_pins(open_repo(args), warn)
    rows = [f"{'ROOT':<59}  {'NAME':<24}  {'SIZE':>10}  ADDED"]
    for pin in pins:
        added = datetime.fromisoformat(pin["added"]).astimezone().strftime("%Y-%m-%d %H:%M")
        rows.append(f"{pin['root']:<59}  {_shown_name(pin):<24.24}  {human(pin['size']):>10}  {added}")
    Output(args).emit(pins, "\n".join(rows) if pins else EMPTY_LS)


def _shown_name(pin: dict[str, Any]) -> str:
    """The display name when one was given, with the sealed name after it when they differ; the sealed
    name alone without one; ``-`` when the repo keeps no key (and no display name) for the root."""
    name, sealed = pin["name"], pin.get("root_name")
    if name is not None and sealed is not None and sealed != name:
        return f"{name} ({sealed})"
    return str(name or sealed or "-")


def find_pin(repo: Repo, text: str) -> Pin:
    """The pin whose root is ``text`` or starts with it (a unique prefix of at least 8 characters)."""
    text = text.strip()
    if text.startswith(SCHEME):
        raise SecretInputError("link takes a ROOT as 'sealbox ls' shows it, not a link")
    if len(text) < MIN_PREFIX:
        raise NotFoundError(f"give at least {MIN_PREFIX} characters of the root")
    found = [p for p in repo.pins(on_damaged=warn) if cid_to_text(p.root).startswith(text)]
    if not found:
        raise NotFoundError(f"no pinned root starts with {text[:64]!r}: 'sealbox ls' lists them")
    if len(found) > 1:
        raise NotFoundError(f"{len(found)} pinned roots start with {text[:64]!r}: give more of it")
    return found[0]


def cmd_link(args: argparse.Namespace) -> None:
    """The link again, from the pin's key; read from the repo's files (a daemon changes nothing here)."""
    pin = find_pin(open_repo(args, create=False), args.root)
    root = cid_to_text(pin.root)
    if pin.key is None:
        raise NotFoundError(f"{root} was fetched with --no-keep-key: this repo keeps no link for it")
    link = str(ShareLink(pin.root, pin.key, pin.name, pin.size if args.with_size else None))
    Output(args).emit({"root": root, "link": link}, link)


def _root_of(text: str) -> bytes:
    text = text.strip()
    return parse_cli_link(text, "rm").root if text.startswith(SCHEME) else cid_from_text(text)


def cmd_rm(args: argparse.Namespace) -> None:
    sources = ([STDIN] if STDIN in args.targets else []) + (args.link_file or [])
    targets = [t for t in args.targets if t != STDIN] + read_targets(sources)
    if not targets:
        raise SecretInputError("rm needs a LINK or ROOT ('-' reads them from stdin, or --link-file FILE)")
    roots = [_root_of(t) for t in targets]
    try:
        removed = daemon(args).call("POST", "/v1/rm", {"roots": [cid_to_text(r) for r in roots]})["unpinned"]
    except NoDaemon:
        repo = open_repo(args, create=False)
        with repo.lock():
            removed = [cid_to_text(repo.unpin(root).root) for root in roots]
    text = "\n".join(f"unpinned {root}" for root in removed)
    Output(args).emit({"unpinned": removed}, text)


def cmd_gc(args: argparse.Namespace) -> None:
    """Through the daemon if one runs (its fetches hold no lock the CLI could see), else here."""
    try:
        data = daemon(args).call("POST", "/v1/gc", {}, timeout=None)
        blocks, freed = int(data["blocks_removed"]), int(data["bytes_freed"])
    except NoDaemon:
        blocks, freed = open_repo(args, create=False).gc()
    Output(args).emit(
        {"blocks_removed": blocks, "bytes_freed": freed},
        f"removed {blocks} unpinned block{'s' if blocks != 1 else ''}, freed {human(freed)}",
    )


def cmd_repo(args: argparse.Namespace) -> None:
    """``repo check`` / ``repo repair``: what is wrong on stdout, one line each; non-zero if any is left."""
    from node.store import repocheck, reporepair
    from node.store.repo_modes import loose_modes

    repo = open_repo(args, create=False)
    report = reporepair.repair(repo) if args.action == "repair" else repocheck.check(repo, deep=args.deep)
    report.notes += loose_modes(repo.path)  # who else may read it (node/store/repo_modes.py)
    lines = [*(f"fixed: {d}" for d in report.done), *(f"note: {n}" for n in report.notes)]
    lines += [f"problem: {p}" for p in report.problems]
    data = {"fixed": report.done, "notes": report.notes, "problems": report.problems}
    Output(args).emit(data, "\n".join(lines) or "the repo passes every check")
    if report.problems:
        hint = "" if args.action == "repair" else ": 'sealbox repo repair' mends what can be mended"
        raise RepoDamagedError(f"{len(report.problems)} problem(s) left in the repo{hint}")
