"""The files layer's errors: reading what ``add`` shares and writing what ``get`` opens."""

from node.errors import NodeError


class FilesError(NodeError):
    """Root of every error raised by ``node.files``."""


class InputError(FilesError):
    """A path given to ``add`` cannot be read or holds something that cannot be shared."""


class DestinationError(FilesError):
    """``get`` cannot write where it was asked to."""


class NoEntryError(FilesError):
    """A path asked of a shared folder names no entry in it (``get LINK PATH``)."""
