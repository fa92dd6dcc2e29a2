"""The node layer's errors. Messages are one line, for the user, and never hold a key or a link."""


class NodeError(Exception):
    """Root of every error raised by ``node/``."""


class RepoError(NodeError):
    """The repo is missing, unreadable, locked, or not a Sealbox repo."""


class RepoFullError(RepoError):
    """The disk holding the repo (or the destination) is full; nothing stored was changed."""


class RepoDamagedError(RepoError):
    """The repo's metadata (the block index, or a pin) fails an integrity check: gc deletes nothing, and
    ``sealbox repo check`` / ``repair`` say what and mend what can be mended."""


class StorageLimitError(RepoFullError):
    """Storing more would take the repo past its ``storage_limit``; what the operation wrote is dropped."""


class NotFoundError(NodeError):
    """A block or pin the operation needs is not in the repo."""


class InputError(NodeError):
    """A path given to ``add`` cannot be read or holds something that cannot be shared."""


class DestinationError(NodeError):
    """``get`` cannot write where it was asked to."""


class NetworkError(NodeError):
    """The network layer failed: a bad address or identity, a dial, a stream, a listen, or a deadline."""


class ConfigError(NodeError):
    """The repo's config.toml is unreadable or holds a value Sealbox cannot use."""


class DaemonError(NodeError):
    """The daemon cannot start (e.g. another one holds the repo), or no daemon answers on the repo."""


class ApiError(NodeError):
    """The daemon's control API refused a request or answered with an error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
