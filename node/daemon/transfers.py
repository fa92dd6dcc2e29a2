"""The control API's transfer endpoints: add, fetch, and what runs now (served by ``node/daemon/api.py``).

- ``POST /v1/add {path, entry_name?, name?, with_size?, peer_hints?}`` or ``{paths, as_folder, ...}``
  (one folder of them all) -> what ``add --json`` prints, plus ``warnings`` and ``id``. Streaming (see
  below).
- ``POST /v1/fetch {link, seed?, detach?}`` -> ``{id, root, providers, rounds, blocks, bytes, pinned}``;
  with ``seed: false`` the root is neither announced nor pinned (``get --no-seed``). Streaming; with
  ``detach: true`` it answers ``{id, root, detached: true}`` at once and the fetch goes on in the daemon,
  bound to no connection (``get --detach``).
- ``GET /v1/transfers`` -> ``{transfers: [{id, kind, state, name, root, phase, done, held, resumed,
  total, size, peers, providers_known, speed, eta, elapsed, waited, started}], serving: {peers, blocks,
  bytes, speed}}``: the adds and fetches running now (bytes; speed in bytes/s; eta, elapsed in seconds; total
  None when unknown), and what the block server is sending.
- ``POST /v1/transfers/cancel {id}`` -> ``{id, kind, state, root, done, held, pinned}`` once the transfer
  has stopped (waiting at most ``CANCEL_WAIT`` s): ``state`` "cancelled", or "done" / "failed" when it
  had ended before. 400 for an id that is not 8 hex digits, 404 for an unknown one.
- ``GET /v1/fetching`` -> ``{fetches: [{root, bytes}]}``: the fetches running now (older clients).

An add or a fetch is bound to its request's connection: when the client goes away the transfer is
cancelled at once (a fetch keeps the blocks it stored, unpinned and not announced; an add pins nothing).
Asked with ``Accept: application/x-ndjson``, the answer is a stream of lines: ``{"event": "started",
"id", "kind", "root"}``, then ``{"event": "progress", ...one transfers entry...}`` (its ``phase``:
"starting", "looking" for providers, "fetching", "pinning", or for an add "adding"; then "done") about
``1 / PROGRESS_EVERY`` times a second, then ``{"event": "done", ...the answer above...}`` or ``{"event":
"error", "error": "one line", "status": N}`` (409 for a cancelled transfer). Nothing here logs a link,
a key, a path or a name.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.daemon.api import Routes
from node.daemon.api_stream import Channel, Streaming
from node.daemon.errors import ApiError
from node.daemon.transfer_state import Registry, Transfer, check_id
from node.daemon.tree_routes import fetch_options
from node.daemon.views import add_json
from node.errors import NodeError
from node.files.add import MAX_ADD_PATHS, add_path
from node.files.inputs import Folder, scan_size
from node.net import netget
from node.net.exchange import FetchStats
from protocol.cid import cid_to_text
from protocol.errors import ProtocolError
from protocol.link import ShareLink, parse_link

if TYPE_CHECKING:
    from node.daemon.control import Control

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.25  # seconds between two progress events
CANCEL_WAIT = 10.0  # seconds a cancel waits for its transfer to stop


class Transfers:
    """The transfer endpoints of a running node (``control`` holds the repo, host, DHT and config)."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.registry = Registry(control.server)
        control.nursery.start_soon(self.registry.sample_forever)

    def routes(self) -> Routes:
        return {
            ("POST", "/v1/add"): Streaming(self.add),
            ("POST", "/v1/fetch"): Streaming(self.fetch),
            ("GET", "/v1/transfers"): self.transfers,
            ("POST", "/v1/transfers/cancel"): self.cancel,
            ("GET", "/v1/fetching"): self.fetches,
        }

    async def add(self, args: dict[str, Any], channel: Channel) -> dict[str, Any]:
        as_folder = _text(args, "as_folder", optional=True)
        paths = _add_paths(args, several=as_folder is not None)
        path: Path | Folder = paths[0] if as_folder is None else Folder(as_folder, tuple(paths))
        entry_name = _text(args, "entry_name", optional=True)
        name = _text(args, "name", optional=True)
        with_size = _flag(args, "with_size")
        control = self.control
        hints = control.peer_hints() if _flag(args, "peer_hints") else ()
        await control.check_room()
        transfer = self.registry.new("add", name=name or entry_name or path.name)
        warnings: list[str] = []

        def work() -> Any:  # in a worker thread: its progress callback stops it once cancelled
            transfer.check()
            transfer.progress.total = transfer.progress.size = _size(path)
            transfer.progress.enter("adding")

            def advance(n: int) -> None:
                transfer.check()
                transfer.progress.add(n)

            added = add_path(
                control.repo,
                path,
                entry_name=entry_name,
                display_name=name,
                with_size=with_size,
                progress=advance,
                warn=warnings.append,
            )
            transfer.root, transfer.pinned = added.pin.root, True  # before a cancel can read the outcome
            return added

        result = await self._bound(transfer, channel, partial(trio.to_thread.run_sync, work))
        link = dataclasses.replace(result.link, peers=hints) if hints else result.link
        log.info("added root %s (%d new blocks)", cid_to_text(result.pin.root), result.new_blocks)
        if control.config.seed:
            control.nursery.start_soon(control.announce, result.pin.root)
        return add_json(result, str(link)) | {"warnings": warnings, "id": transfer.id}

    async def fetch(self, args: dict[str, Any], channel: Channel) -> dict[str, Any]:
        link = parse_link(_text(args, "link"))
        wanted = _flag(args, "seed", default=True)
        detach = _flag(args, "detach")
        options = fetch_options(args)  # keep_key, path: node/daemon/tree_routes.py
        await self.control.check_room()
        transfer = self.registry.new("fetch", name=link.name, root=link.root)
        work = partial(self._fetch, transfer, link, wanted, options)
        if detach:
            self.control.nursery.start_soon(self._detached, transfer, work)
            return {"id": transfer.id, "root": cid_to_text(link.root), "detached": True}
        answer: dict[str, Any] = await self._bound(transfer, channel, work)
        return answer

    async def _bound(self, transfer: Transfer, channel: Channel, work: Any) -> Any:
        """Run ``transfer``'s work, cancelled when the client goes away, with progress events."""
        channel.bind(transfer.cancel)
        root = None if transfer.root is None else cid_to_text(transfer.root)
        await channel.emit({"event": "started", "id": transfer.id, "kind": transfer.kind, "root": root})
        result: Any = None
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_report, transfer, channel)
            try:
                result = await self.registry.run(transfer, work)
            except Exception as exc:  # noqa: BLE001  (raised below, once the nursery has closed: no group)
                failure = exc
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        await channel.emit({"event": "progress"} | transfer.snapshot())  # the last, complete one
        return result

    async def _detached(self, transfer: Transfer, work: Any) -> None:
        try:
            await self.registry.run(transfer, work)
        except (NodeError, ProtocolError, OSError) as exc:
            log.info("transfer %s (a detached fetch) ended: %s", transfer.id, exc)
        except Exception:  # the daemon goes on; logged in full
            log.exception("transfer %s (a detached fetch) failed", transfer.id)

    async def _fetch(
        self, transfer: Transfer, link: ShareLink, wanted: bool, options: dict[str, Any]
    ) -> dict[str, Any]:
        control = self.control
        seed = control.config.seed and wanted
        try:
            report = await netget.fetch_link(
                control.host,
                control.dht,
                control.repo,
                link,
                announce=seed,
                pin=wanted,
                progress=transfer.progress,
                **options,
            )
        except BaseException:
            transfer.pinned = await self._forget(link.root)
            raise
        transfer.pinned = report.pinned
        if seed and report.pinned:
            control.nursery.start_soon(control.announce, link.root)  # fetch_link announced it at the start
        stats = report.stats or FetchStats()  # none when every block was held already
        log.info(
            "fetched root %s from %d provider(s): %d blocks, %d not-found answers, %d haves",
            cid_to_text(link.root),
            report.providers,
            stats.blocks,
            stats.not_found,
            stats.haves,
        )
        return {
            "id": transfer.id,
            "root": cid_to_text(report.root),
            "providers": report.providers,
            "rounds": report.rounds,
            "blocks": stats.blocks,
            "bytes": stats.bytes,
            "pinned": report.pinned,
        }

    async def _forget(self, root: bytes) -> bool:
        """A fetch that did not end: the root is not one this node announces, unless it is pinned
        (whether it is comes back)."""
        with trio.CancelScope(shield=True):
            pins = await trio.to_thread.run_sync(self.control.repo.pins)
        pinned = root in {p.root for p in pins}
        if not pinned:
            self.control.state.announced.discard(root)
        return pinned

    async def transfers(self, _args: dict[str, Any]) -> dict[str, Any]:
        return self.registry.listing()

    async def cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        transfer = self.registry.find(check_id(args.get("id")))
        transfer.cancel()
        with trio.move_on_after(CANCEL_WAIT):
            await transfer.finished.wait()
        log.info("transfer %s: cancel asked, %s", transfer.id, transfer.state)
        return transfer.outcome()

    async def fetches(self, _args: dict[str, Any]) -> dict[str, Any]:
        """The fetches running now: each root and the bytes stored for it so far."""
        done: dict[str, int] = {}
        for t in self.registry.running.values():
            if t.kind == "fetch" and t.root is not None:
                root = cid_to_text(t.root)
                done[root] = done.get(root, 0) + t.progress.done
        return {"fetches": [{"root": root, "bytes": n} for root, n in done.items()]}


