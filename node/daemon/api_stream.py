"""A long request's connection, as its route sees it (served by ``node/daemon/api.py``).

A :class:`Streaming` route gets a :class:`Channel`: it emits its events there (sent as NDJSON lines when
the client asked for them) and binds its cancel to it, called once the client has gone away (end of
file, a failed or stalled write). ``node/daemon/api.py``'s docstring gives the answer's format.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11
import trio

WRITE_TIMEOUT = 10.0  # seconds for one write of an answer or an event
RECEIVE_SIZE = 16 * 1024

NDJSON = "application/x-ndjson"

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Channel:
    """A request's connection as a long route sees it: :meth:`emit` sends an event (when the client
    asked for a stream), :meth:`bind` registers what to call once the client has gone away."""

    def __init__(self, conn: h11.Connection, stream: trio.SocketStream, streaming: bool) -> None:
        self.conn = conn
        self.stream = stream
        self.streaming = streaming
        self.sent_head = False
        self.gone = False
        self._bound: list[Callable[[], None]] = []
        self._sending = trio.Lock()

    def bind(self, on_gone: Callable[[], None]) -> None:
        """Call ``on_gone`` when the client goes away (at once if it has already)."""
        if self.gone:
            on_gone()
        else:
            self._bound.append(on_gone)

    def _lost(self) -> None:
        if not self.gone:
            self.gone = True
            for on_gone in self._bound:
                on_gone()

    async def watch(self) -> None:
        """Read the socket until the client closes it (it sends nothing more after its request)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            while await self.stream.receive_some(RECEIVE_SIZE):
                pass
        self._lost()

    async def emit(self, event: dict[str, Any]) -> None:
        """Send one event line (nothing when the client wants one plain answer, or has gone). The write
        is shielded, so that a cancelled emitter never leaves half a chunk on the wire, and bounded."""
        if not self.streaming or self.gone:
            return
        line = json.dumps(event, ensure_ascii=True).encode("ascii") + b"\n"
        async with self._sending:
            with trio.CancelScope(shield=True), trio.move_on_after(WRITE_TIMEOUT) as late:
                try:
                    if not self.sent_head:
                        self.sent_head = True
                        head = [("content-type", NDJSON), ("connection", "close")]
                        await self.stream.send_all(
                            self.conn.send(h11.Response(status_code=200, headers=head))
                        )
                    await self.stream.send_all(self.conn.send(h11.Data(data=line)))
                except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                    self._lost()
            if late.cancelled_caught:
                self._lost()

    async def finish(self, status: int, payload: Any) -> None:
        """The last line of a stream: the answer, or its error."""
        if status == 200:
            event = {"event": "done"} | (payload if isinstance(payload, dict) else {"result": payload})
        else:
            event = {"event": "error", "error": payload.get("error", "failed"), "status": status}
        await self.emit(event)
        if not self.gone:
            with trio.move_on_after(WRITE_TIMEOUT):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                    await self.stream.send_all(self.conn.send(h11.EndOfMessage()))


@dataclass(frozen=True)
class Streaming:
    """A long route: ``handler(args, channel)``, bound to its connection (see the module docstring)."""

    handler: Callable[[dict[str, Any], Channel], Awaitable[Any]]
