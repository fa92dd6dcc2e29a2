"""The ``sealbox`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from node.add import add_path, scan_size
from node.alloc import keep_freed_buffers
from node.api_client import ApiClient, NoDaemon
from node.cli_secrets import STDIN, SecretInputError, read_link, read_name, read_targets, scrub_process_title
from node.errors import DaemonError, NodeError, NotFoundError, RepoDamagedError
from node.get import GetResult, get_link
from node.repo import Repo, default_repo_path
from node.views import add_json, pin_json
from protocol.cid import cid_from_text, cid_to_text
from protocol.errors import LinkError, ProtocolError
from protocol.link import SCHEME, ShareLink, parse_link
from protocol.manifest import DEFAULT_CHUNK

EXIT_ERROR = 1
PROGRESS_INTERVAL = 0.25  # seconds between updates of a fetch's progress bar
EXIT_INTERRUPTED = 130


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def shows_progress(args: argparse.Namespace) -> bool:
    return not (args.json or args.quiet) and sys.stderr.isatty()


@contextmanager
def progress_bar(args: argparse.Namespace, total: int | None, what: str) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr when it is a terminal (and output is not JSON)."""
    if not shows_progress(args):
        yield lambda _n: None
        return
    from tqdm import tqdm  # only when a bar is shown: it is slow to import

    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what, leave=False, file=sys.stderr
    ) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        yield advance


@contextmanager
def fetch_bar(args: argparse.Namespace, link: ShareLink) -> Iterator[Callable[[int], None]]:
    """A "fetching" bar (:func:`progress_bar`), moved by the bytes fetched so far. The blocks also hold
    padding and the manifest, so the bar stops at the link's size."""
    shown = 0
    with progress_bar(args, link.size, "fetching") as advance:

        def reached(done: int) -> None:
            nonlocal shown
            if link.size is not None:
                done = min(done, link.size)
            if done > shown:
                advance(done - shown)
                shown = done

        yield reached


class Output:
    def __init__(self, args: argparse.Namespace) -> None:
        self.json = args.json

    def emit(self, data: Any, text: str | None) -> None:
        if self.json:
            print(json.dumps(data, ensure_ascii=False))
        elif text is not None:
            print(text)


def _repo_path(args: argparse.Namespace) -> Path:
    return Path(args.repo) if args.repo else default_repo_path()


def _open_repo(args: argparse.Namespace, *, create: bool = True) -> Repo:
    return Repo.open(_repo_path(args), create=create)


def _daemon(args: argparse.Namespace) -> ApiClient:
    """The client of the daemon running on this repo; its calls raise NoDaemon when none answers."""
    return ApiClient(_repo_path(args))


def _warn(message: str) -> None:
    print(f"sealbox: warning: {message}", file=sys.stderr)


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
        data = _daemon(args).call("POST", "/v1/add", request, timeout=None)
    except NoDaemon:
        if args.peer_hints:
            raise DaemonError(
                "--peer-hints needs a running daemon (its listen addresses go into the link):"
                " start one with 'sealbox daemon'"
            ) from None
    else:
        for message in data.pop("warnings", []):
            _warn(str(message))
        Output(args).emit(data, str(data["link"]))
        return
    repo = _open_repo(args)
    total = scan_size(path) if sys.stderr.isatty() and not args.json and path.exists() else None
    with progress_bar(args, total, "sealing") as advance:
        result = add_path(
            repo,
            path,
            display_name=args.name,
            with_size=args.with_size,
            chunk_size=args.chunk_size,
            progress=advance,
            warn=_warn,
        )
    Output(args).emit(add_json(result, str(result.link)), str(result.link))


def _link_arg(args: argparse.Namespace) -> str:
    """The link ``get`` was given: as LINK, on stdin (``-``) or in ``--link-file``."""
    if (args.link is None) == (args.link_file is None):
        raise SecretInputError("get needs one link: LINK, '-' to read it from stdin, or --link-file FILE")
    if args.link_file is not None:
        return read_link(args.link_file)
    return read_link(STDIN) if args.link == STDIN else str(args.link)


