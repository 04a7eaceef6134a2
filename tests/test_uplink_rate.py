"""The bit rate a publisher is told (REMB): the loss-based estimate on recorded report
intervals, and a publication's own count of what came in order and what was lost."""

from __future__ import annotations

from sfu.uplink_rate import MAX_BITRATE, MIN_BITRATE, UplinkRate
from tests.test_nack import repairing
from tests.test_forward_units import VP8_CONTINUATION, VP8_KEY_START, rtp


def replay(intervals: list[tuple[int, int]], start: int = MAX_BITRATE) -> list[int]:
    rate = UplinkRate(start)
    return [rate.update(received, lost) for received, lost in intervals]


def test_a_clean_link_keeps_the_ceiling_and_grows_back_to_it() -> None:
    assert replay([(100, 0)] * 3) == [MAX_BITRATE] * 3  # as before: 3 Mbps
    assert replay([(100, 1)] * 3, start=1_000_000) == [1_080_000, 1_166_400, 1_259_712]


def test_heavy_loss_shrinks_by_half_the_loss_and_moderate_loss_holds() -> None:
    # 20% lost: x0.9 a report; 5% (random Wi-Fi loss, repaired by NACK): hold.
    assert replay([(80, 20), (80, 20), (95, 5), (95, 5)]) == [2_700_000, 2_430_000, 2_430_000, 2_430_000]


def test_the_estimate_stays_between_floor_and_ceiling_and_ignores_thin_intervals() -> None:
    assert replay([(10, 90)] * 40)[-1] == MIN_BITRATE
    assert replay([(5, 10), (0, 0)]) == [MAX_BITRATE, MAX_BITRATE]  # too few packets to judge


def test_repairs_count_as_neither_arrived_nor_lost_on_the_uplink() -> None:
    pub, _, _, _ = repairing()
    packets = [rtp(10, 100, VP8_KEY_START)] + [rtp(10 + i, 100, VP8_CONTINUATION) for i in range(1, 10)]
    for packet in packets[:3] + packets[5:]:  # 13 and 14 lost
        pub.receive(packet)
    assert pub.arrivals() == (8, 2)
    pub.receive(packets[3])  # 13 repaired: still lost on the way, as far as the link goes
    assert pub.arrivals() == (8, 2) and pub.stats.lost == 1


def test_receiver_reports_say_what_share_was_lost_since_the_last_one() -> None:
    pub, _, _, _ = repairing()
    sequence = 10
    pub.receive(rtp(sequence, 100, VP8_KEY_START))
    for step in [1] * 9 + [3] + [1] * 9:  # 20 came, 2 lost
        sequence += step
        pub.receive(rtp(sequence, 100, VP8_CONTINUATION))
    assert pub.fraction_lost() == 2 * 256 // 22
    for _ in range(10):
        sequence += 1
        pub.receive(rtp(sequence, 100, VP8_CONTINUATION))
    assert pub.fraction_lost() == 0  # a clean interval
    sequence += 5  # 4 lost, 1 came
    pub.receive(rtp(sequence, 100, VP8_CONTINUATION))
    assert pub.fraction_lost() == 4 * 256 // 5
