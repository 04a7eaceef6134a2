"""SRTP protect/unprotect for the forwarding hot path.

pylibsrtp's `Session` methods allocate a length cell and check types on every
call; here the same libsrtp session is driven with one preallocated length
cell and buffer. The libsrtp session itself stays owned by aiortc's DTLS
transport (keys, replay windows); this only calls into it.
"""

from __future__ import annotations

import pylibsrtp
from pylibsrtp._binding import ffi, lib

BUFFER_SIZE = 1500
TRAILER_ROOM = 16 + 4 + 10  # auth tag, SRTCP index, and libsrtp's MKI room
_OK = lib.srtp_err_status_ok


class SrtpError(Exception):
    """libsrtp refused a packet (bad authentication, replay, too long)."""


class FastSrtp:
    """Protect and unprotect RTP/RTCP with an existing pylibsrtp session."""

    __slots__ = ("_session", "_srtp", "_cdata", "_buffer", "_length")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # keeps libsrtp's session alive as long as we use it
        self._srtp = session._srtp[0]
        self._cdata = ffi.new("char[]", BUFFER_SIZE)
        self._buffer = ffi.buffer(self._cdata)
        self._length = ffi.new("int *")

    def protect(self, packet: bytes) -> bytes:
        """SRTP-protect one RTP packet."""
        return self._run(lib.srtp_protect, packet, TRAILER_ROOM)

    def unprotect(self, packet: bytes) -> bytes:
        """Check and decrypt one SRTP packet."""
        return self._run(lib.srtp_unprotect, packet, 0)

    def protect_rtcp(self, packet: bytes) -> bytes:
        """SRTCP-protect one compound RTCP packet."""
        return self._run(lib.srtp_protect_rtcp, packet, TRAILER_ROOM)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """Check and decrypt one SRTCP packet."""
        return self._run(lib.srtp_unprotect_rtcp, packet, 0)

    def _run(self, function: object, packet: bytes, room: int) -> bytes:
        size = len(packet)
        if size > BUFFER_SIZE - room:
            raise SrtpError("packet is too long")
        buffer = self._buffer
        buffer[0:size] = packet
        length = self._length
        length[0] = size
        if function(self._srtp, self._cdata, length) != _OK:  # type: ignore[operator]
            raise SrtpError("libsrtp refused the packet")
        return buffer[0 : length[0]]
