"""The root of the node's errors. Each layer has its own errors module with one root of its own
(``StoreError``, ``FilesError``, ``NetworkError``, ``ServiceError``, ``CliError``), all under
:class:`NodeError`, so the command line reports any of them in one line. Messages are one line, for
the user, and never hold a key or a link."""


class NodeError(Exception):
    """Root of every error raised by ``node/``."""
