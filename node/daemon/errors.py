"""The daemon layer's errors: the long-running service, its control API, its config and its logs."""

from node.errors import NodeError


class ServiceError(NodeError):
    """Root of every error raised by ``node.daemon``."""


class ConfigError(ServiceError):
    """The repo's config.toml is unreadable or holds a value Sealbox cannot use."""


class DaemonError(ServiceError):
    """The daemon cannot start (e.g. another one holds the repo), or no daemon answers on the repo."""


class ApiError(ServiceError):
    """The daemon's control API refused a request or answered with an error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
