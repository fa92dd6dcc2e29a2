"""The block exchange's session rules without an event loop: bytes and events in, frames and decisions
out (protocol/exchange_server.py, protocol/exchange_asker.py). The clock is a number the test passes."""

from __future__ import annotations

import pytest

from protocol.cid import CID_PREFIX, cid_of, cid_to_text
from protocol.exchange_asker import (
    COMMIT_EVERY,
    OPENED,
    Asker,
    Broken,
    Corrupt,
    StoreBlock,
    Stored,
)
from protocol.exchange_server import ServerRules
from protocol.fetch_plan import FetchPlan
from protocol.messages import (
    BlockMessage,
    Cancel,
    FrameDecoder,
    Have,
    Message,
    MessageError,
    NotFound,
    Want,
    encode_message,
)

CIDS = [cid_of(b"block %d" % n) for n in range(200)]


def frames(*messages: Message) -> bytes:
    return b"".join(encode_message(m) for m in messages)


def decode(data: bytes) -> list[Message]:
    return list(FrameDecoder().feed(data))


# -- server --------------------------------------------------------------------------------------------


def test_a_server_session_holds_at_most_max_open_and_then_reads_nothing_more() -> None:
    rules = ServerRules(max_open=4)
    session = rules.open_stream("asker")
    assert session is not None
    session.received(frames(*(Want(n, CIDS[n]) for n in range(10))))
    assert session.open == 4 and session.paused
    assert session.take_batch(3) == [(n, CIDS[n]) for n in range(3)]
    session.resume(unread=0)
    assert session.paused  # taken is still open: only a written answer makes room
    session.written(0)
    session.resume(unread=0)
    assert session.open == 4 and session.paused
    for request in (1, 2):
        session.written(request)
    session.resume(unread=0)
    assert session.open == 4 and list(session.queue) == [3, 4, 5, 6]


def test_a_paused_server_session_refuses_a_backlog_past_its_cap() -> None:
    rules = ServerRules(max_open=1, max_backlog=100)
    session = rules.open_stream("asker")
    assert session is not None
    session.received(frames(Want(0, CIDS[0]), Want(1, CIDS[1])))
    session.resume(unread=100)
    with pytest.raises(MessageError, match="over 100 bytes of requests wait unread behind 1 open"):
        session.resume(unread=101)


def test_a_request_id_already_open_and_a_reply_from_the_asker_are_protocol_errors() -> None:
    session = ServerRules().open_stream("asker")
    assert session is not None
    with pytest.raises(MessageError, match="request id 7 is already open"):
        session.received(frames(Want(7, CIDS[0]), Want(7, CIDS[1])))
    other = ServerRules().open_stream("asker")
    assert other is not None
    with pytest.raises(MessageError, match="a client sent a reply"):
        other.received(frames(NotFound(1)))


def test_a_cancel_removes_a_queued_request_and_frees_one_being_answered() -> None:
    session = ServerRules().open_stream("asker")
    assert session is not None
    session.received(frames(Want(1, CIDS[1]), Want(2, CIDS[2])))
    assert session.take_batch(1) == [(1, CIDS[1])]
    session.received(frames(Cancel(2), Cancel(1)))
    assert session.open == 0 and not session.queue


def test_a_stream_that_ends_inside_a_frame_is_reported() -> None:
    session = ServerRules().open_stream("asker")
    assert session is not None
    whole = encode_message(Want(1, CIDS[1]))
    session.received(whole + whole[:10])
    assert session.end() is False
    clean = ServerRules().open_stream("asker")
    assert clean is not None
    clean.received(whole)
    assert clean.end() is True and not clean.done  # request 1 is still to answer
    clean.take_batch(4)
    assert clean.done


def test_streams_past_the_caps_are_refused_and_their_places_freed_on_close() -> None:
    rules = ServerRules(max_streams=3, max_streams_per_peer=2)
    a1, a2, a3 = (rules.open_stream("a") for _ in range(3))
    assert a1 is not None and a2 is not None and a3 is None
    b1, b2 = rules.open_stream("b"), rules.open_stream("b")
    assert b1 is not None and b2 is None
    assert rules.refused_streams == 2 and rules.open_streams == 3
    rules.close_stream(a1)
    assert rules.open_stream("b") is not None


