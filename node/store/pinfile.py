"""The pin file format (``REPO/pins/<root>.pin``): pure encoding and decoding, no I/O beyond what a caller
hands in. Untrusted input as far as this module is concerned: a damaged disk or another local process
may have written anything, so every length is capped before it is read and every header field is
checked for type and range in one place (:func:`decode_header`). Every failure is a ``RepoError``.

Two versions (specs/format.md, "Local repo"); both are read, version 2 is written::

    v1: block list || msgpack header || u32be(header length) || "SBP1"
    v2: block list || msgpack header || SHA-256(header) || u32be(header length) || "SBP2"

The block list is raw 36-byte CIDs. A v2 header has ``v = 2`` and ``list = SHA-256(block list)``, so a
flipped bit anywhere in a v2 pin is found: in the header by the trailer's digest, in the list by the
header's. A v1 pin has neither; gc still refuses to act on a v1 list that names a block the index lacks.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from node.store.errors import RepoError
from protocol.cid import CID_LEN, check_cid
from protocol.errors import CidError, LinkError
from protocol.link import ShareLink

PIN_MAGIC_V1 = b"SBP1"
PIN_MAGIC = b"SBP2"
TRAILER_V1 = struct.Struct(">I4s")
TRAILER = struct.Struct(">32sI4s")
MAX_PIN_HEADER = 64 * 1024
MAX_SIZE = 1 << 62  # bytes: far past any tree the format allows (2^60 per node)
MAX_BLOCKS = 1 << 40
LATEST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: the last second datetime can show
KEY_LEN = 32
FINGERPRINT_LEN = 32
_REQUIRED = ("v", "root", "kind", "size", "blocks", "stored", "added")
_OPTIONAL = ("name", "key", "fingerprint")


@dataclass(frozen=True)
class Pin:
    """A pinned root: what ``ls`` shows. ``key``: the link's master key, kept for roots this repo added
    and for fetched roots unless the get said ``--no-keep-key``; None otherwise."""

    root: bytes
    kind: str
    size: int
    blocks: int
    stored: int
    added: float
    name: str | None = None
    key: bytes | None = None
    fingerprint: bytes | None = None

    def header(self) -> dict[str, Any]:
        """The header's fields, without the version and list digest (:func:`encode_header` adds them)."""
        fields: dict[str, Any] = {
            "root": self.root,
            "kind": self.kind,
            "size": self.size,
            "blocks": self.blocks,
            "stored": self.stored,
            "added": self.added,
        }
        for name in ("name", "key", "fingerprint"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        return fields


@dataclass(frozen=True)
class PinLayout:
    """What the trailer and header say about a pin file: its pin, the block list's length in bytes
    (at the start of the file) and, for v2, the SHA-256 the list must hash to."""

    pin: Pin
    list_len: int
    list_digest: bytes | None
    version: int


def encode_header(pin: Pin, list_digest: bytes) -> bytes:
    """The bytes that follow a block list whose SHA-256 is ``list_digest``: header and trailer (v2)."""
    header: bytes = msgpack.packb({"v": 2, **pin.header(), "list": list_digest}, use_bin_type=True)
    return header + TRAILER.pack(hashlib.sha256(header).digest(), len(header), PIN_MAGIC)


def trailer_length(tail: bytes) -> int:
    """How many bytes at the end of a pin file :func:`decode_tail` needs: read the last
    ``TRAILER.size`` bytes, pass them here, then read that many and pass them to :func:`decode_tail`."""
    if len(tail) < TRAILER_V1.size:
        raise RepoError("pin is damaged: shorter than its trailer")
    length, magic = TRAILER_V1.unpack(tail[-TRAILER_V1.size :])
    if magic not in (PIN_MAGIC, PIN_MAGIC_V1) or length > MAX_PIN_HEADER:
        raise RepoError("pin is damaged: its trailer is not a pin trailer")
    return int(length) + (TRAILER.size if magic == PIN_MAGIC else TRAILER_V1.size)


def decode_tail(tail: bytes, file_size: int, root: bytes | None = None) -> PinLayout:
    """Decode a pin file's header from ``tail`` (its last bytes, at least :func:`trailer_length` of them)
    given the file's total size. ``root``: the root the file is named after, which the header must hold."""
    need = trailer_length(tail)
    if need > file_size or len(tail) < need:
        raise RepoError("pin is damaged: shorter than its header")
    magic = tail[-4:]
    if magic == PIN_MAGIC:
        digest, _length, _magic = TRAILER.unpack(tail[-TRAILER.size :])
        header = tail[len(tail) - need : len(tail) - TRAILER.size]
        if hashlib.sha256(header).digest() != digest:
            raise RepoError("pin is damaged: its header fails its checksum")
        version = 2
    else:
        header = tail[len(tail) - need : len(tail) - TRAILER_V1.size]
        version = 1
    pin, list_digest = decode_header(header, version)
    list_len = file_size - need
    if list_len != pin.blocks * CID_LEN:
        raise RepoError("pin is damaged: its block list does not have the length its header says")
    if root is not None and pin.root != root:
        raise RepoError("pin is damaged: it names another root than its file name")
    return PinLayout(pin, list_len, list_digest, version)


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    keys = [k for k, _ in pairs]
    if not all(isinstance(k, str) for k in keys):
        raise RepoError("pin is damaged: a header key is not a string")
    if len(set(keys)) != len(keys):
        raise RepoError("pin is damaged: its header repeats a key")
    return dict(pairs)


def decode_header(header: bytes, version: int) -> tuple[Pin, bytes | None]:
    """Check every field of a pin header (msgpack map) for type and range. Returns the pin and, for v2,
    the block list's SHA-256. Any other shape, a repeated or unknown key: RepoError."""
    try:
        fields = msgpack.unpackb(
            header,
            raw=False,
            strict_map_key=True,
            object_pairs_hook=_pairs,
        )
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException):
        raise RepoError("pin is damaged: its header is not one msgpack map") from None
    if not isinstance(fields, dict):
        raise RepoError("pin is damaged: its header is not a map")
    allowed = {*_REQUIRED, *_OPTIONAL, *(("list",) if version == 2 else ())}
    if not set(_REQUIRED) <= fields.keys() or not fields.keys() <= allowed:
        raise RepoError("pin is damaged: its header lacks a field or holds an unknown one")
    if version == 2 and "list" not in fields:
        raise RepoError("pin is damaged: its header lacks the block list's checksum")
    v = fields["v"]
    if type(v) is not int or v != version:
        raise RepoError("pin is damaged: its header's version does not match its trailer")
    root = fields["root"]
    if not isinstance(root, bytes):
        raise RepoError("pin is damaged: its root is not a CID")
    try:
        check_cid(root)
    except CidError:
        raise RepoError("pin is damaged: its root is not a CID") from None
    kind = fields["kind"]
    if kind not in ("file", "dir") or not isinstance(kind, str):
        raise RepoError("pin is damaged: its kind is neither file nor dir")
    size = _int(fields, "size", MAX_SIZE)
    blocks = _int(fields, "blocks", MAX_BLOCKS)
    stored = _int(fields, "stored", MAX_SIZE)
    added = fields["added"]
    if type(added) not in (int, float) or not math.isfinite(added) or not 0 <= added <= LATEST_TIME:
        raise RepoError("pin is damaged: its time added is not a time")
    name = fields.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise RepoError("pin is damaged: its display name is not a string")
        try:
            ShareLink(root, bytes(KEY_LEN), name)  # the display-name rules of a link, in one place
        except (LinkError, TypeError):
            raise RepoError("pin is damaged: its display name is not one a link could carry") from None
    key = _bin(fields, "key", KEY_LEN)
    fingerprint = _bin(fields, "fingerprint", FINGERPRINT_LEN)
    list_digest = _bin(fields, "list", 32)
    pin = Pin(root, kind, size, blocks, stored, float(added), name, key, fingerprint)
    return pin, list_digest


def _int(fields: dict[str, Any], name: str, limit: int) -> int:
    value = fields[name]
    if type(value) is not int or not 0 <= value <= limit:
        raise RepoError(f"pin is damaged: its {name} is not a count in range")
    return value


def _bin(fields: dict[str, Any], name: str, length: int) -> bytes | None:
    value = fields.get(name)
    if value is not None and (not isinstance(value, bytes) or len(value) != length):
        raise RepoError(f"pin is damaged: its {name} is not {length} bytes")
    return value if value is None else bytes(value)
