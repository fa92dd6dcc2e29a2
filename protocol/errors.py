"""The protocol layer's errors. Every message is one line, written for the user, and never holds a key.

Each class carries a ``category``: a short, stable, machine-readable name of what kind of input was
refused (specs/format.md, *Error categories*). The wording of a message may change from release to
release; the category does not, so the test vectors and other implementations name the category.
"""


class ProtocolError(Exception):
    """Root of every error raised by ``protocol/``: the input is not what the format allows."""

    category = "protocol"


class LinkError(ProtocolError):
    """A share link is malformed: not of the form, not canonical, an unknown or repeated parameter."""

    category = "bad-link"


class LinkDamagedError(LinkError):
    """A share link was cut short or changed in transit: its checksum or its fragment is missing or
    wrong. The user should copy it again."""

    category = "damaged-link"


class LinkVersionError(LinkError):
    """A share link of a version this program does not read: the user should upgrade."""

    category = "unsupported-version"


class CidError(ProtocolError):
    """A content identifier is malformed or of a kind Sealbox does not use."""

    category = "bad-cid"


class CorruptBlockError(ProtocolError):
    """A block's bytes do not hash to its CID: it was truncated or altered."""

    category = "corrupt-block"


class DecryptError(ProtocolError):
    """A block hashed correctly but did not open under the key: a wrong key, or a block out of place."""

    category = "decrypt-failed"


class ManifestError(ProtocolError):
    """A manifest opened but breaks the format: bad fields, counts or structure."""

    category = "bad-manifest"


class ManifestVersionError(ManifestError):
    """A node of a format version this program does not read: the user should upgrade."""

    category = "unsupported-version"


class UnsafeNameError(ManifestError):
    """A name in a manifest could escape the destination or is not portable."""

    category = "unsafe-name"
