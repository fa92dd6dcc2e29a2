"""``sealbox ls``, ``rm``, ``gc`` and ``repo``: what the repo holds, and its upkeep."""

from __future__ import annotations

import argparse
from datetime import datetime

from node.cli.common import daemon, open_repo, warn
from node.cli.output import Output, human
from node.cli.secrets import STDIN, SecretInputError, parse_cli_link, read_targets
from node.daemon.api_client import NoDaemon
from node.daemon.views import pin_json
from node.store.errors import RepoDamagedError
from protocol.cid import cid_from_text, cid_to_text
from protocol.link import SCHEME


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``ls``, ``rm``, ``gc`` and ``repo``: what the repo holds, and its upkeep."""
    ls = sub.add_parser(
        "ls",
        parents=[common],
        help="list what this repo holds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List the roots pinned in this repo: root, display name, size, date added.",
        epilog="example:\n  sealbox ls --json",
    )
    ls.set_defaults(func=cmd_ls)

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
    try:
        answer = daemon(args).call("GET", "/v1/ls")
        pins = answer["pins"]
        for message in answer.get("damaged", []):
            warn(str(message))
    except NoDaemon:
        pins = [pin_json(p) for p in open_repo(args).pins(on_damaged=warn)]
    rows = [f"{'ROOT':<59}  {'NAME':<24}  {'SIZE':>10}  ADDED"]
    for pin in pins:
        added = datetime.fromisoformat(pin["added"]).astimezone().strftime("%Y-%m-%d %H:%M")
        name = pin["name"] if pin["name"] is not None else "-"
        rows.append(f"{pin['root']:<59}  {name:<24.24}  {human(pin['size']):>10}  {added}")
    Output(args).emit(pins, "\n".join(rows) if pins else None)


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

    repo = open_repo(args, create=False)
    report = reporepair.repair(repo) if args.action == "repair" else repocheck.check(repo, deep=args.deep)
    lines = [*(f"fixed: {d}" for d in report.done), *(f"note: {n}" for n in report.notes)]
    lines += [f"problem: {p}" for p in report.problems]
    data = {"fixed": report.done, "notes": report.notes, "problems": report.problems}
    Output(args).emit(data, "\n".join(lines) or "the repo passes every check")
    if report.problems:
        hint = "" if args.action == "repair" else ": 'sealbox repo repair' mends what can be mended"
        raise RepoDamagedError(f"{len(report.problems)} problem(s) left in the repo{hint}")
