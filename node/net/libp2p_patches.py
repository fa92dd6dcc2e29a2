"""Narrow patches to py-libp2p 0.8.1 defects that let a remote peer stop a node; applied by ``node.net.host``.

Each patch replaces one library function with a copy that differs only where the defect is, and
:func:`apply` refuses to run against any other library version: an upgrade must re-read the library
and re-check each patch (the regression tests in ``tests/net/test_inbound.py`` show whether it is still
needed).

**Inbound slots held for the life of the swarm.** ``Swarm._handle_inbound_connection`` takes one of
``max_connections - min_connections`` slots (a ``trio.CapacityLimiter``) for each inbound connection and
gives it back when ``_do_handle_inbound_connection`` returns. That function must stay in its task while
the connection lives (``trio.serve_listeners`` closes the socket once its handler returns), and waits
with ``await self.manager.wait_finished()``: the end of the whole swarm, not of the connection. So every
inbound connection ever made keeps its slot, its task and what they reference; after 64 of them (our
``max_connections``) the node refuses every new peer until it restarts. One remote peer can do that in
seconds by connecting and disconnecting. The patched function waits for whichever comes first: the
connection's muxer closing (``event_closed``, set by yamux and mplex once the secured connection is
closed) or the swarm finishing; a muxer without ``event_closed`` keeps the library's behaviour.

**A reset yamux stream keeps what the peer sent.** ``YamuxStream.reset`` marks the stream closed, but
while its receive buffer holds unread data the connection keeps the stream and the buffer for 60 s
(``_STALE_STREAM_GRACE_SECONDS``), and frames that arrive meanwhile are still added to it. A request we
refuse by resetting its stream (``node/net/dht_guard.py``) thus stayed in memory: 300 refused 1 MB
PUT_VALUEs on one connection held 288 MB. Nobody can read a stream this side has reset, so the patched
``reset`` drops the buffer and the stream's entry at once; later frames for it are then ignored (as
for any stream the connection no longer knows). A stream the *peer* resets is left as it was: its
reader may still read what arrived before the reset.

**Yamux's receive window is not enforced.** A DATA frame over the window this side granted is
logged ("peer exceeded receive window") and buffered anyway, so a peer that ignores the window could
make the buffer of any stream nobody reads grow without bound. Each connection's buffers are made
:class:`_StreamBuffer` objects: a frame over the stream's window (its ``recv_window``, checked before the
library subtracts the frame from it, so exactly where the library would log the warning) is dropped
and the stream is marked reset, its buffer emptied; the stream's reader gets a reset. No
window-respecting sender sees a difference (no such warning in the exchange and netget tests). The
library's warning, once per frame, is dropped (a flood must not flood the log).
"""

from __future__ import annotations

import importlib.metadata
import logging
from contextlib import suppress
from typing import TYPE_CHECKING, Any, cast

import trio
from libp2p.abc import IMuxedConn
from libp2p.network import swarm as _swarm_module
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

if TYPE_CHECKING:
    from libp2p.io.abc import ReadWriteCloser
    from libp2p.metrics.swarm import SwarmEvent
    from libp2p.network.swarm import Swarm
    from multiaddr import Multiaddr

LIBP2P_VERSION = "0.8.1"

log = logging.getLogger(__name__)
_applied = False


async def _until_closed(swarm: Swarm, muxed_conn: IMuxedConn) -> None:
    """Return once ``muxed_conn`` has closed or the swarm has finished, whichever is first."""
    closed = getattr(muxed_conn, "event_closed", None)
    if not isinstance(closed, trio.Event):
        await swarm.manager.wait_finished()  # the library's behaviour, for a muxer we cannot watch
        return
    async with trio.open_nursery() as nursery:

        async def swarm_finished() -> None:
            await swarm.manager.wait_finished()
            nursery.cancel_scope.cancel()

        nursery.start_soon(swarm_finished)
        await closed.wait()
        nursery.cancel_scope.cancel()


