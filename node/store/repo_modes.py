"""Who else may read the repo: ``sealbox repo check`` warns when its permissions are looser than it
makes them. The repo is the user's own: its directories 0700, the files that hold keys 0600 (the pins
keep the master key of every root added here, and of fetched roots unless ``--no-keep-key``; the
secret keys the add fingerprints; the identity is the node's private key; the API token lets a local
process drive the daemon). With the directory at 0700 nobody else can reach any of them; a looser
mode on a file is still worth fixing, as the directory may be opened up later. Nothing in the repo is
sent to a peer: peers only ever receive sealed blocks (specs/format.md, "Local repo").
"""

from __future__ import annotations

import stat
from pathlib import Path

DIRS = ("", "blocks", "blocks/packs", "pins", "adds", "tmp", "leases")
KEY_FILES = ("secret", "identity", "api.token")
OTHERS = stat.S_IRWXG | stat.S_IRWXO


def loose_modes(root: Path) -> list[str]:
    """One line per directory or key-bearing file that others than the owner may use (none: [])."""
    notes = []
    for name in DIRS:
        path = root / name if name else root
        mode = _mode(path)
        if mode is not None and mode & OTHERS:
            shown = name + "/" if name else "the repo directory"
            notes.append(f"{shown} is mode {mode:o}, open to other users: run 'chmod 700 {path}'")
    pins = root / "pins"
    files = [root / name for name in KEY_FILES]
    files += sorted(pins.glob("*.pin")) if pins.is_dir() else []
    loose = [path for path in files if (mode := _mode(path)) is not None and mode & OTHERS]
    for path in loose[:5]:
        relative = path.relative_to(root)
        notes.append(f"{relative} (it may hold a key) is open to other users: run 'chmod 600 {path}'")
    if len(loose) > 5:
        notes.append(f"... and {len(loose) - 5} more key-bearing file(s) others may read")
    return notes


def _mode(path: Path) -> int | None:
    try:
        st = path.lstat()
    except OSError:
        return None  # absent (e.g. no daemon ran yet): nothing to say
    return stat.S_IMODE(st.st_mode)
