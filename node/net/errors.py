"""The network layer's errors."""

from node.errors import NodeError


class NetworkError(NodeError):
    """Root of every error raised by ``node.net``: a bad address or identity, a dial, a stream, a listen,
    or a deadline."""
