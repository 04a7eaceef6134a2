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
_unprotect = lib.srtp_unprotect
_protect = lib.srtp_protect


def _native_address(name: str) -> int | None:
    """Where libsrtp's `name` is, for native code that calls it on our sessions (sfu/_lane.c):
    only if it has libsrtp 2's signature, which that code assumes (libsrtp 3 changed it)."""
    function = ffi.addressof(lib, name)
    if ffi.typeof(function).cname != "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)":
        return None
    return int(ffi.cast("uintptr_t", function))


UNPROTECT_ADDRESS = _native_address("srtp_unprotect")
PROTECT_ADDRESS = _native_address("srtp_protect")
_PROTECT_LIMIT = BUFFER_SIZE - TRAILER_ROOM


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


class DatagramBuffer:
    """Memory a reader receives datagrams into, so that SRTP can decrypt them where they landed.

    What it holds is valid only until the next datagram is read into it.
    """

    __slots__ = ("cdata", "writable", "memory")

    def __init__(self, size: int) -> None:
        self.cdata = ffi.new("char[]", size)
        self.writable = ffi.buffer(self.cdata)
        self.memory = memoryview(self.writable)


class FastSrtp:
    """Protect and unprotect RTP/RTCP with an existing pylibsrtp session."""

    __slots__ = ("_session", "_srtp", "_cdata", "_buffer", "_memory", "_length")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # keeps libsrtp's session alive as long as we use it
        self._srtp = session._srtp[0]
        self._cdata = ffi.new("char[]", BUFFER_SIZE)
        self._buffer = ffi.buffer(self._cdata)
        self._memory = memoryview(self._buffer)
        self._length = ffi.new("int *")

    @property
    def address(self) -> int:
        """The libsrtp session (`srtp_t`), for native code; valid while this object lives."""
        return int(ffi.cast("uintptr_t", self._srtp))

    def unprotect_in_place(self, datagram: DatagramBuffer, size: int) -> int:
        """Check and decrypt the SRTP packet in `datagram`'s first `size` bytes; return its new size."""
        length = self._length
        length[0] = size
        if _unprotect(self._srtp, datagram.cdata, length) != _OK:
            raise SrtpError("libsrtp refused the packet")
        return length[0]

    def protect_joined(self, header: bytes | bytearray, payload: memoryview) -> bytes:
        """SRTP-protect the RTP packet `header` + `payload`, joined where libsrtp works."""
        size = len(header)
        total = size + len(payload)
        if total > _PROTECT_LIMIT:
            raise SrtpError("packet is too long")
        memory = self._memory
        memory[0:size] = header
        memory[size:total] = payload
        length = self._length
        length[0] = total
        if _protect(self._srtp, self._cdata, length) != _OK:
            raise SrtpError("libsrtp refused the packet")
        return self._buffer[0 : length[0]]

    protect = _operation(lib.srtp_protect, TRAILER_ROOM, "SRTP-protect one RTP packet.")
    protect_rtcp = _operation(lib.srtp_protect_rtcp, TRAILER_ROOM, "SRTCP-protect one compound RTCP packet.")
    unprotect_rtcp = _operation(lib.srtp_unprotect_rtcp, 0, "Check and decrypt one SRTCP packet.")