def cmd_get(args: argparse.Namespace) -> None:
    text = _link_arg(args)
    if not text.strip().startswith(SCHEME):
        raise LinkError("get needs a share link (sealbox:?...): a root alone does not carry the key")
    link = parse_link(text)
    repo = _open_repo(args)
    if not repo.blocks.has(link.root):
        _fetch_from_network(args, repo, link)
        result = _get_local(args, repo, link)
    else:
        try:
            result = _get_local(args, repo, link)
        except NotFoundError:  # a block under the root is missing (e.g. an interrupted fetch)
            _fetch_from_network(args, repo, link)
            result = _get_local(args, repo, link)
    data = {
        "root": cid_to_text(link.root),
        "path": str(result.path),
        "kind": result.kind,
        "size": result.size,
        "files": result.files,
    }
    Output(args).emit(data, str(result.path))


def _get_local(args: argparse.Namespace, repo: Repo, link: ShareLink) -> GetResult:
    with progress_bar(args, link.size, "opening") as advance:
        return get_link(repo, link, Path(args.output) if args.output else None, progress=advance)


def _fetch_from_network(args: argparse.Namespace, repo: Repo, link: ShareLink) -> None:
    """Bring the link's blocks into the repo: through the daemon if one runs, else with a temporary node
    that asks the link's peer hints and the configured bootstrap peers. With neither, say so."""
    try:
        _fetch_through_daemon(args, _daemon(args), link)
        return
    except NoDaemon:
        pass
    from node import logs, netget  # imports libp2p: only when the network is needed
    from node.config import load_config

    logs.silence_libraries()

    config = load_config(repo.path, create=False)
    repo.blocks.set_limit(config.storage_limit)
    bootstrap = [*config.bootstrap, *(args.bootstrap or ())]
    if not link.peers and not bootstrap:
        raise NotFoundError(
            f"{cid_to_text(link.root)} is not in this repo, and there is nowhere to look for it: the link"
            " has no peer hints, no bootstrap peer is configured, and no daemon runs"
        )
    with fetch_bar(args, link) as reached:
        fetched = 0

        def stored(size: int) -> None:
            nonlocal fetched
            fetched += size
            reached(fetched)

        netget.get_from_network(repo, link, bootstrap=bootstrap, pin=not args.no_seed, on_bytes=stored)


def _fetch_through_daemon(args: argparse.Namespace, daemon: ApiClient, link: ShareLink) -> None:
    """Ask the daemon to fetch ``link``; on a terminal, show its progress (asked of the daemon a few
    times a second while the fetch runs in a thread)."""
    body = {"link": str(link), "seed": not args.no_seed}
    if not shows_progress(args):
        daemon.call("POST", "/v1/fetch", body, timeout=None)
        return
    outcome: list[BaseException | dict[str, Any]] = []

    def fetch() -> None:
        try:
            outcome.append(daemon.call("POST", "/v1/fetch", body, timeout=None))
        except (NodeError, OSError) as exc:  # handed to the main thread, which raises it
            outcome.append(exc)

    worker = threading.Thread(target=fetch, name="fetch", daemon=True)
    root = cid_to_text(link.root)
    with fetch_bar(args, link) as show:
        worker.start()
        while worker.is_alive():
            worker.join(PROGRESS_INTERVAL)  # a refresh rate for the bar, not a wait for an event
            try:
                fetches = daemon.call("GET", "/v1/fetching", timeout=PROGRESS_INTERVAL * 4)["fetches"]
                show(sum(int(f["bytes"]) for f in fetches if f["root"] == root))
            except (NodeError, KeyError, TypeError, ValueError):
                continue  # the bar is a nicety: the fetch itself reports any failure
        if not outcome:
            raise DaemonError("the fetch through the daemon ended without an answer")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        show(int(result.get("bytes", 0)) if isinstance(result, dict) else 0)


