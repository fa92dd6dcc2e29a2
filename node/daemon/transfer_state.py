"""The daemon's transfers' state: each add and fetch it runs, what it has done so far, and how to stop it.

A :class:`Transfer` is one add or fetch, under a short random id ("3f9a01bc"), with its own trio
``CancelScope``: cancelling it (``POST /v1/transfers/cancel``, or the client of its request going away:
``node/daemon/api.py`` binds a request to its connection) stops its work at once. A cancelled fetch keeps
the blocks it stored (a later fetch resumes from them) but pins and announces nothing; a cancelled add
stops its worker thread at the next chunk read (its ``progress`` callback raises :class:`Stopped`) and
pins nothing, so gc frees what it wrote. :class:`Registry` lists the transfers running now (``GET
/v1/transfers``) and remembers how the last ``KEPT_ENDED`` ended, so that a client that cancelled one
learns truthfully whether it stopped or had finished already.

The speed is a moving average (``node/net/progress.py``'s ``Speed``), sampled twice a second by
:meth:`Registry.sample_forever` and whenever someone asks (a progress event, a listing); the ETA divides
what is left by it. What the block server is sending is one
"serving" row, from its counters. The routes that start and list transfers are in
``node/daemon/transfers.py``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from node.daemon.errors import ApiError
from node.daemon.views import iso_time
from node.net.exchange import BlockServer
from node.net.progress import FetchProgress, Speed, view
from protocol.cid import cid_to_text

T = TypeVar("T")

KEPT_ENDED = 64  # ended transfers remembered (for a cancel that comes after the end)
ID_HEX = 8  # hex digits of an id


class Stopped(Exception):
    """Raised in an add's worker thread by its progress callback once the transfer is cancelled."""


@dataclass(eq=False)
class Transfer:
    """One add or fetch the daemon runs. ``progress`` is written by the work (netget, or the add's
    thread) and read here; ``state`` is "running", then "done", "cancelled" or "failed"."""

    id: str
    kind: str  # "add" or "fetch"
    name: str | None = None
    root: bytes | None = None
    progress: FetchProgress = field(default_factory=FetchProgress)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stop: threading.Event = field(default_factory=threading.Event)  # seen by an add's worker thread
    finished: trio.Event = field(default_factory=trio.Event)
    started: float = field(default_factory=time.time)
    state: str = "running"
    pinned: bool = False
    speed: Speed = field(default_factory=Speed)

    def cancel(self) -> None:
        """Stop the work now (safe to call more than once, and after the end)."""
        self.stop.set()
        self.scope.cancel()

    def check(self) -> None:
        """In the add's worker thread: raise :class:`Stopped` once the transfer is cancelled."""
        if self.stop.is_set():
            raise Stopped

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /v1/transfers`` and the progress events say of it."""
        p = self.progress
        shown = view(p, self.speed)
        if self.name is None and p.walk is not None and p.walk.root is not None:
            self.name = p.walk.root.name
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "name": self.name,
            "root": None if self.root is None else cid_to_text(self.root),
            **shown,
            "started": iso_time(self.started),
        }

    def outcome(self) -> dict[str, Any]:
        """How it ended (or that it runs): what a cancel answers."""
        p = self.progress
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "root": None if self.root is None else cid_to_text(self.root),
            "done": p.done,
            "held": p.held,
            "pinned": self.pinned,
        }


def check_id(value: Any) -> str:
    """A transfer id from a request: 8 lowercase hex digits, or a 400 that says so."""
    if not isinstance(value, str) or len(value) != ID_HEX or any(c not in "0123456789abcdef" for c in value):
        raise ApiError(f"id must be a transfer id ({ID_HEX} hex digits, as 'sealbox transfers' lists them)")
    return value


class Registry:
    """The transfers running now, the last ones that ended, and the block server's "serving" row."""

    def __init__(self, server: BlockServer) -> None:
        self.server = server
        self.running: dict[str, Transfer] = {}
        self.ended: OrderedDict[str, Transfer] = OrderedDict()
        self.serving = Speed()

    async def sample_forever(self, every: float = 0.5) -> None:
        """Sample every speed twice a second, so that a listing asked once (``sealbox transfers``) shows
        a rate already (a refresh rate, not a wait for an event)."""
        while True:
            for transfer in list(self.running.values()):
                transfer.speed.sample(transfer.progress.done)
            self.serving.sample(self.server.served_bytes)
            await trio.sleep(every)

    def new(self, kind: str, *, name: str | None = None, root: bytes | None = None) -> Transfer:
        """A transfer, listed at once (before its work starts)."""
        while (tid := secrets.token_hex(ID_HEX // 2)) in self.running or tid in self.ended:
            pass
        transfer = Transfer(tid, kind, name, root)
        self.running[tid] = transfer
        return transfer

    async def run(self, transfer: Transfer, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` as ``transfer``, inside its cancel scope; a cancelled one raises a 409 ApiError
        ("cancelled"). The transfer is unlisted and remembered as ended either way."""
        try:
            with transfer.scope:
                try:
                    result = await work()
                except Stopped:
                    pass  # the add's thread saw the cancel
                else:
                    transfer.state = "done"
                    transfer.progress.enter("done")
                    return result
            transfer.state = "cancelled"
            raise ApiError(f"cancelled: transfer {transfer.id} was stopped", 409)
        except BaseException:
            if transfer.state == "running":
                transfer.state = "failed"
            raise
        finally:
            self._end(transfer)

    def _end(self, transfer: Transfer) -> None:
        self.running.pop(transfer.id, None)
        self.ended[transfer.id] = transfer
        while len(self.ended) > KEPT_ENDED:
            self.ended.popitem(last=False)
        transfer.finished.set()

    def find(self, tid: str) -> Transfer:
        transfer = self.running.get(tid) or self.ended.get(tid)
        if transfer is None:
            raise ApiError(f"no transfer {tid} (see 'sealbox transfers')", 404)
        return transfer

    def listing(self) -> dict[str, Any]:
        """``GET /v1/transfers``: the transfers running now, and what the block server is sending."""
        server = self.server
        return {
            "transfers": [t.snapshot() for t in list(self.running.values())],
            "serving": {
                "peers": len(server.rules.streams_of),
                "blocks": server.served_blocks,
                "bytes": server.served_bytes,
                "speed": round(self.serving.sample(server.served_bytes)),
            },
        }
