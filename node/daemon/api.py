"""The local control API: HTTP/1.1 over the Unix socket ``REPO/api.sock``, parsed by h11, JSON bodies.

Only the user who owns the repo can reach it: the socket is 0600 inside the 0700 repo, and every request
must carry ``Authorization: Bearer <token>`` where the token is in ``REPO/api.token`` (0600, new at each
daemon start). One request per connection (the answer says ``Connection: close``). Headers are capped at
``MAX_HEADER_BYTES``, bodies at ``MAX_BODY``; bodies are decoded by :mod:`node.daemon.api_json` (nesting depth
capped before the decoder runs, repeated keys refused).

A connection goes through two phases, so that idle connections cannot starve the owner's requests:

1. **Waiting for its head.** A new connection has ``HEAD_TIMEOUT`` seconds (short: a client sends its
   head at once) to send a complete request head with the right token; it holds no request slot. At most
   ``MAX_WAITING`` connections wait at once: a new one beyond that closes the one that has waited longest
   (evicted without an answer), so a flood of idle connections delays a real client by nothing but the
   time to accept it. The kernel queues ``BACKLOG`` connections for accept, so a client's connect is not
   refused while hundreds of flood connections are re-opened. A wrong or missing token is answered 401
   at once.
2. **A request.** An authorised head takes one of ``MAX_REQUESTS`` slots (a 503 answers when all are
   taken: only the token's holder can fill them), then has ``READ_TIMEOUT`` seconds for its body. The
   handler itself has no deadline: a fetch runs as long as it needs.

The routes themselves are plain async functions of the decoded JSON body, listed in
``node/daemon/control.py``; they raise :class:`node.errors.NodeError` (or a protocol error) for a
refusal, which becomes ``{"error": "..."}`` with a status that fits.

**Long requests** (an add, a fetch: :class:`Streaming` routes) are bound to their connection: a
:class:`Channel` watches the socket while the route runs, and when the client goes away (end of file, a
failed or stalled write) it calls what the route bound to it (the transfer's cancel,
``node/daemon/transfers.py``). A client must therefore keep its side open while it waits. A client that
asks for ``Accept: application/x-ndjson`` gets the answer as a stream of JSON lines (chunked): the
route's events as it emits them (``{"event": "started", ...}``, ``{"event": "progress", ...}``), then one
last line, ``{"event": "done", ...the answer...}`` or ``{"event": "error", "error": "one line",
"status": N}``. A route that fails before its first event, or any request without that header, gets the
ordinary JSON answer with its status.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import socket
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import h11
import trio

from node.daemon.api_json import parse_object
from node.daemon.api_stream import NDJSON, RECEIVE_SIZE, WRITE_TIMEOUT, Channel, Handler, Streaming
from node.daemon.errors import ApiError, DaemonError
from node.errors import NodeError
from node.net.errors import NetworkError
from node.store.errors import NotFoundError, RepoFullError
from protocol.errors import ProtocolError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY = 64 * 1024
MAX_REQUESTS = 32  # authorised requests served at once
MAX_WAITING = 64  # connections that have not yet sent a request head; the oldest is evicted beyond
HEAD_TIMEOUT = 5.0  # seconds from accept to a complete request head
READ_TIMEOUT = 10.0  # seconds from the head to the end of the body
BACKLOG = 1024  # connections the kernel queues for accept (capped by net.core.somaxconn)

Routes = Mapping[tuple[str, str], Handler | Streaming]  # (method, path) -> handler


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _Refused(Exception):
    """A request answered with an error before it reached a route."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _refusal(exc: trio.TooSlowError | _Refused | h11.RemoteProtocolError) -> tuple[int, dict[str, Any]]:
    """The status and body that answer a request refused before its route ran: too slow, refused by
    a check, or not valid HTTP."""
    if isinstance(exc, trio.TooSlowError):
        return 408, {"error": "request timed out"}
    if isinstance(exc, _Refused):
        return exc.status, {"error": str(exc)}
    return exc.error_status_hint, {"error": "malformed HTTP request"}


