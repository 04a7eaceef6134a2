"""Lanes: the steady state of a route forwarded by native code (sfu/_lane.c).

Once a publication's leg has started (it waits in Python for a keyframe), the
peer opens a lane for it. The lane decrypts, counts, rewrites and encrypts each
packet in one call. The counters it updates are the TrackStats' and the Leg's own
(their bases, TrackCounters and LegCounters, are C fields when the extension is
built), so the Python path and every reader see one copy. Any packet that is not
the plain next one in sequence goes back to the Python path (sfu/publication.py,
sfu/forward.py), which stays the reference.

The reader in C (sfu/_reader.c, driven by sfu/media_socket.py) finds a packet's
lane through its peer's Inbox (SSRC to Publication, whose LaneSlot holds the lane)
and sends what the lane returns through the subscriber's Destination, so that the
steady state never enters Python. The lane's `forward` method does the same one
step for Python callers (PythonReader, sockets aioice kept).

Where the extension was not built (no compiler) or INVIGIL_NATIVE_LANES=0, no
lane opens and everything takes the Python path.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .srtp import PROTECT_ADDRESS, UNPROTECT_ADDRESS, FastSrtp

try:
    from ._lane import Destination, Inbox, Lane, LaneSlot, LegCounters, TrackCounters
except ImportError:  # built without a C compiler: the Python path does all the work
    Lane = None

    class LaneSlot:  # type: ignore[no-redef]
        """Holds a track's lane (a C field when the extension is built)."""

        __slots__ = ("lane",)

    class Inbox:  # type: ignore[no-redef]
        """A peer's tracks by SSRC, for the reader in C; without it, only the count is kept."""

        __slots__ = ("packets_received",)

        def __init__(self, python_path: Any) -> None:
            self.packets_received = 0

        def route(self, ssrc: int, track: Any) -> None:
            """Nothing reads routes here: PythonReader hands every datagram to the peer."""

        def forget(self) -> None:
            """Nothing to let go of."""

    class Destination:  # type: ignore[no-redef]
        """Where the reader in C sends a subscriber's packets; without it, nothing is kept."""

        def point(self, nominated: Any, pair: Any, socket: Any, address: Any) -> None:
            """Nothing sends directly here: every packet goes through the sink."""

        def forget(self) -> None:
            """Nothing to forget."""

    class TrackCounters:  # type: ignore[no-redef]
        """A track's per-packet counters (C fields when the extension is built)."""

        __slots__ = ("packets", "bytes", "frames", "lost", "last_packet", "expected_sequence", "audio_level")

    class LegCounters:  # type: ignore[no-redef]
        """A leg's per-packet counters (C fields when the extension is built)."""

        __slots__ = ("packets_sent", "_last_sequence", "_last_timestamp")

if TYPE_CHECKING:
    from .publication import Publication

ENABLED = (
    Lane is not None
    and PROTECT_ADDRESS is not None
    and UNPROTECT_ADDRESS is not None
    and os.environ.get("INVIGIL_NATIVE_LANES", "1") != "0"
)
"""Whether lanes open at all: the extension is built, libsrtp is the version it was written
for, and INVIGIL_NATIVE_LANES is not 0."""


def open_lane(publication: Publication, rx: FastSrtp) -> Any:
    """A lane for `publication`'s started leg, decrypting with `rx`; None if there can be none yet."""
    leg = publication.leg
    if not ENABLED or leg is None or not leg.started:
        return None
    tx = leg.sink.outbound_srtp()
    if tx is None:
        return None
    abs_send_time_at = leg._abs_send_time_at
    return Lane(
        rx=rx,
        rx_session=rx.address,
        tx=tx,
        tx_session=tx.address,
        unprotect=UNPROTECT_ADDRESS,
        protect=PROTECT_ADDRESS,
        stats=publication.stats,
        leg=leg,
        history=leg._history,
        sink=leg.sink,
        destination=leg.sink.destination,
        payload_type_in=publication.payload_type,
        payload_type_out=leg.payload_type,
        audio_level_id=-1 if publication.audio_level_id is None else publication.audio_level_id,
        first_byte=leg._first_byte,
        ssrc=leg.ssrc,
        sequence_offset=leg._sequence_offset,
        timestamp_offset=leg._timestamp_offset,
        header=bytes(leg._header),
        abs_send_time_at=-1 if abs_send_time_at is None else abs_send_time_at,
    )
