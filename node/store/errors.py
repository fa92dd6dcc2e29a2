"""The store layer's errors: the repo, its block store, pins, leases and gc."""

from node.errors import NodeError


class StoreError(NodeError):
    """Root of every error raised by ``node.store``."""


class RepoError(StoreError):
    """The repo is missing, unreadable, locked, or not a Sealbox repo."""


class RepoFullError(RepoError):
    """The disk holding the repo (or the destination) is full; nothing stored was changed."""


class RepoDamagedError(RepoError):
    """The repo's metadata (the block index, or a pin) fails an integrity check: gc deletes nothing, and
    ``sealbox repo check`` / ``repair`` say what and mend what can be mended."""


class StorageLimitError(RepoFullError):
    """Storing more would take the repo past its ``storage_limit``; what the operation wrote is dropped."""


class NotFoundError(StoreError):
    """A block or pin the operation needs is not in the repo."""