async def serve(
    path: Path,
    token: str,
    routes: Routes,
    *,
    head_timeout: float = HEAD_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    max_body: int = MAX_BODY,
    max_waiting: int = MAX_WAITING,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``routes`` on the Unix socket ``path`` until cancelled; then remove the socket."""
    server = _Server(token, routes, head_timeout, read_timeout, max_body, max_waiting)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _remove(path)  # a crashed daemon's socket: the caller holds the daemon lock
        await sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise DaemonError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(trio.serve_listeners, server.handle, [listener], handler_nursery=nursery)
            )
            task_status.started()
            await trio.sleep_forever()
    finally:
        _remove(path)
        with trio.CancelScope(shield=True):
            await listener.aclose()
    raise AssertionError("unreachable")


class _Server:
    def __init__(
        self,
        token: str,
        routes: Routes,
        head_timeout: float,
        read_timeout: float,
        max_body: int,
        max_waiting: int,
    ) -> None:
        self.expected = f"Bearer {token}".encode("ascii")
        self.routes = routes
        self.head_timeout = head_timeout
        self.read_timeout = read_timeout
        self.max_body = max_body
        self.max_waiting = max_waiting
        self.waiting: dict[trio.CancelScope, None] = {}  # connections before their head, oldest first
        self.requests = trio.CapacityLimiter(MAX_REQUESTS)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
            request: h11.Request | None = None
            try:
                request = await self._wait_for_head(conn, stream)
                if request is None:
                    return  # evicted by newer connections, or closed before sending a request
                self._check_token(request)
            except (trio.TooSlowError, _Refused, h11.RemoteProtocolError) as exc:
                status, payload = _refusal(exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                return  # the client went away
            else:
                if self.requests.available_tokens == 0:
                    status = 503
                    payload = {"error": f"the daemon is busy ({MAX_REQUESTS} requests running): try again"}
                else:
                    async with self.requests:
                        await self._serve_request(conn, stream, request)
                    return
            await self._respond(conn, stream, status, payload, request)

    async def _wait_for_head(self, conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
        """The request head, within ``head_timeout``; ``None`` when evicted or closed before a request.
        Holds no request slot: while more than ``max_waiting`` connections wait, the oldest is evicted."""
        with trio.CancelScope() as evict:
            self.waiting[evict] = None
            while len(self.waiting) > self.max_waiting:
                oldest = next(iter(self.waiting))
                del self.waiting[oldest]
                oldest.cancel()
            try:
                with trio.fail_after(self.head_timeout):
                    event = await self._receive(conn, stream)
            finally:
                self.waiting.pop(evict, None)
            return event if isinstance(event, h11.Request) else None
        return None  # evicted

    async def _serve_request(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request
    ) -> None:
        try:
            with trio.fail_after(self.read_timeout):
                self._check_length(request)
                body = await self._read_body(conn, stream)
        except (trio.TooSlowError, _Refused, h11.RemoteProtocolError) as exc:
            status, payload = _refusal(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            return  # the client went away
        else:
            route = self.routes.get(_route_key(request))
            if isinstance(route, Streaming):
                await self._stream(conn, stream, request, body, route)
                return
            status, payload = await self._dispatch(request, body)
        await self._respond(conn, stream, status, payload, request)

    async def _stream(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        request: h11.Request,
        body: bytes,
        route: Streaming,
    ) -> None:
        """Run a long route while its channel watches the connection; end with its answer."""
        accept = dict(request.headers).get(b"accept", b"")
        channel = Channel(conn, stream, NDJSON.encode("ascii") in accept)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.watch)
            status, payload = await self._dispatch(request, body, channel)
            nursery.cancel_scope.cancel()
        if channel.sent_head:
            await channel.finish(status, payload)
        elif not channel.gone:
            await self._respond(conn, stream, status, payload, request)

    async def _receive(self, conn: h11.Connection, stream: trio.SocketStream) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await stream.receive_some(RECEIVE_SIZE))

    def _check_token(self, request: h11.Request) -> None:
        headers = dict(request.headers)
        if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            raise _Refused(401, "missing or wrong API token (see api.token in the repo)")

    def _check_length(self, request: h11.Request) -> None:
        length = dict(request.headers).get(b"content-length")
        if length is not None and int(length) > self.max_body:  # h11 checked it is a number
            raise _Refused(413, f"request body larger than {self.max_body} bytes")

    async def _read_body(self, conn: h11.Connection, stream: trio.SocketStream) -> bytes:
        body = bytearray()
        while True:
            event = await self._receive(conn, stream)
            if isinstance(event, h11.EndOfMessage):
                return bytes(body)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    raise _Refused(413, f"request body larger than {self.max_body} bytes")
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError

    async def _dispatch(
        self, request: h11.Request, body: bytes, channel: Channel | None = None
    ) -> tuple[int, Any]:
        method, path = _route_key(request)
        handler = self.routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in self.routes):
                return 405, {"error": f"{method} is not allowed on {path}"}
            return 404, {"error": f"no such endpoint: {path[:100]}"}
        try:
            args = parse_object(body)
        except ApiError as exc:
            return exc.status, {"error": str(exc)}
        try:
            if isinstance(handler, Streaming):
                assert channel is not None  # _serve_request gives a streaming route its channel
                return 200, await handler.handler(args, channel)
            return 200, await handler(args)
        except (NodeError, ProtocolError) as exc:
            return _status_of(exc), {"error": str(exc)}
        except Exception:  # one broken request must not stop the node; logged in full
            log.exception("control API: %s %s failed", method, path)
            return 500, {"error": "internal error: see the daemon's log"}

    async def _respond(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        payload: Any,
        request: h11.Request | None,
    ) -> None:
        """Send the answer. An answer to ``HEAD`` has the headers only: h11 refuses any body there (a
        body used to raise LocalProtocolError out of the handler and stop the daemon)."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        # ASCII with \u escapes: a lone surrogate (a non-UTF-8 file name in an error message) cannot be
        # encoded as UTF-8, and once raised UnicodeEncodeError here, outside any handler, and stopped the
        # daemon
        data = json.dumps(payload, ensure_ascii=True).encode("ascii")
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(data))),
            ("connection", "close"),
        ]
        if status == 401:
            headers.append(("www-authenticate", "Bearer"))
        with trio.move_on_after(WRITE_TIMEOUT):
            try:
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                if request is None or request.method != b"HEAD":
                    await stream.send_all(conn.send(h11.Data(data=data)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                pass


def _route_key(request: h11.Request) -> tuple[str, str]:
    """A request's (method, path), the query left out."""
    return request.method.decode("ascii", "replace"), request.target.decode("ascii", "replace").partition(
        "?"
    )[0]


def _status_of(exc: Exception) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, RepoFullError):
        return 507
    if isinstance(exc, NetworkError):
        return 502
    return 400
