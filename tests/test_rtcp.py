"""sfu.rtcp reads what aiortc writes: sender reports, PLI, FIR, NACK; skips the rest; never raises."""

from __future__ import annotations

import struct

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
)
from hypothesis import given
from hypothesis import strategies as st

from sfu import rtcp


def _compound(*packets: object) -> bytes:
    return b"".join(bytes(packet) for packet in packets)  # type: ignore[call-overload]


def test_a_browser_like_compound_is_walked_packet_by_packet() -> None:
    sender_info = RtcpSenderInfo(ntp_timestamp=0x1122334455667788, rtp_timestamp=9, packet_count=3, octet_count=300)
    compound = _compound(
        RtcpSrPacket(ssrc=0xAABBCCDD, sender_info=sender_info),
        RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=0xAABBCCDD, items=[(1, b"cname")])]),
        RtcpRrPacket(ssrc=7, reports=[RtcpReceiverInfo(1, 0, 0, 0, 0, 0, 0)]),
        RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=7, media_ssrc=0, fci=pack_remb_fci(500_000, [1])),
    )
    walked = list(rtcp.packets(compound))
    assert [(packet_type, start) for packet_type, _, start, _ in walked][0] == (rtcp.SENDER_REPORT, 0)
    assert [packet_type for packet_type, *_ in walked] == [200, 202, 201, 206]
    assert walked[-1][3] == len(compound)
    _, _, start, _ = walked[0]
    assert rtcp.sender_report_ntp_middle(compound, start) == (0xAABBCCDD, 0x33445566)


def test_pli_fir_and_nack_name_their_tracks() -> None:
    pli = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=0x01020304))
    fir_fci = struct.pack("!IBBH", 0x0A0B0C0D, 5, 0, 0) + struct.pack("!IBBH", 0x0E0F1011, 6, 0, 0)
    fir = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=0, fci=fir_fci))
    lost = [10, 11, 13, 26, 40]
    nack = bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0x55667788, lost=lost))
    compound = pli + fir + nack
    (pli_type, pli_fmt, pli_start, _), (fir_type, fir_fmt, fir_start, fir_end), (nack_type, nack_fmt, nack_start, nack_end) = rtcp.packets(compound)
    assert (pli_type, pli_fmt) == (rtcp.PAYLOAD_FEEDBACK, rtcp.PLI)
    assert rtcp.media_ssrc(compound, pli_start) == 0x01020304
    assert (fir_type, fir_fmt) == (rtcp.PAYLOAD_FEEDBACK, rtcp.FIR)
    assert rtcp.fir_ssrcs(compound, fir_start, fir_end) == [0x0A0B0C0D, 0x0E0F1011]
    assert (nack_type, nack_fmt) == (rtcp.TRANSPORT_FEEDBACK, rtcp.NACK)
    assert rtcp.media_ssrc(compound, nack_start) == 0x55667788
    assert sorted(rtcp.nack_sequences(compound, nack_start, nack_end)) == sorted(lost)
    # aiortc reads the same NACK the same way.
    assert sorted(RtcpRtpfbPacket.parse(nack[4:], 1).lost) == sorted(lost)


def test_a_nack_bitmask_wraps_past_65535() -> None:
    nack = struct.pack("!BBHII", 0x80 | rtcp.NACK, rtcp.TRANSPORT_FEEDBACK, 3, 1, 2) + struct.pack("!HH", 65535, 0b101)
    assert rtcp.nack_sequences(nack, 0, len(nack)) == [65535, 0, 2]


def test_a_packet_running_past_the_end_or_not_version_2_stops_the_walk() -> None:
    pli = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=2))
    assert len(list(rtcp.packets(pli + pli[:-1]))) == 1
    assert list(rtcp.packets(b"\x40" + pli[1:])) == []
    assert list(rtcp.packets(b"")) == []


@given(st.binary(max_size=200))
def test_any_bytes_are_walked_without_error_and_within_bounds(data: bytes) -> None:
    for packet_type, _, start, end in rtcp.packets(data):
        assert 0 <= start < end <= len(data)
        if end - start >= 12:
            rtcp.media_ssrc(data, start)
            rtcp.fir_ssrcs(data, start, end)
            assert all(0 <= sequence <= 0xFFFF for sequence in rtcp.nack_sequences(data, start, end))
        if packet_type == rtcp.SENDER_REPORT and end - start >= 28:
            rtcp.sender_report_ntp_middle(data, start)


def test_the_peer_acts_on_pli_fir_and_nack_and_remembers_sender_reports() -> None:
    """MediaPeer._receive_rtcp with real SRTCP: keyframe requests reach the leg's source,
    NACKed packets are sent again from the history, and an SR is kept for the next RR."""
    import os

    import pylibsrtp

    from sfu.forward import Leg
    from sfu.peer import MediaPeer, surveillant_layout
    from sfu.srtp import FastSrtp

    key = os.urandom(30)

    def session(direction: int) -> FastSrtp:
        policy = pylibsrtp.Policy(key=key, ssrc_type=direction)
        policy.allow_repeat_tx = True
        return FastSrtp(pylibsrtp.Session(policy))

    class Source:
        kind = "video"
        leg = None
        asked = 0

        def request_keyframe(self) -> None:
            self.asked += 1

    sent: list[bytes] = []
    peer = MediaPeer("p-test", surveillant_layout(1), ice_servers=())
    peer.resend_rtp = sent.append  # type: ignore[method-assign]
    leg = Leg(peer, "video", 0x1111, 96, None, None, None)
    source = Source()
    leg.source = source  # type: ignore[assignment]
    leg.started = True
    peer._legs_by_ssrc[leg.ssrc] = leg
    for sequence in (100, 101):
        leg._history[sequence % 256] = struct.pack("!BBHII", 0x80, 96, sequence, 0, leg.ssrc)
    browser, server = session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND), session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    sender_info = RtcpSenderInfo(ntp_timestamp=0x1122334455667788, rtp_timestamp=0, packet_count=0, octet_count=0)
    fir_fci = struct.pack("!IBBH", leg.ssrc, 1, 0, 0) + struct.pack("!IBBH", 0x9999, 1, 0, 0)
    compound = _compound(
        RtcpSrPacket(ssrc=0xABCD, sender_info=sender_info),
        RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=leg.ssrc),
        RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=0x9999),
        RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=0, fci=fir_fci),
        RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=leg.ssrc, lost=[100, 101, 102]),
    )
    peer._receive_rtcp(server, browser.protect_rtcp(compound))
    assert source.asked == 2  # the PLI and the FIR entry for this leg; unknown SSRCs are ignored
    assert [int.from_bytes(packet[2:4], "big") for packet in sent] == [100, 101]  # 102 was never sent
    assert peer._last_sender_report[0xABCD][0] == 0x33445566
    peer._receive_rtcp(server, b"\x80\xc8" + bytes(40))  # not authentic: ignored
    assert source.asked == 2
