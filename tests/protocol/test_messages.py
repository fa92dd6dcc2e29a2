"""Block-exchange messages and framing: round trips, caps checked before reading, malformed input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cid import cid_of, cid_to_text
from protocol.manifest import MAX_BLOCK
from protocol.messages import (
    MAX_FRAME,
    BlockMessage,
    Cancel,
    FrameDecoder,
    Have,
    Message,
    MessageError,
    NotFound,
    Want,
    encode_message,
    uvarint,
)

request_ids = st.integers(0, (1 << 32) - 1)
messages = st.one_of(
    st.builds(Want, request_ids, st.binary(min_size=1, max_size=64).map(cid_of)),
    st.builds(BlockMessage, request_ids, st.binary(max_size=4096)),
    st.builds(NotFound, request_ids),
    st.builds(Cancel, request_ids),
    st.builds(Have, request_ids),
)


def _frame(body: bytes) -> bytes:
    return uvarint(len(body)) + body


@given(st.lists(messages, max_size=20), st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_frames_round_trip_whatever_the_split(batch: list[Message], cuts: list[int]) -> None:
    wire = b"".join(encode_message(m) for m in batch)
    decoder = FrameDecoder()
    out: list[Message] = []
    position = 0
    for cut in cuts * (len(wire) // max(1, sum(cuts)) + 1):
        out += decoder.feed(wire[position : position + cut])
        position += cut
        if position >= len(wire):
            break
    out += decoder.feed(wire[position:])
    assert out == batch
    assert decoder.at_boundary()


def test_a_full_size_block_fits_in_a_frame() -> None:
    frame = encode_message(BlockMessage(7, bytes(MAX_BLOCK)))
    assert len(frame) <= MAX_FRAME + 4
    assert list(FrameDecoder().feed(frame)) == [BlockMessage(7, bytes(MAX_BLOCK))]


def test_oversized_frame_is_refused_from_its_prefix_alone() -> None:
    decoder = FrameDecoder()
    with pytest.raises(MessageError, match="over the"):
        list(decoder.feed(uvarint(MAX_FRAME + 1)))  # no body sent: refused before buffering it


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"\x80\x80\x80\x80\x01", "prefix is too long"),
        (b"\x80\x00", "minimally"),
        (b"\x00", "empty frame"),
        (_frame(b"\xc1\xc1\xc1"), "not valid msgpack"),
        (_frame(msgpack.packb([9, 1])), "unknown message type"),
        (_frame(msgpack.packb([1, 1])), "wrong number"),
        (_frame(msgpack.packb([3, -1])), "request id"),
        (_frame(msgpack.packb([3, 1 << 32])), "request id"),
        (_frame(msgpack.packb([1, 1, b"x" * 36])), "malformed block id"),
        (_frame(msgpack.packb([2, 1, "text"])), "not valid msgpack"),
        (_frame(msgpack.packb({"a": 1})), "not valid msgpack"),
        (_frame(msgpack.packb([2, 1, b"x", 4])), "not valid msgpack"),
    ],
)
def test_malformed_frames_are_refused(wire: bytes, error: str) -> None:
    with pytest.raises(MessageError, match=error):
        list(FrameDecoder().feed(wire))


def test_encoding_refuses_an_oversized_block() -> None:
    with pytest.raises(MessageError):
        encode_message(BlockMessage(1, bytes(MAX_BLOCK + 1)))


def _exchange_vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (Path(__file__).parents[2] / "specs/vectors/exchange.json").read_text()
    )
    return loaded


@pytest.mark.parametrize("row", _exchange_vectors()["frames"], ids=lambda r: str(r["message"]))
def test_frame_vectors(row: dict[str, Any]) -> None:
    (message,) = FrameDecoder().feed(bytes.fromhex(row["frame"]))
    assert type(message).__name__.removesuffix("Message") == row["message"]  # BlockMessage: "Block"
    assert message.request == row["fields"]["request"]
    if isinstance(message, Want):
        assert cid_to_text(message.cid) == row["fields"]["cid"]
    if isinstance(message, BlockMessage):
        assert message.data.hex() == row["fields"]["data"]
    assert encode_message(message).hex() == row["frame"]


@pytest.mark.parametrize("row", _exchange_vectors()["invalid"], ids=lambda r: str(r["why"]))
def test_invalid_frame_vectors(row: dict[str, str]) -> None:
    with pytest.raises(MessageError) as refused:
        list(FrameDecoder().feed(bytes.fromhex(row["frame"])))
    assert refused.value.category == row["category"]
