"""The protocol layer's errors. Every message is one line, written for the user, and never holds a key."""


class ProtocolError(Exception):
    """Root of every error raised by ``protocol/``: the input is not what the format allows."""


class LinkError(ProtocolError):
    """A share link is malformed, damaged or of a version this program does not read."""


class CidError(ProtocolError):
    """A content identifier is malformed or of a kind Sealbox does not use."""


class CorruptBlockError(ProtocolError):
    """A block's bytes do not hash to its CID: it was truncated or altered."""


class DecryptError(ProtocolError):
    """A block hashed correctly but did not open under the key: a wrong key, or a block out of place."""


class ManifestError(ProtocolError):
    """A manifest opened but breaks the format: bad fields, counts or structure."""


class UnsafeNameError(ManifestError):
    """A name in a manifest could escape the destination or is not portable."""