def test_not_found_is_remembered_within_the_caps_and_a_have_follows_once_the_block_is_stored() -> None:
    rules = ServerRules(max_waiting=3, max_waiting_total=4)
    first, second = rules.open_stream("a"), rules.open_stream("b")
    assert first is not None and second is not None
    for n in range(5):
        first.not_found(n, CIDS[n])
    assert list(first.remembered) == [2, 3, 4] and rules.waiting == 3  # its own oldest forgotten
    second.not_found(10, CIDS[10])  # the total is reached now
    second.not_found(11, CIDS[11])  # so a stream makes room by forgetting its own oldest
    assert rules.waiting == 4 and list(second.remembered) == [11] and list(first.remembered) == [2, 3, 4]
    third = rules.open_stream("c")
    assert third is not None
    third.not_found(20, CIDS[20])  # holding none, it remembers nothing
    assert not third.remembered and rules.waiting == 4
    digest = CIDS[4][len(CID_PREFIX) :]
    assert rules.stored({digest}) == [first]
    assert first.haves_due and decode(b"".join(first.take_haves())) == [Have(4)]
    assert first.take_haves() == [] and rules.waiting == 3
    for session in (first, second, third):
        rules.close_stream(session)
    assert rules.waiting == 0


# -- asker ---------------------------------------------------------------------------------------------


def started(peers: list[str], cids: list[bytes], *, window: int = 4, now: float = 0.0) -> Asker:
    asker = Asker(FetchPlan(window=window), now=now, request_timeout=10.0)
    asker.want(cids, held=[])
    for peer in peers:
        assert asker.dialing(peer)
        asker.connected(peer, now)
        assert asker.handle(peer, OPENED, now).close == []
    return asker


def wants(asker: Asker, now: float = 0.0) -> dict[str, list[Want]]:
    out: dict[str, list[Want]] = {}
    for peer, data in asker.requests(now):
        out[peer] = [m for m in decode(data) if isinstance(m, Want)]
    return out


def test_requests_are_numbered_per_stream_and_sent_as_one_piece_per_peer() -> None:
    asker = started(["p"], CIDS[:6], window=4)
    sent = wants(asker)
    assert [(w.request, w.cid) for w in sent["p"]] == [(n, CIDS[n]) for n in range(4)]
    assert asker.requests(0.0) == []  # the window is full


def test_a_block_read_is_named_for_storing_and_a_stored_block_is_delivered() -> None:
    asker = started(["p"], CIDS[:1])
    (want,) = wants(asker)["p"]
    reader = asker.reader("p")
    (decision,) = reader.feed(encode_message(BlockMessage(want.request, b"data")))
    assert decision == StoreBlock(CIDS[0], BlockMessage(want.request, b"data"))
    actions = asker.handle("p", Stored(want.request, 4), now=0.1)
    assert actions.delivered == (CIDS[0], "p", 4) and actions.close == []
    assert asker.done and asker.stats.blocks == 1 and asker.stats.bytes == 4


def test_a_block_for_no_open_request_is_passed_on_and_drops_the_peer() -> None:
    asker = started(["p"], CIDS[:1])
    wants(asker)
    (message,) = asker.reader("p").feed(encode_message(BlockMessage(99, b"x")))
    assert message == BlockMessage(99, b"x")
    assert asker.handle("p", message, 0.0).close == ["p"]
    assert asker.stats.dropped == {"p"}


def test_a_corrupt_block_or_a_broken_stream_drops_the_peer_with_a_note() -> None:
    asker = started(["p", "q"], CIDS[:2], window=1)
    sent = wants(asker)
    actions = asker.handle("p", Corrupt(sent["p"][0].request, 10), 0.0)
    assert actions.close == ["p"] and "p sent a corrupted block" in actions.notes[0]
    actions = asker.handle("q", Broken("the stream ended inside a frame"), 0.0)
    assert actions.close == ["q"] and "the stream ended inside a frame" in actions.notes[0]
    assert asker.stats.dropped == {"p", "q"}
    assert (
        asker.failure()
        == f"no peer could provide block {cid_to_text(CIDS[1])}: every peer failed or lacks it"
    )