async def _do_handle_inbound_connection(
    self: Swarm, read_write_closer: ReadWriteCloser, maddr: Multiaddr, failure_event: SwarmEvent
) -> None:
    """``Swarm._do_handle_inbound_connection`` of py-libp2p 0.8.1, waiting for the connection's end
    (:func:`_until_closed`) instead of the swarm's at its two barriers; otherwise the same steps."""

    async def report_failure() -> None:
        failure_event.conn_incoming_error = True
        if self.metric_send_channel is not None:
            await self.metric_send_channel.send(failure_event)

    remote_maddr = self._build_remote_multiaddr(read_write_closer)
    if remote_maddr is not None and not await self.connection_gate.is_allowed(remote_maddr):
        with suppress(Exception):  # the library's own clean-up, kept as it is
            await read_write_closer.close()
            await report_failure()
        return

    if isinstance(read_write_closer, IMuxedConn):  # QUIC and the like: already multiplexed
        muxed_conn = cast(IMuxedConn, read_write_closer)
        try:
            await self.add_conn(muxed_conn, direction="inbound")
            await _until_closed(self, muxed_conn)
        except Exception:  # noqa: BLE001 - as the library: any failure closes the connection
            await read_write_closer.close()
            await report_failure()
        return

    raw_conn: RawConnection | None = None
    try:
        raw_conn = RawConnection(read_write_closer, False)
        muxed = await self.upgrade_inbound_raw_conn(raw_conn, maddr)
        await _until_closed(self, muxed)
    except Exception as exc:  # noqa: BLE001 - as the library: any failure closes the connection
        log.debug("inbound connection failed: %s", exc)
        with suppress(Exception):  # the library's own clean-up, kept as it is
            if raw_conn is not None:
                await raw_conn.close()
            else:
                await read_write_closer.close()
                await report_failure()


_library_reset = YamuxStream.reset


async def _reset_and_drop(self: YamuxStream) -> None:
    """``YamuxStream.reset``, then drop what is buffered for the stream and its entry (see above)."""
    await _library_reset(self)
    conn = self.conn
    async with conn.streams_lock:
        buffer = conn.stream_buffers.get(self.stream_id)
        if buffer:
            buffer.clear()
        conn._finalize_stream_locked(self, fully_closed=True)


class _StreamBuffer(bytearray):
    """A yamux stream's receive buffer that refuses data beyond the stream's receive window."""

    def __init__(self, conn: Yamux, stream_id: int, data: bytes = b"") -> None:
        super().__init__(data)
        self._conn = conn
        self._stream_id = stream_id

    def extend(self, data: Any) -> None:
        stream = self._conn.streams.get(self._stream_id)
        if stream is None or len(data) <= stream.recv_window:
            super().extend(data)
            return
        if not stream.reset_received:
            log.debug("yamux: a peer sent %d bytes over a stream's receive window; stream reset", len(data))
        stream.closed = stream.recv_closed = stream.send_closed = True
        stream.reset_received = True
        self.clear()


class _StreamBuffers(dict[int, bytearray]):
    """``Yamux.stream_buffers``: every buffer the library puts in is a :class:`_StreamBuffer`."""

    def __init__(self, conn: Yamux) -> None:
        super().__init__()
        self._conn = conn

    def __setitem__(self, stream_id: int, buffer: bytearray) -> None:
        if not isinstance(buffer, _StreamBuffer):
            buffer = _StreamBuffer(self._conn, stream_id, bytes(buffer))
        super().__setitem__(stream_id, buffer)


class _DropWindowWarning(logging.Filter):
    """Drop yamux's per-frame "peer exceeded receive window" warning: :class:`_StreamBuffer` acts on it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "peer exceeded receive window" not in str(record.msg)


_library_yamux_init = Yamux.__init__


def _yamux_init(self: Yamux, *args: Any, **kwargs: Any) -> None:
    _library_yamux_init(self, *args, **kwargs)
    self.stream_buffers = _StreamBuffers(self)


def apply() -> None:
    """Install the patches (once); refuse a py-libp2p other than the one they were checked against."""
    global _applied
    if _applied:
        return
    version = importlib.metadata.version("libp2p")
    if version != LIBP2P_VERSION:
        raise RuntimeError(
            f"node/net/libp2p_patches.py was checked against py-libp2p {LIBP2P_VERSION}, not {version}: "
            "re-check each patch against the new library before running"
        )
    swarm_class: Any = _swarm_module.Swarm
    swarm_class._do_handle_inbound_connection = _do_handle_inbound_connection
    stream_class: Any = YamuxStream
    stream_class.reset = _reset_and_drop
    yamux_class: Any = Yamux
    yamux_class.__init__ = _yamux_init
    logging.getLogger("libp2p.stream_muxer.yamux.yamux").addFilter(_DropWindowWarning())
    _applied = True
