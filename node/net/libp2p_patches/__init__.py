"""Every patch of py-libp2p's internals, in one place, for the one library release they were checked
against; applied once, on import of ``node.net.host``, before any host runs.

Each patch is a named function whose docstring states the defect, what was measured, and why the patch
is safe; docs/py-libp2p.md holds the measurements and lists the workarounds that need no patch (settings
and our own code around the library's public API). ``tests/net/test_libp2p_patches.py`` shows each patch
taking effect.

:func:`apply` first checks the installed release (:func:`check_version`): another release may have fixed
a defect, moved what a patch replaces, or kept a name and changed its meaning, so it is refused with one
line naming both versions. An upgrade re-reads the library, re-checks each patch and its test, and then
changes ``SUPPORTED_VERSION`` (and the pin in pyproject.toml). This module imports nothing of the library
itself: the patch modules are imported only once the version is known to be right.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from node.net.errors import NetworkError

SUPPORTED_VERSION = "0.8.1"
DISTRIBUTION = "libp2p"  # py-libp2p's name on PyPI

_applied = False


def installed_version() -> str | None:
    """The installed py-libp2p release, or None if there is none."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_version(found: str | None) -> None:
    """Refuse (:class:`NetworkError`, one line) a py-libp2p release other than ``SUPPORTED_VERSION``."""
    if found != SUPPORTED_VERSION:
        what = f"py-libp2p {found} is installed" if found else "py-libp2p is not installed"
        raise NetworkError(
            f"{what}, but this Sealbox works only with py-libp2p {SUPPORTED_VERSION} (its patches in"
            f" node/net/libp2p_patches were checked against that release):"
            f" install libp2p=={SUPPORTED_VERSION}"
        )


def patches() -> tuple[Callable[[], None], ...]:
    """Every patch, in the order :func:`apply` installs them (this imports the library: check first)."""
    from node.net.libp2p_patches import kad_dht, swarm, yamux

    return (
        swarm.free_inbound_slot_on_close,
        yamux.drop_what_a_reset_stream_holds,
        yamux.enforce_the_receive_window,
        yamux.send_large_frames,
        yamux.return_credit_at_half_window,
        kad_dht.shorten_the_query_timeout,
        kad_dht.quiet_the_normal_end_of_a_stream,
    )


def apply() -> None:
    """Check the installed py-libp2p release, then install every patch; once (later calls do nothing)."""
    global _applied
    if _applied:
        return
    check_version(installed_version())
    for patch in patches():
        patch()
    _applied = True
