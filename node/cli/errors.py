"""The command line's errors."""

from node.errors import NodeError


class CliError(NodeError):
    """Root of every error raised by ``node.cli``: an argument, or input read for one, cannot be used."""