def cmd_ls(args: argparse.Namespace) -> None:
    try:
        answer = _daemon(args).call("GET", "/v1/ls")
        pins = answer["pins"]
        for message in answer.get("damaged", []):
            _warn(str(message))
    except NoDaemon:
        pins = [pin_json(p) for p in _open_repo(args).pins(on_damaged=_warn)]
    rows = [f"{'ROOT':<59}  {'NAME':<24}  {'SIZE':>10}  ADDED"]
    for pin in pins:
        added = datetime.fromisoformat(pin["added"]).astimezone().strftime("%Y-%m-%d %H:%M")
        name = pin["name"] if pin["name"] is not None else "-"
        rows.append(f"{pin['root']:<59}  {name:<24.24}  {human(pin['size']):>10}  {added}")
    Output(args).emit(pins, "\n".join(rows) if pins else None)


def _root_of(text: str) -> bytes:
    text = text.strip()
    return parse_link(text).root if text.startswith(SCHEME) else cid_from_text(text)


def cmd_rm(args: argparse.Namespace) -> None:
    sources = ([STDIN] if STDIN in args.targets else []) + (args.link_file or [])
    targets = [t for t in args.targets if t != STDIN] + read_targets(sources)
    if not targets:
        raise SecretInputError("rm needs a LINK or ROOT ('-' reads them from stdin, or --link-file FILE)")
    roots = [_root_of(t) for t in targets]
    try:
        removed = _daemon(args).call("POST", "/v1/rm", {"roots": [cid_to_text(r) for r in roots]})["unpinned"]
    except NoDaemon:
        repo = _open_repo(args, create=False)
        with repo.lock():
            removed = [cid_to_text(repo.unpin(root).root) for root in roots]
    text = "\n".join(f"unpinned {root}" for root in removed)
    Output(args).emit({"unpinned": removed}, text)


def _running(args: argparse.Namespace, path: str) -> Any:
    try:
        return _daemon(args).call("GET", path)
    except NoDaemon:
        raise DaemonError(f"no daemon runs on {_repo_path(args)}: start one with 'sealbox daemon'") from None


def cmd_status(args: argparse.Namespace) -> None:
    status = _running(args, "/v1/status")
    limit = status["storage_limit"]
    last = status["last_reprovide"]
    lines = [
        f"peer id    {status['peer_id']}",
        *(f"listening  {addr}" for addr in status["addrs"]),
        f"peers      {status['peers']}",
        f"stored     {status['blocks']} blocks, {human(status['stored_bytes'])}"
        f" (limit: {human(limit) if limit is not None else 'none'})",
        f"roots      {status['roots']} pinned, {status['roots_announced']} announced"
        f" (last announcement: {last or 'none yet'}); seeding {'on' if status['seed'] else 'off'}",
        f"served     {status['served_blocks']} blocks, {human(status['served_bytes'])} since start",
    ]
    Output(args).emit(status, "\n".join(lines))


def cmd_peers(args: argparse.Namespace) -> None:
    peers = _running(args, "/v1/peers")["peers"]
    text = "\n".join(f"{p['peer_id']}  {' '.join(p['addrs'])}".rstrip() for p in peers)
    Output(args).emit(peers, text or None)


def cmd_daemon(args: argparse.Namespace) -> None:
    from node import daemon, logs  # imports trio and libp2p: only for the daemon

    logs.configure(args.log_level)
    daemon.run(_repo_path(args), listen=args.listen or (), bootstrap=args.bootstrap or ())


def cmd_gc(args: argparse.Namespace) -> None:
    """Through the daemon if one runs (its fetches hold no lock the CLI could see), else here."""
    try:
        data = _daemon(args).call("POST", "/v1/gc", {}, timeout=None)
        blocks, freed = int(data["blocks_removed"]), int(data["bytes_freed"])
    except NoDaemon:
        blocks, freed = _open_repo(args, create=False).gc()
    Output(args).emit(
        {"blocks_removed": blocks, "bytes_freed": freed},
        f"removed {blocks} unpinned block{'s' if blocks != 1 else ''}, freed {human(freed)}",
    )


