"""The media of one exam: whose publication feeds which leg.

A student's webcam, screen and microphone go to the slot they hold on their
one surveillant's connection; a surveillant's voice goes to the one student
they talk to (in an oral exam, voice and camera go to the student being
examined). Routes change without renegotiation: slots are fixed at offer time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .config import ServerConfig
from .messages import ProtocolError
from .peer import MediaPeer, student_layout, surveillant_layout

logger = logging.getLogger(__name__)

STUDENT_TRACKS = ("webcam", "screen", "microphone")


class ExamMedia:
    """Peers and routes of one exam. Forwarding only, unless the benchmark asks for transcoding."""

    def __init__(
        self,
        exam_id: str,
        config: ServerConfig,
        oral: bool = False,
        screen_required: bool = True,
        on_media_change: Callable[[str], None] | None = None,
    ) -> None:
        self.exam_id = exam_id
        self._on_media_change = on_media_change
        self.config = config
        self.oral = oral
        self.screen_required = screen_required
        self.transcode = config.media_mode == "transcode"
        self.peers: dict[str, MediaPeer] = {}
        self.routes: dict[str, tuple[str, int]] = {}
        self.talk: dict[str, str | None] = {}
        self._relay: Any = None

    # -- negotiation -----------------------------------------------------------

    async def student_offer(self, student: str, sdp: str) -> str:
        """A student's (re)offer: webcam, screen and microphone in, voice and camera out."""
        # Without the screen requirement, a phone or tablet offers camera and microphone only.
        with_screen = self.screen_required or sdp.count("\nm=") != len(student_layout(screen=False))
        return await self._negotiate(student, sdp, student_layout(screen=with_screen))

    async def surveillant_offer(self, surveillant: str, sdp: str, slots: int) -> str:
        """A surveillant's (re)offer with one set of tracks per slot."""
        return await self._negotiate(surveillant, sdp, surveillant_layout(slots))

    async def _negotiate(self, owner: str, sdp: str, layout: list[Any]) -> str:
        # The new peer is built beside the live one: a refused or timed-out offer leaves
        # the participant's current media as it was, and leaves nothing of its own behind.
        peer = MediaPeer(
            owner, layout, self.config.ice_servers, passthrough=not self.transcode, media_port=self.config.media_port
        )
        try:
            answer = await peer.answer(sdp)
        except BaseException as error:
            await peer.close()
            if not isinstance(error, Exception):
                raise  # cancelled (the offer ran out of time): the caller answers media_failed
            logger.info("exam %s: offer of %s failed: %s", self.exam_id, owner, type(error).__name__)
            raise ProtocolError("media_failed") from None
        old = self.peers.pop(owner, None)
        self.peers[owner] = peer
        peer.pc.on("connectionstatechange", lambda: self._state_changed(owner, peer))
        if old is not None:
            await old.close()
        self._rewire_all()
        self._state_changed(owner, peer)
        return answer

    def media_up(self, owner: str) -> bool:
        """Whether the participant's current peer connection is established (ICE and DTLS done)."""
        peer = self.peers.get(owner)
        return peer is not None and not peer.closed and peer.pc.connectionState == "connected"

    def _state_changed(self, owner: str, peer: MediaPeer) -> None:
        # A replaced peer closing says nothing about the participant's current media.
        if self.peers.get(owner) is peer and self._on_media_change is not None:
            self._on_media_change(owner)

    # -- routes ------------------------------------------------------------------

    def route(self, student: str, surveillant: str | None, slot: int | None) -> None:
        """Send the student's tracks to this surveillant's slot (or nowhere)."""
        peer = self.peers.get(student)
        if peer is not None and self.routes.get(student) != (surveillant, slot):
            peer.live_announced = False  # `media_live` again once the media reaches the new desk
        if surveillant is None or slot is None:
            self.routes.pop(student, None)
            peer = self.peers.get(student)
            if peer is not None:
                for publication in peer.publications.values():
                    if publication.leg is not None:
                        publication.leg.attach(None)
        else:
            self.routes[student] = (surveillant, slot)
        self._rewire_all()

    def set_talk(self, surveillant: str, student: str | None) -> None:
        """The surveillant's voice goes to `student` only (None: to nobody)."""
        self.talk[surveillant] = student
        self._rewire_all()

    def _rewire_all(self) -> None:
        """Make every leg carry what the routes say; cheap, runs only on changes."""
        for student, (surveillant, slot) in self.routes.items():
            self._wire_student(student, surveillant, slot)
        for surveillant_id, peer in self.peers.items():
            if "talk" in peer.publications or self.transcode:
                self._wire_voice(surveillant_id, peer)

    def _wire_student(self, student: str, surveillant: str, slot: int) -> None:
        source, target = self.peers.get(student), self.peers.get(surveillant)
        if target is None:
            if source is not None:
                for publication in source.publications.values():
                    if publication.leg is not None:
                        publication.leg.attach(None)
            return
        for name in STUDENT_TRACKS:
            leg_name = f"{name}{slot}"
            if self.transcode:
                self._relay_track(source, name, target, leg_name)
                continue
            leg = target.legs.get(leg_name)
            if leg is not None:
                leg.attach(source.publications.get(name) if source is not None else None)

    def _wire_voice(self, surveillant: str, peer: MediaPeer) -> None:
        student = self.talk.get(surveillant)
        if self.oral and student is None:
            student = next((s for s, (v, _) in self.routes.items() if v == surveillant), None)
        listener = self.peers.get(student) if student is not None else None
        examined = None
        if self.oral:
            examined = listener
        for name, leg_name, target in (("talk", "talk", listener), ("camera", "examiner", examined)):
            if self.transcode:
                if target is not None:
                    self._relay_track(peer, name, target, leg_name)
                continue
            publication = peer.publications.get(name)
            if publication is None:
                continue
            leg = target.legs.get(leg_name) if target is not None else None
            if leg is not None:
                leg.attach(publication)
            elif publication.leg is not None:
                publication.leg.attach(None)

    def _relay_track(self, source: MediaPeer | None, name: str, target: MediaPeer, leg_name: str) -> None:
        """Benchmark baseline only: decode and re-encode through aiortc's MediaRelay."""
        from aiortc.contrib.media import MediaRelay

        if self._relay is None:
            self._relay = MediaRelay()
        transceiver = target.transceivers.get(leg_name)
        if transceiver is None:
            return
        track = None
        if source is not None and name in source.transceivers:
            remote = source.transceivers[name].receiver.track
            if remote is not None:
                track = self._relay.subscribe(remote, buffered=False)
        transceiver.sender.replaceTrack(track)

    # -- figures and the end -------------------------------------------------------

    def newly_live(self) -> list[str]:
        """Students whose media, on their current connection, has now reached the SFU and is
        forwarded to their surveillant; each is named once per connection (for `media_live`)."""
        live = []
        for student in self.routes:
            peer = self.peers.get(student)
            if peer is not None and not peer.live_announced and peer.media_forwarded():
                peer.live_announced = True
                live.append(student)
        return live

    def track_stats(self, student: str) -> dict[str, Any]:
        """Live figures of a student's tracks for their surveillant's tiles, and of their connection."""
        peer = self.peers.get(student)
        if peer is None:
            return {}
        figures: dict[str, Any] = {
            name: publication.stats.snapshot(publication.kind) for name, publication in peer.publications.items()
        }
        figures["connection"] = {"strangers_dropped": peer.strangers_dropped}
        return figures

    async def remove_participant(self, participant: str) -> None:
        """Close a participant's connection and every route through it."""
        self.routes.pop(participant, None)
        self.talk.pop(participant, None)
        for surveillant, student in list(self.talk.items()):
            if student == participant:
                self.talk[surveillant] = None
        peer = self.peers.pop(participant, None)
        if peer is not None:
            await peer.close()
        self._rewire_all()

    async def close(self) -> None:
        """Close every connection of the exam."""
        peers = list(self.peers.values())
        self.peers.clear()
        self.routes.clear()
        self.talk.clear()
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)
        self._relay = None