def test_not_found_then_have_makes_the_peer_a_source_again() -> None:
    asker = started(["p"], CIDS[:1])
    (want,) = wants(asker)["p"]
    assert asker.handle("p", NotFound(want.request), 0.0).close == []
    assert wants(asker) == {}
    assert asker.failure() == f"no peer has block {cid_to_text(CIDS[0])}"
    asker.handle("p", Have(want.request), 1.0)
    assert asker.stats.haves == 1
    (again,) = wants(asker, 1.0)["p"]
    assert again.cid == CIDS[0] and again.request != want.request
    asker.handle("p", Have(12345), 1.0)  # a HAVE for nothing known is ignored
    assert asker.stats.haves == 1


def test_a_silent_peer_stalls_at_its_deadline_and_late_answers_are_ignored() -> None:
    asker = started(["slow", "fast"], CIDS[:2], window=1, now=0.0)
    sent = wants(asker, now=0.0)
    assert asker.deadline() == 10.0
    asker.handle("fast", Stored(sent["fast"][0].request, 1), now=4.0)
    assert asker.timer(9.9).notes == []
    actions = asker.timer(10.0)
    assert actions.notes == ["slow answered nothing for 10 s; asking others"] and actions.close == []
    (retry,) = wants(asker, 10.0)["fast"]
    assert retry.cid == sent["slow"][0].cid
    late = asker.handle("slow", Stored(sent["slow"][0].request, 1), now=11.0)
    assert late.close == [] and late.delivered is None  # answered after it gave up: ignored


def test_a_peer_answering_steadily_is_not_stalled() -> None:
    asker = started(["p"], CIDS[:40], window=4)
    now = 0.0
    sent = wants(asker, now)["p"]
    for _ in range(30):
        now += 9.0  # each answer within the timeout of the one before
        asker.handle("p", Stored(sent.pop(0).request, 1), now)
        assert asker.timer(now).notes == []
        sent += wants(asker, now).get("p", [])
    assert asker.deadline() == now + 10.0


def test_commits_come_every_batch_of_blocks_or_every_second() -> None:
    asker = started(["p"], CIDS[: COMMIT_EVERY + 1], window=COMMIT_EVERY + 1)
    sent = wants(asker)["p"]
    commits = [asker.handle("p", Stored(w.request, 1), now=0.5).commit for w in sent[:COMMIT_EVERY]]
    assert commits == [False] * (COMMIT_EVERY - 1) + [True]
    assert asker.handle("p", Stored(sent[COMMIT_EVERY].request, 1), now=1.6).commit


def test_the_endgame_cancels_the_other_copy_and_ignores_its_late_answer() -> None:
    asker = started(["p", "q"], CIDS[:1], window=2)
    sent = wants(asker)
    assert sent["p"][0].cid == sent["q"][0].cid == CIDS[0]
    actions = asker.handle("p", Stored(sent["p"][0].request, 1), 0.0)
    ((peer, frame),) = actions.send
    assert peer == "q" and decode(frame) == [Cancel(sent["q"][0].request)]
    assert asker.handle("q", NotFound(sent["q"][0].request), 0.0).close == []


def test_unreachable_providers_are_named_as_such() -> None:
    asker = Asker(FetchPlan(), now=0.0)
    asker.want(CIDS[:2], held=[CIDS[1]])
    assert asker.stats.already_held == 1
    for peer in ("a", "b"):
        asker.dialing(peer)
        asker.unreachable(peer)
        asker.handle(peer, None, 0.0)
    assert not asker.dialing("a")  # a peer is dialed once per fetch
    assert asker.failure() == "cannot reach the 2 peer(s) that hold it: no connection or no answer"


def test_a_write_that_fails_gives_the_peers_requests_to_others() -> None:
    asker = started(["p", "q"], CIDS[:2], window=1)
    sent = wants(asker)
    assert asker.write_failed("p").close == ["p"]
    assert asker.stats.dropped == set()
    asker.handle("q", Stored(sent["q"][0].request, 1), 0.0)
    assert wants(asker)["q"][0].cid == sent["p"][0].cid
