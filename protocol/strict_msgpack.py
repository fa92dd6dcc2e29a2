"""Strict msgpack decoding: the one way ``protocol/`` reads msgpack from untrusted bytes.

Every format reads its msgpack through :func:`unpack_one`, :func:`unpack_exact` or :func:`unpacker`, so
they all enforce the same rules (specs/format.md, *Encoding*), on top of each format's own checks:

- a map key is a ``str`` and appears at most once in its map: msgpack itself allows a repeated key and
  the library keeps the last value, so a decoder that kept the first would read the same bytes as
  another tree (``object_pairs_hook`` refuses it while the map is built);
- every length is capped by the caller's :class:`Limits` before the bytes are buffered (the library's
  own ``max_*_len`` checks), no ext types;
- containers nest at most ``Limits.max_depth`` deep, so nothing later (a ``repr`` in an error message,
  a comparison) can recurse deeply on what a peer sent. The library stops at 1,024 levels by itself
  (``StackError``), which is already enough to make ``repr`` raise ``RecursionError``.

Whatever the library raises for a malformed input (``ValueError`` and its ``ExtraData``,
``FormatError``, ``StackError``; ``UnpackException``, ``OutOfData``, ``BufferFull``) becomes the
caller's error class, one line, never the library's.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack

from protocol.errors import ProtocolError

DEFAULT_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps for one format: the longest str, bin, array and map it can hold, and how deep it nests."""

    max_str_len: int
    max_bin_len: int
    max_array_len: int
    max_map_len: int
    max_depth: int = DEFAULT_MAX_DEPTH


class StrictError(ValueError):
    """The input breaks one of the strict rules (a repeated or non-text map key, too deep a nesting).
    Raised inside the unpacker, so it ends the decoding at once; callers see their own error class,
    with this message."""


def _strict_map(pairs: list[tuple[object, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if type(key) is not str:
            raise StrictError("holds a map key that is not text")
        if key in out:
            raise StrictError(f"repeats the map key {key[:32]!r}")
        out[key] = value
    return out


@functools.cache
def _options(limits: Limits) -> dict[str, object]:
    """The unpacker's keyword arguments for ``limits`` (made once per format: BLOCK messages are
    decoded on the transfer's hot path)."""
    return {
        "raw": False,
        "strict_map_key": True,
        "object_pairs_hook": _strict_map,
        "max_str_len": limits.max_str_len,
        "max_bin_len": limits.max_bin_len,
        "max_array_len": limits.max_array_len,
        "max_map_len": limits.max_map_len,
        "max_ext_len": 0,
    }


def check_depth(obj: object, max_depth: int) -> None:
    """Raise :class:`StrictError` if containers nest deeper than ``max_depth`` (a scalar is depth 0,
    ``[1]`` depth 1). Iterative: the input cannot make it recurse."""
    if (  # a message or a directory entry, the common case: a short flat array
        isinstance(obj, list)
        and len(obj) <= 4
        and max_depth >= 1
        and not any(type(item) is list or type(item) is dict for item in obj)
    ):
        return
    stack: list[tuple[object, int]] = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= max_depth:
            raise StrictError(f"nests deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, list | dict))


def _fail(error: type[ProtocolError], what: str, exc: Exception) -> ProtocolError:
    if isinstance(exc, StrictError):
        return error(f"{what} {exc}")
    return error(f"{what} is not valid msgpack")


def unpack_exact(data: bytes | memoryview, limits: Limits, error: type[ProtocolError], what: str) -> object:
    """Decode ``data`` as exactly one msgpack object (trailing bytes refused) under the strict rules."""
    try:
        obj = msgpack.unpackb(data, **_options(limits))  # type: ignore[arg-type]
        check_depth(obj, limits.max_depth)
    except (ValueError, msgpack.UnpackException) as exc:
        raise _fail(error, what, exc) from exc
    return obj


def unpack_one(
    data: bytes | memoryview, limits: Limits, error: type[ProtocolError], what: str
) -> tuple[object, int]:
    """Decode the first msgpack object of ``data``; returns it and how many bytes it took (the caller
    checks what follows, e.g. padding)."""
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(data), 1), **_options(limits))  # type: ignore[arg-type]
    try:
        unpacker.feed(data)
        obj = unpacker.unpack()
        check_depth(obj, limits.max_depth)
    except (ValueError, msgpack.UnpackException) as exc:
        raise _fail(error, what, exc) from exc
    return obj, unpacker.tell()


class StreamUnpacker:
    """Decodes a stream of msgpack objects fed in pieces, under the strict rules, buffering at most
    ``max_buffer`` bytes."""

    def __init__(self, limits: Limits, error: type[ProtocolError], what: str, max_buffer: int) -> None:
        self._limits = limits
        self._error = error
        self._what = what
        self._unpacker = msgpack.Unpacker(max_buffer_size=max_buffer, **_options(limits))  # type: ignore[arg-type]

    def feed(self, data: bytes | memoryview) -> Iterator[object]:
        """Every object ``data`` completes (a list, decoded before the first is yielded)."""
        try:
            self._unpacker.feed(data)
            items = list(self._unpacker)
            for item in items:
                check_depth(item, self._limits.max_depth)
        except (ValueError, msgpack.UnpackException) as exc:
            raise _fail(self._error, self._what, exc) from exc
        return iter(items)

    def tell(self) -> int:
        """Bytes consumed by the objects decoded so far."""
        return int(self._unpacker.tell())


def unpacker(limits: Limits, error: type[ProtocolError], what: str, max_buffer: int) -> StreamUnpacker:
    return StreamUnpacker(limits, error, what, max_buffer)
