"""Reading the RTCP a peer sends, for only what the SFU acts on.

A compound RTCP packet (RFC 3550) is walked header by header; the SFU looks
into sender reports (for the receiver reports it sends back), PLI and FIR
(RFC 4585, RFC 5104: keyframe requests) and generic NACK (RFC 4585:
retransmission), and builds the generic NACKs the SFU sends publishers for uplink losses
(sfu/nack.py decides which). Everything else (receiver reports, SDES, REMB, BYE, ...) is
skipped without being parsed: aiortc's receivers send several of those a
second per track, and building objects for them cost more than forwarding.
"""

from __future__ import annotations

from collections.abc import Iterator

SENDER_REPORT = 200
TRANSPORT_FEEDBACK = 205  # RTPFB
PAYLOAD_FEEDBACK = 206  # PSFB
NACK = 1  # RTPFB format
PLI = 1  # PSFB format
FIR = 4  # PSFB format


def packets(compound: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(packet type, count or format, start, end) of each packet in `compound`.

    Stops at the first packet that is not version 2 or runs past the end.
    """
    size = len(compound)
    start = 0
    while start + 4 <= size:
        first = compound[start]
        if first >> 6 != 2:
            return
        end = start + 4 * (((compound[start + 2] << 8) | compound[start + 3]) + 1)
        if end > size:
            return
        yield compound[start + 1], first & 0x1F, start, end
        start = end


def media_ssrc(compound: bytes, start: int) -> int:
    """The media source SSRC of a feedback packet (RTPFB or PSFB) starting at `start`."""
    return int.from_bytes(compound[start + 8 : start + 12], "big")


def fir_ssrcs(compound: bytes, start: int, end: int) -> list[int]:
    """The SSRCs a FIR asks keyframes of (one 8-byte entry each)."""
    return [int.from_bytes(compound[offset : offset + 4], "big") for offset in range(start + 12, end - 7, 8)]


def nack_sequences(compound: bytes, start: int, end: int) -> list[int]:
    """The sequence numbers a generic NACK reports lost (packet id plus bitmask per entry)."""
    lost = []
    for offset in range(start + 12, end - 3, 4):
        packet_id = (compound[offset] << 8) | compound[offset + 1]
        bitmask = (compound[offset + 2] << 8) | compound[offset + 3]
        lost.append(packet_id)
        for bit in range(16):
            if bitmask >> bit & 1:
                lost.append((packet_id + bit + 1) & 0xFFFF)
    return lost


def sender_report_ntp_middle(compound: bytes, start: int) -> tuple[int, int]:
    """(sender SSRC, middle 32 bits of the NTP timestamp) of a sender report; the latter is
    what a receiver report echoes as LSR."""
    return int.from_bytes(compound[start + 4 : start + 8], "big"), int.from_bytes(compound[start + 10 : start + 14], "big")


def generic_nack(sender_ssrc: int, media_ssrc: int, sequences: list[int]) -> bytes:
    """A generic NACK (RFC 4585 6.2.1) for `sequences`: one packet id and a 16-bit mask of the
    sixteen numbers after it per entry, in the order the numbers come."""
    entries = bytearray()
    index = 0
    while index < len(sequences):
        packet_id = sequences[index] & 0xFFFF
        bitmask = 0
        index += 1
        while index < len(sequences):
            distance = (sequences[index] - packet_id) & 0xFFFF
            if not 1 <= distance <= 16:
                break
            bitmask |= 1 << (distance - 1)
            index += 1
        entries += packet_id.to_bytes(2, "big") + bitmask.to_bytes(2, "big")
    length = 2 + len(entries) // 4  # in 32-bit words, minus one
    header = bytes([0x80 | NACK, TRANSPORT_FEEDBACK]) + length.to_bytes(2, "big")
    return header + sender_ssrc.to_bytes(4, "big") + media_ssrc.to_bytes(4, "big") + bytes(entries)
