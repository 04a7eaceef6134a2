"""The lean SRTP wrapper agrees with pylibsrtp and refuses what libsrtp refuses."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest

from sfu.srtp import BUFFER_SIZE, DatagramBuffer, FastSrtp, SrtpError

KEY = os.urandom(30)


def session(direction: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=KEY, ssrc_type=direction)
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


def packet(sequence: int, size: int = 200) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, sequence, sequence * 3000, 0x1234) + bytes(size)


def unprotect(receiver: FastSrtp, data: bytes) -> bytes:
    """Decrypt as the reader does: in the datagram buffer, in place."""
    buffer = DatagramBuffer(2048)
    buffer.memory[: len(data)] = data
    return bytes(buffer.memory[: receiver.unprotect_in_place(buffer, len(data))])


def test_round_trip_matches_pylibsrtp() -> None:
    sender = FastSrtp(session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    reference_receiver = session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    receiver = FastSrtp(session(pylibsrtp.Policy.SSRC_ANY_INBOUND))
    for sequence in range(1, 50):
        plain = packet(sequence)
        protected = sender.protect(plain)
        assert protected != plain and len(protected) > len(plain)
        assert reference_receiver.unprotect(protected) == plain
        assert unprotect(receiver, protected) == plain


def test_tampered_replayed_and_oversized_packets_are_refused() -> None:
    sender = FastSrtp(session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    receiver = FastSrtp(session(pylibsrtp.Policy.SSRC_ANY_INBOUND))
    protected = sender.protect(packet(7))
    tampered = protected[:-1] + bytes([protected[-1] ^ 1])
    with pytest.raises(SrtpError):
        unprotect(receiver, tampered)
    assert unprotect(receiver, protected) == packet(7)
    with pytest.raises(SrtpError):
        unprotect(receiver, protected)  # replay
    with pytest.raises(SrtpError):
        sender.protect(packet(8, BUFFER_SIZE))
    with pytest.raises(SrtpError):
        unprotect(receiver, b"\x80" * 20)
