"""The ``sealbox`` commands, one ``cmd_*`` per subcommand (node/cli/main.py parses the arguments)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from node.cli.output import PROGRESS_INTERVAL, Output, fetch_bar, human, progress_bar, shows_progress
from node.cli.secrets import STDIN, SecretInputError, read_link, read_name, read_targets
from node.daemon.api_client import ApiClient, NoDaemon
from node.daemon.config_file import storage_limit
from node.daemon.errors import DaemonError
from node.daemon.views import add_json, pin_json
from node.errors import NodeError
from node.files.add import add_path, scan_size
from node.files.get import GetResult, get_link
from node.store.errors import NotFoundError, RepoDamagedError
from node.store.repo import Repo, default_repo_path
from protocol.cid import cid_from_text, cid_to_text
from protocol.errors import LinkError
from protocol.link import SCHEME, ShareLink, parse_link


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
    from node.daemon import logs
    from node.daemon import main as daemon  # imports trio and libp2p: only for the daemon

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
    from node.store import repocheck, reporepair

    repo = _open_repo(args, create=False)
    report = reporepair.repair(repo) if args.action == "repair" else repocheck.check(repo, deep=args.deep)
    lines = [*(f"fixed: {d}" for d in report.done), *(f"note: {n}" for n in report.notes)]
    lines += [f"problem: {p}" for p in report.problems]
    data = {"fixed": report.done, "notes": report.notes, "problems": report.problems}
    Output(args).emit(data, "\n".join(lines) or "the repo passes every check")
    if report.problems:
        hint = "" if args.action == "repair" else ": 'sealbox repo repair' mends what can be mended"
        raise RepoDamagedError(f"{len(report.problems)} problem(s) left in the repo{hint}")
