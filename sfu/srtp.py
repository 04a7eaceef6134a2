"""SRTP protect/unprotect for the forwarding hot path.

pylibsrtp's `Session` methods allocate a length cell and check types on every
call; here the same libsrtp session is driven with one preallocated length
cell and buffer. The libsrtp session itself stays owned by aiortc's DTLS
transport (keys, replay windows); this only calls into it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pylibsrtp
from pylibsrtp._binding import ffi, lib

BUFFER_SIZE = 1500
TRAILER_ROOM = 16 + 4 + 10  # auth tag, SRTCP index, and libsrtp's MKI room
_OK = lib.srtp_err_status_ok


class SrtpError(Exception):
    """libsrtp refused a packet (bad authentication, replay, too long)."""


def _operation(function: Any, room: int, doc: str) -> Callable[[FastSrtp, bytes], bytes]:
    """A FastSrtp method running one libsrtp call; built per operation so that the hot
    path makes one Python call per packet, not two."""

    limit = BUFFER_SIZE - room
    ok = _OK

    def run(self: FastSrtp, packet: bytes) -> bytes:
        size = len(packet)
        if size > limit:
            raise SrtpError("packet is too long")
        buffer = self._buffer
        buffer[0:size] = packet
        length = self._length
        length[0] = size
        if function(self._srtp, self._cdata, length) != ok:
            raise SrtpError("libsrtp refused the packet")
        return buffer[0 : length[0]]

    run.__doc__ = doc
    return run


class FastSrtp:
    """Protect and unprotect RTP/RTCP with an existing pylibsrtp session."""

    __slots__ = ("_session", "_srtp", "_cdata", "_buffer", "_length")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # keeps libsrtp's session alive as long as we use it
        self._srtp = session._srtp[0]
        self._cdata = ffi.new("char[]", BUFFER_SIZE)
        self._buffer = ffi.buffer(self._cdata)
        self._length = ffi.new("int *")

    protect = _operation(lib.srtp_protect, TRAILER_ROOM, "SRTP-protect one RTP packet.")
    unprotect = _operation(lib.srtp_unprotect, 0, "Check and decrypt one SRTP packet.")
    protect_rtcp = _operation(lib.srtp_protect_rtcp, TRAILER_ROOM, "SRTCP-protect one compound RTCP packet.")
    unprotect_rtcp = _operation(lib.srtp_unprotect_rtcp, 0, "Check and decrypt one SRTCP packet.")
