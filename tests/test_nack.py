"""Upstream repair without a network: the NACK generator on recorded sequences, the NACKs the
SFU builds, a publication that asks for lost packets (RTX or plain) and forwards the repair in
its place, and keyframe requests that wait for the limiter's window instead of being dropped."""

from __future__ import annotations

import asyncio

from sfu import rtcp
from sfu.forward import Leg
from sfu.keyframes import KeyframeLimiter
from sfu.nack import NackGenerator
from sfu.publication import Publication
from sfu.rtp_header import parse

from tests.test_forward_units import VP8_CONTINUATION, VP8_KEY_START, Publisher, Sink, rtp

RTX_PAYLOAD_TYPE = 97


def replay(generator: NackGenerator, events: list[tuple[float, str, int, int]]) -> list[tuple[float, list[int], bool]]:
    """Feed recorded (time, 'gap'|'got'|'tick', first, count) events; what `due` said at each."""
    said = []
    for now, what, first, count in events:
        if what == "gap":
            if not generator.gap(first, count, now):
                said.append((now, [], True))
                continue
        elif what == "got":
            generator.received(first, now)
        said.append((now, *generator.due(now)))
    return said


def test_a_gap_is_nacked_at_once_and_a_repair_ends_it() -> None:
    generator = NackGenerator(rtt=0.1, margin=0.03)
    said = replay(generator, [(0.0, "gap", 100, 2), (0.05, "tick", 0, 0), (0.08, "got", 100, 0), (0.09, "got", 101, 0)])
    assert said == [(0.0, [100, 101], False), (0.05, [], False), (0.08, [], False), (0.09, [], False)]
    assert generator.missing == {} and generator.repaired == 2 and generator.given_up == 0
    assert generator.next_deadline() is None
    # The round trip of the repair (80 and 90 ms) pulls the estimate down from 100 ms.
    assert 0.09 < generator.rtt < 0.1


def test_an_unanswered_nack_is_retried_after_a_round_trip_and_then_given_up() -> None:
    generator = NackGenerator(rtt=0.1, margin=0.03, max_nacks=3)
    said = replay(generator, [
        (0.0, "gap", 0xFFFF, 2),  # wraps: 65535 and 0
        (0.12, "tick", 0, 0),  # before rtt + margin: nothing
        (0.13, "tick", 0, 0),  # the first retry
        (0.26, "got", 0, 0),  # 0 came; 65535 is asked for the third time
        (0.38, "tick", 0, 0),
        (0.39, "tick", 0, 0),  # asked three times, unanswered: a keyframe instead
    ])
    assert said == [
        (0.0, [0xFFFF, 0], False),
        (0.12, [], False),
        (0.13, [0xFFFF, 0], False),
        (0.26, [0xFFFF], False),
        (0.38, [], False),
        (0.39, [], True),
    ]
    assert generator.missing == {} and generator.given_up == 1 and generator.nacked == 5


def test_a_gap_too_large_to_repair_gives_up_at_once() -> None:
    generator = NackGenerator(max_gap=64)
    assert generator.gap(10, 64, 0.0)
    assert not generator.gap(200, 65, 0.01)
    assert generator.missing == {} and generator.given_up == 1
    # Nor may the pending list grow without bound, one small gap after another.
    generator = NackGenerator(max_gap=64, max_pending=100)
    assert all(generator.gap(first, 50, 0.0) for first in (0, 100))
    assert not generator.gap(200, 1, 0.0) and generator.missing == {}


def test_duplicates_and_packets_given_up_on_are_not_waited_for() -> None:
    generator = NackGenerator()
    generator.gap(5, 1, 0.0)
    generator.due(0.0)
    assert generator.received(5, 0.05)
    assert not generator.received(5, 0.06)  # the second retransmission of the same packet
    assert not generator.received(4, 0.07)  # never missing
    generator.gap(9, 1, 0.1)
    generator.give_up()
    assert not generator.received(9, 0.2)


def test_a_reordered_packet_measures_no_round_trip() -> None:
    generator = NackGenerator(rtt=0.1)
    generator.gap(7, 1, 0.0)  # not asked for yet: arrives before `due`
    assert generator.received(7, 0.001)
    assert generator.rtt == 0.1


def test_generic_nacks_round_trip_through_the_parser() -> None:
    for sequences in ([5], [5, 6, 21], [5, 22], [0xFFFE, 0xFFFF, 0, 3], list(range(100, 150))):
        packet = rtcp.generic_nack(0xAAAA, 0xBBBB, sequences)
        [(packet_type, fmt, start, end)] = list(rtcp.packets(packet))
        assert (packet_type, fmt, end) == (rtcp.TRANSPORT_FEEDBACK, rtcp.NACK, len(packet))
        assert rtcp.media_ssrc(packet, start) == 0xBBBB
        assert rtcp.nack_sequences(packet, start, end) == sequences
    # One entry carries a packet id and the sixteen after it.
    assert len(rtcp.generic_nack(1, 2, list(range(17)))) == 16


def test_a_keyframe_request_inside_the_window_waits_for_its_end() -> None:
    limiter = KeyframeLimiter(interval=0.5)
    assert limiter.wait(10.0) == 0.0
    assert abs(limiter.wait(10.2) - 0.3) < 1e-9
    assert limiter.wait(10.5) == 0.0 and limiter.sent == 2


class Nacks:
    def __init__(self) -> None:
        self.sent: list[tuple[int, list[int]]] = []

    def __call__(self, ssrc: int, sequences: list[int]) -> None:
        self.sent.append((ssrc, sequences))


