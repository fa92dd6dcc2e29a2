"""Path-safety rules for names inside manifests (untrusted: they come from whoever made the link)."""

from __future__ import annotations

from protocol.errors import UnsafeNameError

MAX_NAME_BYTES = 255
_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def check_name(name: object) -> str:
    """Return ``name`` if it is one safe, portable path component; raise :class:`UnsafeNameError` if not.

    Refused: empty names, ``.`` and ``..``, names over 255 UTF-8 bytes, ``/``, ``\\``, NUL and other control
    characters, and device names (``CON``, ``nul.txt``, ``COM1``, ...) that address devices on Windows.
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
    if any(c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UnsafeNameError(f"refusing unsafe name {shown}: it holds a path separator or control character")
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _DEVICE_NAMES:
        raise UnsafeNameError(f"refusing name {shown}: it is a device name on Windows")
    return name
