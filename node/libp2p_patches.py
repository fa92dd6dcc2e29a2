"""Narrow patches to py-libp2p 0.8.1 defects that let a remote peer stop a node; applied by ``node.host``.

Each patch replaces one library function with a copy that differs only where the defect is, and
:func:`apply` refuses to run against any other library version: an upgrade must re-read the library
and re-check each patch (the regression tests in ``tests/test_inbound.py`` show whether it is still
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
refuse by resetting its stream (``node/dht_guard.py``) thus stayed in memory: 300 refused 1 MB
PUT_VALUEs on one connection held 288 MB. Nobody can read a stream this side has reset, so the patched
``reset`` drops the buffer and the stream's entry at once; later frames for it are then ignored (as
for any stream the connection no longer knows). A stream the *peer* resets is left as it was: its
reader may still read what arrived before the reset.

Not patched, for whoever owns the muxer next: py-libp2p's yamux does not enforce the receive window
it grants (a frame over the window is logged and buffered anyway), so a peer that ignores the window
can make any unread stream buffer grow without bound.
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
from libp2p.stream_muxer.yamux.yamux import YamuxStream

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


def apply() -> None:
    """Install the patches (once); refuse a py-libp2p other than the one they were checked against."""
    global _applied
    if _applied:
        return
    version = importlib.metadata.version("libp2p")
    if version != LIBP2P_VERSION:
        raise RuntimeError(
            f"node/libp2p_patches.py was checked against py-libp2p {LIBP2P_VERSION}, not {version}: "
            "re-check each patch against the new library before running"
        )
    swarm_class: Any = _swarm_module.Swarm
    swarm_class._do_handle_inbound_connection = _do_handle_inbound_connection
    stream_class: Any = YamuxStream
    stream_class.reset = _reset_and_drop
    _applied = True