def repairing(rtx: bool = False) -> tuple[Publication, Publisher, Nacks, Sink]:
    publisher, nacks, sink = Publisher(), Nacks(), Sink()
    pub = Publication("webcam", "video", 96, None, request_keyframe=publisher, send_nack=nacks)
    pub.ssrc = 0x1111
    if rtx:
        pub.rtx_payload_type = RTX_PAYLOAD_TYPE
    leg = Leg(sink, "video", ssrc=1, payload_type=100, mid=None, mid_id=None, abs_send_time_id=None)
    leg.attach(pub)
    publisher.requests.clear()  # the keyframe a new leg asks for, and its limiter window
    pub.keyframes = KeyframeLimiter()
    return pub, publisher, nacks, sink


def rtx_of(original: bytes, rtx_sequence: int) -> bytes:
    """`original` as its publisher retransmits it with RTX: own SSRC, payload type and sequence."""
    view = parse(original)
    assert view is not None
    return rtp(rtx_sequence, view.timestamp, original[2:4] + original[view.payload_start : view.payload_end],
               marker=view.marker, payload_type=RTX_PAYLOAD_TYPE, ssrc=0x2222, padding=3)


def test_a_lost_packet_is_nacked_and_its_retransmission_goes_out_in_its_place() -> None:
    for rtx in (False, True):
        pub, publisher, nacks, sink = repairing(rtx)
        packets = [rtp(10, 100, VP8_KEY_START)] + [rtp(10 + i, 100, VP8_CONTINUATION + bytes([i])) for i in range(1, 6)]
        for packet in packets[:2] + packets[4:]:  # 12 and 13 lost
            pub.receive(packet)
        assert nacks.sent == [(0x1111, [12, 13])]
        assert publisher.requests == [] and pub.stats.lost == 2
        pub.receive(rtx_of(packets[3], 500) if rtx else packets[3])
        pub.receive(rtx_of(packets[2], 501) if rtx else packets[2])
        pub.receive(rtx_of(packets[2], 502) if rtx else packets[2])  # answered twice: sent once
        assert publisher.requests == [] and pub.stats.lost == 0
        out = [parse(packet) for packet in sink.sent]
        # The leg's numbers follow the publisher's: the repairs fill the hole, late.
        assert [view.sequence for view in out] == [1, 2, 5, 6, 4, 3]
        assert [packet[view.payload_start:] for packet, view in zip(sink.sent, out)] == [
            packets[i][12:] for i in (0, 1, 4, 5, 3, 2)
        ]
        assert pub.leg is not None and pub.leg._last_sequence == 6


def test_a_gap_too_large_asks_for_a_keyframe_instead() -> None:
    pub, publisher, nacks, _ = repairing()
    pub.receive(rtp(10, 100, VP8_KEY_START))
    pub.receive(rtp(100, 200, VP8_CONTINUATION))
    assert nacks.sent == [] and publisher.requests == [0x1111]


async def test_an_unanswered_nack_ends_in_one_keyframe_request() -> None:
    pub, publisher, nacks, _ = repairing()
    assert pub.nacks is not None
    pub.nacks.rtt, pub.nacks.margin = 0.01, 0.005
    pub.receive(rtp(10, 100, VP8_KEY_START))
    pub.receive(rtp(12, 100, VP8_CONTINUATION))
    await asyncio.sleep(0.2)
    assert nacks.sent == [(0x1111, [11])] * 3
    assert publisher.requests == [0x1111]
    pub.close()


async def test_a_keyframe_request_inside_the_limit_is_sent_when_it_ends() -> None:
    pub, publisher, _, _ = repairing()
    pub.keyframes = KeyframeLimiter(interval=0.1)
    pub.request_keyframe()
    pub.request_keyframe()  # inside the window: deferred, not dropped
    pub.request_keyframe()  # one deferred request covers both
    assert publisher.requests == [0x1111]
    await asyncio.sleep(0.2)
    assert publisher.requests == [0x1111, 0x1111]
    pub.close()


def test_a_repair_older_than_the_history_does_not_push_out_a_newer_packet() -> None:
    pub, _, _, sink = repairing()
    assert pub.nacks is not None and pub.leg is not None
    pub.nacks.max_gap = pub.nacks.max_pending = 1000  # only to reach this case
    pub.receive(rtp(10, 100, VP8_KEY_START))
    for sequence in range(12, 12 + 300):
        pub.receive(rtp(sequence, 100 + sequence, VP8_CONTINUATION))
    newer = pub.leg._history[2 % 256]  # sequence 11 would go out as the leg's 2, in 258's place
    assert newer is not None and parse(newer).sequence == 258
    pub.receive(rtp(11, 100, VP8_CONTINUATION))
    assert parse(sink.sent[-1]).sequence == 2  # still forwarded, in its place
    assert pub.leg._history[2 % 256] is newer


async def test_one_retry_timer_per_track_however_many_gaps() -> None:
    pub, _, nacks, _ = repairing()
    pub.receive(rtp(10, 100, VP8_KEY_START))
    for sequence in range(12, 40, 2):  # every other packet lost: a gap each time
        pub.receive(rtp(sequence, 100, VP8_CONTINUATION))
    loop = asyncio.get_running_loop()
    pending = [handle for handle in loop._scheduled if not handle.cancelled()]  # type: ignore[attr-defined]
    assert len(pending) == 1 and len(nacks.sent) == 14
    pub.close()
    assert not [handle for handle in loop._scheduled if not handle.cancelled()]  # type: ignore[attr-defined]
