"""The padding rule: what size a storage peer sees for a plaintext of a given length.

Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication with PURBs",
PETS 2019) rounds a length L to a value whose binary form keeps only its top ~log2(log2(L)) bits, so a
length leaks O(log log L) bits and the overhead is at most 11.1% (below 12%). Everything shorter than
``MIN_PADDED`` is padded to ``MIN_PADDED``, so all small files look alike and still cost far less than a
chunk.
"""

MIN_PADDED = 1024


def padme(length: int) -> int:
    """Padmé's padded length for ``length`` >= 0 (Algorithm 1 of the paper)."""
    if length < 2:
        return length
    e = length.bit_length() - 1  # floor(log2 L)
    s = e.bit_length()  # floor(log2 E) + 1
    last_bits = e - s
    mask = (1 << last_bits) - 1
    return (length + mask) & ~mask


def padded_size(length: int) -> int:
    """The padded length of a stream of ``length`` plaintext bytes."""
    if length < 0:
        raise ValueError("length must be >= 0")
    return padme(max(length, MIN_PADDED))
