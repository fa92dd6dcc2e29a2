"""The parts of a binary CID, taken out by protocol/cid.py alone, checked against multiformats' view."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiformats import CID

from protocol.cid import (
    CID_LEN,
    cid_digest,
    cid_from_digest,
    cid_multihash,
    cid_of,
    split_cids,
)
from protocol.errors import CidError

digests = st.binary(min_size=32, max_size=32)


@given(digests)
def test_digest_and_multihash_are_what_multiformats_reads(digest: bytes) -> None:
    cid = cid_from_digest(digest)
    parsed = CID.decode(cid)
    assert cid_digest(cid) == digest == bytes(parsed.raw_digest)
    assert cid_multihash(cid) == bytes(parsed.digest)


def test_a_malformed_cid_has_no_parts() -> None:
    for bad in (b"", bytes(CID_LEN), cid_of(b"x")[:-1], b"\x00" + cid_of(b"x")[1:]):
        with pytest.raises(CidError):
            cid_digest(bad)
        with pytest.raises(CidError):
            cid_multihash(bad)


@given(st.lists(digests, max_size=8))
def test_a_list_of_cids_splits_back(listed: list[bytes]) -> None:
    cids = [cid_from_digest(d) for d in listed]
    assert split_cids(b"".join(cids)) == cids
    assert split_cids(memoryview(b"".join(cids))) == cids


def test_a_list_with_a_partial_or_foreign_cid_is_refused() -> None:
    one = cid_of(b"a")
    with pytest.raises(CidError, match="partial"):
        split_cids(one + one[:-1])
    with pytest.raises(CidError):
        split_cids(one + bytes(CID_LEN))
