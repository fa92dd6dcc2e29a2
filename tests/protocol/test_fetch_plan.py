"""The block-exchange scheduler: each rule, and invariants under random event sequences."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cid import cid_of
from protocol.fetch_plan import CancelRequest, FetchPlan, Request, UnrequestedBlockError

CIDS = [cid_of(i.to_bytes(4, "big")) for i in range(64)]


def plan_with(peers: list[str], wanted: int, **kw: int) -> FetchPlan:
    """A plan with ``peers`` and the first ``wanted`` CIDS; no endgame unless asked for."""
    kw.setdefault("endgame_copies", 1)
    plan = FetchPlan(**kw)
    for peer in peers:
        plan.add_peer(peer)
    for cid in CIDS[:wanted]:
        plan.want(cid)
    return plan


def test_each_block_goes_to_one_peer_and_load_spreads() -> None:
    plan = plan_with(["a", "b", "c", "d"], 40, window=4)
    requests = plan.next_requests()
    assert len(requests) == 16  # every window full
    assert len({r.cid for r in requests}) == 16  # no block asked twice
    per_peer = {p: sum(r.peer == p for r in requests) for p in "abcd"}
    assert per_peer == {"a": 4, "b": 4, "c": 4, "d": 4}
    assert [r.cid for r in requests] == CIDS[:16]  # in the order wanted


def test_fast_peers_get_more() -> None:
    plan = plan_with(["fast", "slow"], 30, window=2)
    sent = plan.next_requests()
    served = {"fast": 0, "slow": 0}
    while not plan.done:
        for request in [r for r in sent if r.peer == "fast"]:
            plan.received("fast", request.cid)
            served["fast"] += 1
        sent = [r for r in sent if r.peer == "slow"] + plan.next_requests()
        if all(r.peer == "slow" for r in sent) and sent:
            slow = sent.pop(0)
            plan.received("slow", slow.cid)
            served["slow"] += 1
            sent += plan.next_requests()
    assert served["fast"] > 2 * served["slow"]


def test_not_found_fails_over_and_is_never_asked_again() -> None:
    plan = plan_with(["a", "b"], 1)
    (first,) = plan.next_requests()
    plan.not_found(first.peer, first.cid)
    (second,) = plan.next_requests()
    assert second.cid == first.cid and second.peer != first.peer
    plan.not_found(second.peer, second.cid)
    assert plan.next_requests() == []
    assert plan.unavailable() == [first.cid]


def test_a_leaving_peer_hands_its_requests_to_the_others() -> None:
    plan = plan_with(["a", "b"], 4, window=2)
    requests = plan.next_requests()
    lost = [r.cid for r in requests if r.peer == "a"]
    assert plan.remove_peer("a") == lost
    assert plan.next_requests() == []  # b's window is full
    for request in [r for r in requests if r.peer == "b"]:
        plan.received("b", request.cid)
    again = plan.next_requests()
    assert again == [Request("b", cid) for cid in lost]  # first in line: they were wanted first


def test_a_dropped_peer_is_never_asked_again() -> None:
    plan = plan_with(["bad", "good"], 4, window=4)
    plan.next_requests()
    plan.drop_peer("bad")
    assert plan.add_peer("bad") is False
    assert {r.peer for r in plan.next_requests()} == {"good"}


def test_unrequested_blocks_are_refused() -> None:
    plan = plan_with(["a", "b"], 1)
    (request,) = plan.next_requests()
    other = "b" if request.peer == "a" else "a"
    with pytest.raises(UnrequestedBlockError):
        plan.received(other, request.cid)
    with pytest.raises(UnrequestedBlockError):
        plan.received(request.peer, CIDS[50])


def test_a_stalled_peer_loses_all_its_requests_and_is_dropped_after_max() -> None:
    plan = plan_with(["a", "b"], 6, window=2, max_timeouts=2)
    requests = plan.next_requests()
    assert {r.peer for r in requests} == {"a", "b"} and len(requests) == 4
    stalled = [r.cid for r in requests if r.peer == "a"]
    assert plan.stalled("a") is False  # one strike: its two requests go back to the front of the queue
    assert plan.open_requests("a") == []
    assert plan.queued()[:2] == stalled
    assert plan.stalled("a") is False  # nothing open: nothing to count
    again = plan.next_requests()
    # b is full; the stalled blocks may go back to a only because no other peer can take them
    assert [r.cid for r in again] == stalled and {r.peer for r in again} == {"a"}
    assert plan.stalled("a") is True  # second strike: dropped for good
    assert "a" not in plan.peers() and plan.add_peer("a") is False
    assert set(plan.queued()[:2]) == set(stalled)


def test_endgame_only_at_the_tail_and_first_copy_cancels_the_rest() -> None:
    plan = plan_with(["a", "b", "c"], 2, window=4, endgame_copies=2)
    requests = plan.next_requests()
    cids = [r.cid for r in requests]
    assert sorted(cids) == sorted(CIDS[:2] * 2)  # both blocks, each asked of two peers
    holder = {r.peer for r in requests if r.cid == CIDS[0]}
    winner = sorted(holder)[0]
    cancels = plan.received(winner, CIDS[0])
    assert cancels == [CancelRequest(p, CIDS[0]) for p in sorted(holder - {winner})]
    # no endgame while work is still unassigned
    busy = plan_with(["a", "b"], 10, window=2)
    first = busy.next_requests()
    assert len({r.cid for r in first}) == len(first)


def test_no_peers_means_everything_is_unavailable() -> None:
    plan = plan_with([], 3)
    assert plan.next_requests() == []
    assert plan.unavailable() == CIDS[:3]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 5), st.integers(1, 3), st.randoms())
def test_invariants_under_random_events(
    peers: int, blocks: int, window: int, copies: int, rnd: random.Random
) -> None:
    """Peers answer, miss, time out and misbehave at random; the plan keeps its rules and, while one
    honest peer holds everything, always finishes with every block fetched exactly once."""
    names = [f"p{i}" for i in range(peers)] + ["honest"]
    plan = plan_with(names, blocks, window=window, endgame_copies=copies, max_timeouts=2)
    holdings = {p: {c for c in CIDS[:blocks] if rnd.random() < 0.6} for p in names}
    holdings["honest"] = set(CIDS[:blocks])
    dropped: set[str] = set()
    got: set[bytes] = set()
    for _ in range(20 * blocks * len(names)):
        before = {cid for peer in plan.peers() for cid in plan.open_requests(peer)}
        new = plan.next_requests()
        duplicates = [r for r in new if r.cid in before or sum(n.cid == r.cid for n in new) > 1]
        if duplicates:
            assert plan.queued() == []  # endgame copies only once nothing is left unassigned
        for request in new:
            assert request.peer not in dropped
            assert request.cid not in got
            assert request.cid not in plan.missing_at(request.peer)
        busy = [p for p in plan.peers() if plan.open_requests(p)]
        for peer in plan.peers():
            assert len(plan.open_requests(peer)) <= window
        in_flight: dict[bytes, int] = {}
        for peer in plan.peers():
            for cid in plan.open_requests(peer):
                in_flight[cid] = in_flight.get(cid, 0) + 1
        assert all(n <= copies for n in in_flight.values())
        if not busy:
            break
        peer = rnd.choice(busy)
        cid = plan.open_requests(peer)[0]
        roll = rnd.random()
        if roll < 0.05 and peer != "honest":
            plan.drop_peer(peer)
            dropped.add(peer)
        elif roll < 0.1 and peer != "honest":
            if plan.stalled(peer):
                dropped.add(peer)
        elif cid in holdings[peer]:
            cancels = plan.received(peer, cid)
            assert cid not in got
            got.add(cid)
            assert all(c.cid == cid and c.peer != peer for c in cancels)
        else:
            plan.not_found(peer, cid)
    assert plan.done
    assert got == set(CIDS[:blocks])


def test_a_have_makes_a_peer_eligible_again_for_a_block_it_lacked() -> None:
    plan = plan_with(["a", "b"], 1, window=1)
    (first,) = plan.next_requests()
    plan.not_found(first.peer, first.cid)
    other = "b" if first.peer == "a" else "a"
    (second,) = plan.next_requests()
    assert second == Request(other, first.cid)
    assert plan.have(other, first.cid) is False  # it never said it lacked it
    assert plan.have(first.peer, first.cid) is True
    assert first.cid not in plan.missing_at(first.peer)
    assert plan.have(first.peer, first.cid) is False  # once
    plan.received(other, first.cid)
    assert plan.done
    assert plan.have("nobody", first.cid) is False


def test_downloaders_are_guessed_at_by_at_most_blind_asks_peers_per_block() -> None:
    plan = FetchPlan(window=1, blind_asks=2, endgame_copies=1)
    for peer in ("a", "b", "c", "seed"):
        plan.add_peer(peer)
    # a, b and c say NOT_FOUND for block 0: they are downloaders; the seed serves it
    plan.want(CIDS[0])
    asked = set()
    while not plan.done:
        (request,) = plan.next_requests()
        if request.peer == "seed":
            plan.received("seed", CIDS[0])
        else:
            asked.add(request.peer)
            plan.not_found(request.peer, CIDS[0])
    assert asked == {"a", "b", "c"}
    # the seed is busy with block 1; block 2 may be guessed at only by two downloaders
    plan.want(CIDS[1])
    plan.want(CIDS[2])
    first = plan.next_requests()
    assert Request("seed", CIDS[1]) in first  # a peer that never said NOT_FOUND comes first
    guesses = []
    for _ in range(3):
        for request in plan.next_requests() + [r for r in first if r.cid == CIDS[2]]:
            guesses.append(request.peer)
            plan.not_found(request.peer, request.cid)
        first = []
    assert len(guesses) == 2 and "seed" not in guesses
    assert plan.next_requests() == []  # the third downloader is not guessed at; the seed is full
    assert plan.unavailable() == []  # the seed may still give it
    # a HAVE makes a downloader a sure source again, whatever the count
    assert plan.have(guesses[0], CIDS[2]) is True
    assert plan.next_requests() == [Request(guesses[0], CIDS[2])]
