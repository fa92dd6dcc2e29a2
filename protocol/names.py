"""Path-safety rules for names inside manifests (untrusted: they come from whoever made the link).

``check_name`` decides whether one name is a safe, portable path component; :class:`FolderNames` whether
the names of one folder stay distinct on file systems that ignore case and Unicode normalization
(macOS, Windows), where ``a.txt`` beside ``A.txt``, or ``é`` composed beside ``é`` decomposed, would
merge into one file. Names are never rewritten: a name is stored and written exactly as given, or
refused. The rules are specs/format.md, *Names*.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable

from protocol.errors import UnsafeNameError

MAX_NAME_BYTES = 255
_SUPERSCRIPTS = "\u00b9\u00b2\u00b3"  # Windows reads these as the digits of COM1-COM3 and LPT1-LPT3
_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{digit}" for port in ("COM", "LPT") for digit in "123456789" + _SUPERSCRIPTS]
)


def _is_control(c: str) -> bool:
    """C0 (U+0000-U+001F), DEL (U+007F) and C1 (U+0080-U+009F) control characters."""
    return ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F


def device_stem(name: str) -> str:
    """What Windows compares with its device names: the name up to its first dot, trailing spaces
    (U+0020) dropped, upper-cased (Unicode's uppercase mapping; outside ASCII only U+0131, dotless i,
    uppercases into a letter of a device name)."""
    return name.split(".", 1)[0].rstrip(" ").upper()


def check_name(name: object) -> str:
    """Return ``name`` if it is one safe, portable path component; raise :class:`UnsafeNameError` if not.

    Refused: empty names, ``.`` and ``..``, names over 255 UTF-8 bytes, ``/``, ``\\``, C0 and C1 control
    characters and DEL, and device names (``CON``, ``nul.txt``, ``COM1``, ``COM¹``, ...) that address
    devices on Windows.
    """
    if not isinstance(name, str):
        raise UnsafeNameError("a name in the manifest is not text")
    shown = repr(name[:64])
    if name in ("", ".", ".."):
        raise UnsafeNameError(f"refusing unsafe name {shown}")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeNameError(f"refusing name {shown}: not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise UnsafeNameError(f"refusing name {shown}...: longer than {MAX_NAME_BYTES} bytes")
    if any(c in "/\\" or _is_control(c) for c in name):
        raise UnsafeNameError(f"refusing unsafe name {shown}: it holds a path separator or control character")
    if device_stem(name) in _DEVICE_NAMES:
        raise UnsafeNameError(f"refusing name {shown}: it is a device name on Windows")
    return name


def fold_name(name: str) -> str:
    """The form in which two names that a case-insensitive, normalization-insensitive file system
    merges are equal: Unicode's canonical caseless form, ``NFD(casefold(NFD(name)))`` (The Unicode
    Standard, section 3.13, D145)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def colliding_names(names: Iterable[str]) -> tuple[str, str] | None:
    """The first two of ``names`` that fold to the same form, or None if all stay distinct."""
    seen: dict[str, str] = {}
    for name in names:
        folded = fold_name(name)
        if folded in seen:
            return seen[folded], name
        seen[folded] = name
    return None


class FolderNames:
    """The names of one folder seen so far, by a digest of their folded form: :meth:`add` refuses a
    name that folds like an earlier one. Memory is 16 bytes of digest per name, whatever its length;
    a collision of the digests (2^-128 for any pair) could only refuse a sound folder, never admit
    a colliding one."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def add(self, name: str) -> None:
        digest = hashlib.blake2b(fold_name(name).encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if digest in self._seen:
            raise UnsafeNameError(
                f"refusing name {name[:64]!r}: another name in its folder differs from it only in case "
                "or Unicode normalization, and the two would be one file on macOS and Windows"
            )
        self._seen.add(digest)
