"""The yamux muxer (``libp2p.stream_muxer.yamux.yamux``): what a peer can make a connection hold, and
its speed; see docs/py-libp2p.md, "Yamux"."""

from __future__ import annotations

import logging
import os
from typing import Any

from libp2p.stream_muxer.yamux import yamux as _yamux_module
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

log = logging.getLogger(__name__)

# The largest yamux frame this node sends, header included (the library's: 64 KiB). A whole block message
# (256 KiB and its envelope) fits in one frame; rust-yamux refuses frame bodies over 1 MiB.
YAMUX_MAX_FRAME = 512 * 1024
YAMUX_LOGGER = "libp2p.stream_muxer.yamux.yamux"

_library_reset = YamuxStream.reset
_library_yamux_init = Yamux.__init__


def drop_what_a_reset_stream_holds() -> None:
    """A stream this side resets lets go of what the peer sent on it at once.

    Defect: ``YamuxStream.reset`` marks the stream closed, but while its receive buffer holds unread data
    the connection keeps the stream and the buffer for 60 s (``_STALE_STREAM_GRACE_SECONDS``), and frames
    that arrive meanwhile are still added to it. Measured: 300 refused 1 MB PUT_VALUEs on one connection
    (requests ``node/net/dht_guard.py`` refuses by resetting their stream) held 288 MB.

    Patch: ``reset`` is :func:`_reset_and_drop`: the library's reset, then the buffer is emptied and the
    stream's entry dropped; later frames for it are ignored, as for any stream the connection no longer
    knows. Safe: nobody can read a stream this side has reset. A stream the *peer* resets is left as it
    was (its reader may still read what arrived before the reset)."""
    stream_class: Any = YamuxStream
    stream_class.reset = _reset_and_drop


async def _reset_and_drop(self: YamuxStream) -> None:
    """``YamuxStream.reset``, then drop what is buffered for the stream and its entry."""
    await _library_reset(self)
    conn = self.conn
    async with conn.streams_lock:
        buffer = conn.stream_buffers.get(self.stream_id)
        if buffer:
            buffer.clear()
        conn._finalize_stream_locked(self, fully_closed=True)


def enforce_the_receive_window() -> None:
    """A DATA frame over the receive window this side granted resets its stream instead of being kept.

    Defect: such a frame is logged ("peer exceeded receive window") and buffered anyway, so a peer that
    ignores the window can make the buffer of any stream nobody reads grow without bound (measured: 4 MiB
    sent on a 256 KiB window, all of it buffered).

    Patch: each connection's ``stream_buffers`` is a :class:`_StreamBuffers`, whose buffers are
    :class:`_StreamBuffer`: a frame over the stream's ``recv_window`` (checked before the library subtracts
    the frame from it, so exactly where the library would log its warning) is dropped, the stream is marked
    reset and its buffer emptied; the stream's reader gets a reset. The library's per-frame warning is
    dropped too (a flood must not flood the log). Safe: no window-respecting sender sees a difference (no
    such warning in the exchange and netget tests)."""
    yamux_class: Any = Yamux
    yamux_class.__init__ = _yamux_init
    logging.getLogger(YAMUX_LOGGER).addFilter(_DropWindowWarning())


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


def _yamux_init(self: Yamux, *args: Any, **kwargs: Any) -> None:
    _library_yamux_init(self, *args, **kwargs)
    self.stream_buffers = _StreamBuffers(self)


def send_large_frames() -> None:
    """Send yamux frames of up to ``YAMUX_MAX_FRAME`` (512 KiB) instead of 64 KiB.

    Defect: py-libp2p spends its time per message, not per byte; with 64 KiB frames a 256 KiB block
    message is four frames, four Noise batches and four socket writes. Measured (with the Noise session of
    ``node/net/noise_session.py`` and :func:`return_credit_at_half_window`): a stream between two processes
    went from ~80 to ~250-430 MB/s on loopback (``scripts/bench_stream.py``).

    Patch: the module's ``MAX_MESSAGE_SIZE``, which the library reads at each write. Safe: a yamux receiver
    takes any frame its window allows (the library's, go's); rust-yamux takes frame bodies up to 1 MiB."""
    setattr(_yamux_module, "MAX_MESSAGE_SIZE", YAMUX_MAX_FRAME)  # noqa: B010 - a library module's constant


def return_credit_at_half_window() -> None:
    """A stream's reader returns credit in one window update once half its window is read.

    Defect: by default (``PY_YAMUX_RELEASE_ON_READ=1``) a reader sends a window update after every read:
    one more frame each way per read, part of the per-message cost :func:`send_large_frames` describes.

    Patch: ``PY_YAMUX_RELEASE_ON_READ=0``, the library's documented tuning variable, read at call time; a
    user's own setting wins. Safe: the sender still gets all its credit back, in fewer, larger updates."""
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
