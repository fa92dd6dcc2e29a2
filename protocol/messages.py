"""Block-exchange wire messages (``/sealbox/blocks/1.0.0``) and their length-prefixed framing.

A frame is ``uvarint(length) || body`` where ``body`` is a msgpack array whose first element is the
message type. The length is capped *before* the body is read or buffered. See specs/block-exchange.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import msgpack

from protocol.cid import CID_LEN, check_cid
from protocol.errors import CidError, ProtocolError
from protocol.manifest import MAX_BLOCK
from protocol.strict_msgpack import Limits, unpack_exact

PROTOCOL_ID = "/sealbox/blocks/1.0.0"
MAX_FRAME = MAX_BLOCK + 64  # a BLOCK message: the block plus a few bytes of msgpack around it
MAX_VARINT_LEN = 4  # enough for MAX_FRAME; a longer prefix is refused
MAX_REQUEST_ID = (1 << 32) - 1

WANT, BLOCK, NOT_FOUND, CANCEL, HAVE = 1, 2, 3, 4, 5


class MessageError(ProtocolError):
    """A peer sent a frame or message that breaks the block-exchange protocol."""

    category = "bad-message"


@dataclass(frozen=True, slots=True)
class Want:
    """Ask for one block. ``request`` is chosen by the asker, unique among its open requests."""

    request: int
    cid: bytes


@dataclass(frozen=True, slots=True)
class BlockMessage:
    """The block asked for by ``request``. The asker verifies it against the CID it asked for."""

    request: int
    data: bytes


@dataclass(frozen=True, slots=True)
class NotFound:
    """The answerer does not hold the block asked for by ``request`` (so the asker fails fast)."""

    request: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """The asker no longer wants ``request`` (it came from another peer). No reply is due."""

    request: int


@dataclass(frozen=True, slots=True)
class Have:
    """The answerer, which said NOT_FOUND to ``request``, holds that block now (it fetched it since):
    the asker may WANT it again. Lets simultaneous downloaders of one file serve one another."""

    request: int


Message = Want | BlockMessage | NotFound | Cancel | Have


def encode_message(message: Message) -> bytes:
    """A whole frame: length prefix and body."""
    if isinstance(message, Want):
        fields: list[object] = [WANT, message.request, check_cid(message.cid)]
    elif isinstance(message, BlockMessage):
        if len(message.data) > MAX_BLOCK:
            raise MessageError("block too large to send")
        fields = [BLOCK, message.request, message.data]
    elif isinstance(message, NotFound):
        fields = [NOT_FOUND, message.request]
    elif isinstance(message, Have):
        fields = [HAVE, message.request]
    else:
        fields = [CANCEL, message.request]
    body: bytes = msgpack.packb(fields, use_bin_type=True)
    return uvarint(len(body)) + body


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# a message is one flat array: no str, no map (so no key to repeat), no nesting
_LIMITS = Limits(max_str_len=0, max_bin_len=MAX_BLOCK, max_array_len=3, max_map_len=0, max_depth=1)


def decode_body(body: bytes | memoryview) -> Message:
    """Decode one message body; anything malformed raises :class:`MessageError`."""
    fields = unpack_exact(body, _LIMITS, MessageError, "message")
    if not isinstance(fields, list) or not fields or type(fields[0]) is not int:
        raise MessageError("message has no type")
    kind = fields[0]
    shape = {WANT: 3, BLOCK: 3, NOT_FOUND: 2, CANCEL: 2, HAVE: 2}.get(kind)
    if shape is None:
        raise MessageError(f"unknown message type {kind}")
    if len(fields) != shape:
        raise MessageError("message has the wrong number of fields")
    request = fields[1]
    if type(request) is not int or not 0 <= request <= MAX_REQUEST_ID:
        raise MessageError("message has a bad request id")
    if kind == WANT:
        cid = fields[2]
        if not isinstance(cid, bytes) or len(cid) != CID_LEN:
            raise MessageError("want holds a malformed block id")
        try:
            return Want(request, check_cid(cid))
        except CidError as exc:
            raise MessageError("want holds a malformed block id") from exc
    if kind == BLOCK:
        if not isinstance(fields[2], bytes):
            raise MessageError("block message holds no bytes")
        return BlockMessage(request, fields[2])
    if kind == HAVE:
        return Have(request)
    return NotFound(request) if kind == NOT_FOUND else Cancel(request)


class FrameDecoder:
    """Turns a byte stream into messages. Refuses a frame longer than MAX_FRAME before buffering it.

    Bytes already decoded stay at the front of the buffer until the next :meth:`feed` (``_start`` marks
    where the undecoded rest begins), so a read holding several frames costs one copy per body, not a
    shift of the whole buffer per frame."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._start = 0
        self._need: int | None = None
        self._max = max_frame

    def feed(self, data: bytes) -> Iterator[Message]:
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data
        while True:
            if self._need is None:
                self._need = self._read_prefix()
                if self._need is None:
                    return
            end = self._start + self._need
            if len(self._buffer) < end:
                return
            view = memoryview(self._buffer)
            body = view[self._start : end]
            try:
                message = decode_body(body)
            finally:
                body.release()
                view.release()
            self._start = end
            self._need = None
            yield message

    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean place for the stream to end)."""
        return len(self._buffer) == self._start and self._need is None

    def _read_prefix(self) -> int | None:
        value = shift = 0
        start = self._start
        for i, byte in enumerate(self._buffer[start : start + MAX_VARINT_LEN]):
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if i > 0 and byte == 0:
                    raise MessageError("frame length is not minimally encoded")
                if value > self._max:
                    raise MessageError(f"frame of {value} bytes is over the {self._max}-byte limit")
                if value == 0:
                    raise MessageError("empty frame")
                self._start = start + i + 1
                return value
        if len(self._buffer) - start >= MAX_VARINT_LEN:
            raise MessageError("frame length prefix is too long")
        return None
