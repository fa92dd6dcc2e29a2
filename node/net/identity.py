"""The node's identity: ``REPO/identity`` holds its 32-byte Ed25519 seed (mode 0600).

Made on the daemon's first start (``node.net.host.new_identity``, written atomically) and reused after, so the
peer id stays the same across restarts. A file others can read is refused, as ssh refuses a private key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from node.net.errors import NetworkError
from node.net.host import IDENTITY_LEN, load_identity, new_identity
from node.store.errors import RepoError
from node.store.fsutil import write_atomic

IDENTITY_NAME = "identity"


def load_or_create_identity(repo_path: Path) -> bytes:
    """The node's identity seed, created (0600) if the repo has none yet."""
    path = repo_path / IDENTITY_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        secret = new_identity()
        write_atomic(path, secret, mode=0o600)
        return secret
    except OSError as exc:
        raise RepoError(f"cannot read the node identity {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RepoError(f"the node identity {path} is not a regular file")
        if st.st_mode & 0o077:
            raise RepoError(f"the node identity {path} is readable by others: run 'chmod 600 {path}'")
        secret = os.read(fd, IDENTITY_LEN + 1)
    finally:
        os.close(fd)
    try:
        load_identity(secret)
    except NetworkError:
        raise RepoError(f"the node identity {path} is damaged (not a {IDENTITY_LEN}-byte seed)") from None
    return secret