async def _report(transfer: Transfer, channel: Channel) -> None:
    """Progress events while the transfer runs (a refresh rate, not a wait for an event)."""
    while True:
        await channel.emit({"event": "progress"} | transfer.snapshot())
        await trio.sleep(PROGRESS_EVERY)


def _add_paths(args: dict[str, Any], *, several: bool) -> list[Path]:
    """An add's ``path``, or with ``as_folder`` its ``paths`` (1 to MAX_ADD_PATHS), each absolute."""
    paths = args.get("paths") if several else [_text(args, "path")]
    if not isinstance(paths, list) or not 0 < len(paths) <= MAX_ADD_PATHS:
        raise ApiError(f"paths must be a list of 1 to {MAX_ADD_PATHS} paths")
    if not all(isinstance(p, str) and Path(p).is_absolute() for p in paths):
        raise ApiError("path must be absolute (the daemon does not share the client's directory)")
    return [Path(p) for p in paths]


def _size(path: Path | Folder) -> int | None:
    """The bytes an add will read (its bar's total); None where add_path will say what is wrong."""
    try:
        return scan_size(path) if isinstance(path, Folder) or path.exists() else None
    except (OSError, ValueError):  # ValueError: a path that is not UTF-8 (add_path refuses it)
        return None


def _text(args: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    value = args.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(f"{name} must be a non-empty string")
    return value


def _flag(args: dict[str, Any], name: str, *, default: bool = False) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(f"{name} must be true or false")
    return value
