"""Where the control API lives in a repo: its Unix socket and its token file.

Kept apart from ``node/daemon/api.py`` (trio, h11) so that the CLI can tell whether a daemon runs without
importing the server.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from node.daemon.errors import DaemonError
from node.store.fsutil import write_atomic

SOCKET_NAME = "api.sock"
TOKEN_NAME = "api.token"  # noqa: S105 - a file name, not a secret
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


def socket_path(repo_path: Path) -> Path:
    path = repo_path.absolute() / SOCKET_NAME
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise DaemonError(
            f"the repo path is too long for the control socket ({MAX_SOCKET_PATH} bytes at most): {path}"
        )
    return path


def token_path(repo_path: Path) -> Path:
    return repo_path / TOKEN_NAME


def new_token(repo_path: Path) -> str:
    """Make and store (0600) a fresh API token; the previous daemon's token stops working."""
    token = secrets.token_urlsafe(32)
    write_atomic(token_path(repo_path), token.encode("ascii"), mode=0o600)
    return token
