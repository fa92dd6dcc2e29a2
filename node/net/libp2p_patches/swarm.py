"""The swarm's inbound connections (``libp2p.network.swarm``); see docs/py-libp2p.md, "Inbound slots"."""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import TYPE_CHECKING, Any, cast

import trio
from libp2p.abc import IMuxedConn
from libp2p.network import swarm as _swarm_module
from libp2p.network.connection.raw_connection import RawConnection

if TYPE_CHECKING:
    from libp2p.io.abc import ReadWriteCloser
    from libp2p.metrics.swarm import SwarmEvent
    from libp2p.network.swarm import Swarm
    from multiaddr import Multiaddr

log = logging.getLogger(__name__)


def free_inbound_slot_on_close() -> None:
    """Give an inbound connection's slot back when the connection closes, not when the swarm stops.

    Defect: ``Swarm._handle_inbound_connection`` takes one of ``max_connections - min_connections``
    slots (a ``trio.CapacityLimiter``) per inbound connection and frees it when
    ``_do_handle_inbound_connection`` returns; that function must stay in its task while the connection
    lives (``trio.serve_listeners`` closes the socket once its handler returns), and waits with
    ``await self.manager.wait_finished()``: the end of the whole swarm. Measured: after 64 inbound
    connections in its life (our ``max_connections``) a node refused every new peer until it restarted;
    one remote peer can do that in seconds by connecting and disconnecting.

    Patch: :func:`_do_handle_inbound_connection`, the library's steps with each wait replaced by
    :func:`_until_closed`. Safe: the connection's task still lives exactly as long as the connection (the
    muxer's ``event_closed``, set by yamux and mplex once the secured connection is closed) and no longer
    than the swarm; a muxer without ``event_closed`` keeps the library's behaviour."""
    swarm_class: Any = _swarm_module.Swarm
    swarm_class._do_handle_inbound_connection = _do_handle_inbound_connection


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
