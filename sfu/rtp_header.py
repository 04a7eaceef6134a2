"""RTP wire format for forwarding: read the few fields we need, write a rewritten header.

Pure functions over bytes (RFC 3550, RFC 8285 one-byte extensions, RFC 7741 VP8
payload descriptor); nothing here decodes media.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

ONE_BYTE_EXTENSION_PROFILE = 0xBEDE
HEADER = struct.Struct("!BBHII")
"""The fixed 12 bytes of an RTP header without CSRCs: V/P/X/CC, M/PT, sequence, timestamp, SSRC."""
FIXED_HEADER = struct.Struct("!BBHI")
"""The first 8 bytes of an RTP header, as a reader wants them: V/P/X/CC, M/PT, sequence, timestamp."""


class RtpView(NamedTuple):
    """The fields of one RTP packet that forwarding needs, without copying the payload."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    payload_start: int
    payload_end: int


def parse(packet: bytes) -> RtpView | None:
    """Read an RTP header; None if the packet is malformed or carries no payload (padding only)."""
    size = len(packet)
    if size < 12:
        return None
    first, second, sequence, timestamp, _ = HEADER.unpack_from(packet)
    if first >> 6 != 2:
        return None
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if start + 4 > size:
            return None
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    end = size - packet[-1] if first & 0x20 else size
    if start >= end:
        return None
    return RtpView(bool(second & 0x80), second & 0x7F, sequence, timestamp, start, end)


def extension_value(packet: bytes, extension_id: int) -> bytes | None:
    """The value of one one-byte header extension element, if present."""
    first = packet[0]
    if not first & 0x10:
        return None
    offset = 12 + 4 * (first & 0x0F)
    if len(packet) < offset + 4 or int.from_bytes(packet[offset : offset + 2], "big") != ONE_BYTE_EXTENSION_PROFILE:
        return None
    end = offset + 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    position = offset + 4
    end = min(end, len(packet))
    while position < end:
        byte = packet[position]
        if byte == 0:
            position += 1
            continue
        element_id, length = byte >> 4, (byte & 0x0F) + 1
        if element_id == 15:
            return None
        if element_id == extension_id:
            return packet[position + 1 : position + 1 + length]
        position += 1 + length
    return None


def extension_block(elements: list[tuple[int, bytes]]) -> bytes:
    """A one-byte-header extension block (RFC 8285) holding `elements`, padded to 32 bits."""
    body = b"".join(bytes([(element_id << 4) | (len(value) - 1)]) + value for element_id, value in elements)
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", ONE_BYTE_EXTENSION_PROFILE, len(body) // 4) + body


def vp8_keyframe_start(payload: memoryview | bytes) -> bool:
    """True if this VP8 payload (RFC 7741) is the first packet of a keyframe."""
    if len(payload) < 2:
        return False
    descriptor = payload[0]
    if not descriptor & 0x10 or descriptor & 0x07:
        return False
    index = 1
    if descriptor & 0x80:
        extended = payload[1]
        index = 2
        if extended & 0x80:
            if index >= len(payload):
                return False
            index += 2 if payload[index] & 0x80 else 1
        if extended & 0x40:
            index += 1
        if extended & 0x30:
            index += 1
    return index < len(payload) and not payload[index] & 0x01


def audio_level(value: bytes | None) -> int | None:
    """The RFC 6464 audio level (0 loudest .. 127 silent) of an ssrc-audio-level value."""
    if not value:
        return None
    return value[0] & 0x7F