def cmd_repo(args: argparse.Namespace) -> None:
    """``repo check`` / ``repo repair``: what is wrong on stdout, one line each; non-zero if any is left."""
    from node import repocheck, reporepair

    repo = _open_repo(args, create=False)
    report = reporepair.repair(repo) if args.action == "repair" else repocheck.check(repo, deep=args.deep)
    lines = [*(f"fixed: {d}" for d in report.done), *(f"note: {n}" for n in report.notes)]
    lines += [f"problem: {p}" for p in report.problems]
    data = {"fixed": report.done, "notes": report.notes, "problems": report.problems}
    Output(args).emit(data, "\n".join(lines) or "the repo passes every check")
    if report.problems:
        hint = "" if args.action == "repair" else ": 'sealbox repo repair' mends what can be mended"
        raise RepoDamagedError(f"{len(report.problems)} problem(s) left in the repo{hint}")


def _chunk_size(text: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("chunk size is a number of bytes, e.g. 256KiB") from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    common.add_argument(
        "--repo", default=argparse.SUPPRESS, help="repo directory (default $SEALBOX_REPO or ~/.sealbox)"
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar"
    )

    parser = argparse.ArgumentParser(
        prog="sealbox",
        description="End-to-end encrypted file sharing: add files, share the link, get them back.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--repo", help="repo directory (default $SEALBOX_REPO or ~/.sealbox)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    get = sub.add_parser("get", parents=[common], help="rebuild a file or folder from its share link")
    get.add_argument(
        "link",
        nargs="?",
        help="a sealbox:?... share link, or - to read it from stdin (safer: other local users see argv)",
    )
    get.add_argument("--link-file", metavar="FILE", help="read the link from FILE, out of the process list")
    get.add_argument(
        "-o", "--output", help="destination path (default: ./NAME; into DEST/NAME if DEST is a folder)"
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
    get.set_defaults(func=cmd_get)

    ls = sub.add_parser("ls", parents=[common], help="list what this repo holds")
    ls.set_defaults(func=cmd_ls)

    rm = sub.add_parser("rm", parents=[common], help="unpin roots (their blocks go at the next gc)")
    rm.add_argument("targets", nargs="*", metavar="LINK|ROOT", help="- reads them from stdin")
    rm.add_argument(
        "--link-file",
        action="append",
        metavar="FILE",
        help="read links or roots from FILE, out of the process list (repeatable)",
    )
    rm.set_defaults(func=cmd_rm)

    gc = sub.add_parser("gc", parents=[common], help="remove blocks no pinned root needs")
    gc.set_defaults(func=cmd_gc)

    repo = sub.add_parser("repo", parents=[common], help="check or repair the block index and the pins")
    repo.add_argument("action", choices=["check", "repair"], help="check: report; repair: rebuild what fails")
    repo.add_argument("--deep", action="store_true", help="check: also read and hash every stored block")
    repo.set_defaults(func=cmd_repo)

    daemon = sub.add_parser(
        "daemon", parents=[common], help="run the node: serve and announce pinned roots, answer the CLI"
    )
    daemon.add_argument(
        "--listen", action="append", metavar="MULTIADDR", help="listen address (repeatable; overrides config)"
    )
    daemon.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="peer to join the DHT through, .../p2p/<id> (repeatable; overrides config)",
    )
    daemon.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: info"
    )
    daemon.set_defaults(func=cmd_daemon)

    status = sub.add_parser("status", parents=[common], help="show the running daemon's state")
    status.set_defaults(func=cmd_status)
    peers = sub.add_parser("peers", parents=[common], help="list the peers the daemon is connected to")
    peers.set_defaults(func=cmd_peers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        scrub_process_title()  # links and names out of ps, as early as can be
    args = build_parser().parse_args(argv)
    keep_freed_buffers()
    try:
        args.func(args)
    except (NodeError, ProtocolError) as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        return _fail(args, "interrupted: nothing partial was kept", EXIT_INTERRUPTED)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(args, f"{exc.strerror or exc}{where}")
    except sqlite3.Error as exc:  # the block store turns these into RepoDamagedError: a last resort
        return _fail(args, f"the block index is damaged ({exc}): run 'sealbox repo check'")
    return 0


def _fail(args: argparse.Namespace, message: str, code: int = EXIT_ERROR) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    print(f"sealbox: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
