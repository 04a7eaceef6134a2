"""One participant's WebRTC connection to the SFU, and the RTP fast path on it.

aiortc does the negotiation (SDP, ICE, DTLS). Once SRTP keys exist, media does
not go through aiortc's jitter buffer, decoder or sender loops: the ICE host
sockets are read by the SFU's own reader (sfu/media_socket.py), datagrams are
decrypted where they landed, handed to their publication, and legs send through
the subscriber's SRTP session and nominated ICE pair. Once a route is steady, a
native lane (sfu/lane.py) does all of that per packet in one call. RTCP
(keyframe requests, NACK, receiver reports, REMB) is ours too (sfu/rtcp.py
reads what peers send). Before any of that, an ICE socket takes nothing but STUN
except from the remote end of a pair aioice has checked (sfu/checked_senders.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aioice.ice
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    pack_remb_fci,
)
from aiortc.sdp import SessionDescription

from . import rtcp
from .checked_senders import LAST_STUN_BYTE, CheckedSenders, watch_checked_pairs
from .config import IceServer
from .forward import Leg
from .lane import Destination, Inbox, open_lane
from .links import CAP_MAX
from .media_socket import DATAGRAM_SIZE, MediaDatagramTransport, adopt
from .publication import Publication
from .rtp_header import extension_value
from .srtp import DatagramBuffer, FastSrtp, SrtpError
from .uplink_rate import UplinkRate

logger = logging.getLogger(__name__)
_SSRC = struct.Struct("!I")

CODEC_BY_KIND = {"video": "video/VP8", "audio": "audio/opus"}
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
RTCP_INTERVAL = 1.0
MAX_OFFER_MEDIA = 3 * CAP_MAX + 2
"""A desk at the largest cap: three m-lines per place, and its own voice and camera."""
TRANSCEIVERS_PER_TURN = 8
"""Transceivers set up between turns of the event loop. aiortc spends about 1 ms on each (a
receiver builds a bitrate estimator), and answering a cap-50 desk takes 170-250 ms of CPU in
all: in one go it held every exam's forwarding for about 200 ms, with turns for about 100 ms
(setRemoteDescription is the largest piece left; load_tests/desk_answer.py)."""
CONSENT_INTERVAL = 2.0
"""Seconds between consent checks (RFC 7675) on a nominated pair; aioice's default is 5."""
CONSENT_FAILURES = 3
"""Unanswered consent checks in a row (each waits 0.5 s) after which the path is dead and the peer
closes; aioice's default 6 x 5 s let a dead path look alive for about 30 s, so the surveillant saw
a frozen picture and the page's new offer waited for it. Now about 5-8 s: the student is shown as
without media and keeps their place (student_media_seconds) while their page negotiates again."""
aioice.ice.CONSENT_INTERVAL = CONSENT_INTERVAL  # aioice reads both on every check
aioice.ice.CONSENT_FAILURES = CONSENT_FAILURES
UFRAG_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MAX_OFFER_CANDIDATES = 32
"""Distinct ICE candidates an offer may carry. A browser offers a handful (host, server-
reflexive, relay); the SFU sends connectivity checks to each, so a longer list would let a
participant make the server probe addresses of their choosing."""


@dataclass(frozen=True)
class TrackSpec:
    """One m-line the SFU expects: its name, kind, and whether the SFU receives or sends it."""

    name: str
    kind: str
    receives: bool


def student_layout(screen: bool = True) -> list[TrackSpec]:
    """Webcam, screen, microphone in; talk-back voice and examiner camera out. Without
    `screen` (a phone or tablet, in an exam that does not require it) no screen m-line."""
    return [
        TrackSpec("webcam", "video", True),
        *([TrackSpec("screen", "video", True)] if screen else []),
        TrackSpec("microphone", "audio", True),
        TrackSpec("talk", "audio", False),
        TrackSpec("examiner", "video", False),
    ]


def surveillant_layout(slots: int) -> list[TrackSpec]:
    """Per slot webcam, screen, microphone out; the surveillant's voice and camera in."""
    layout = []
    for slot in range(slots):
        layout += [
            TrackSpec(f"webcam{slot}", "video", False),
            TrackSpec(f"screen{slot}", "video", False),
            TrackSpec(f"microphone{slot}", "audio", False),
        ]
    return layout + [TrackSpec("talk", "audio", True), TrackSpec("camera", "video", True)]


def check_offer(sdp: str, layout: list[TrackSpec]) -> None:
    """Refuse an offer whose m-lines do not match the layout (count, kind, direction, codec)."""
    description = SessionDescription.parse(sdp)
    media = description.media
    if len(media) != len(layout) or len(media) > MAX_OFFER_MEDIA:
        raise ValueError("wrong number of media sections")
    for section, spec in zip(media, layout):
        if section.kind != spec.kind:
            raise ValueError("wrong media kind")
        wanted = ("sendonly", "sendrecv") if spec.receives else ("recvonly", "sendrecv")
        if section.direction not in wanted:
            raise ValueError("wrong direction")
        if not any(codec.mimeType.lower() == CODEC_BY_KIND[spec.kind].lower() for codec in section.rtp.codecs):
            raise ValueError("codec not offered")
        if not section.dtls or not section.dtls.fingerprints:
            raise ValueError("no fingerprint")
    mids = {section.rtp.muxId for section in media}
    if not any(group.semantic == "BUNDLE" and set(group.items) == mids for group in description.group):
        raise ValueError("all media must be bundled on one transport")
    candidates = {(c.protocol.lower(), c.ip, c.port) for section in media for c in section.ice_candidates}
    if len(candidates) > MAX_OFFER_CANDIDATES:
        raise ValueError("too many ICE candidates")


async def _not_started(parameters: Any) -> None:
    """Stands in for aiortc's per-track send and receive loops (jitter buffer, decoder
    thread, encoder, RTCP), which the fast path makes useless."""


def _read_host_sockets_ourselves(connection: Any, media_port: int | None = None) -> None:
    """Once aioice has bound its host sockets, hand them to the MediaPoller (sfu/media_socket.py),
    or with `media_port` make them endpoints of the shared media port (sfu/shared_port.py).

    This happens while the answer is being made, before the peer knows any port.
    """
    gather = connection.get_component_candidates
    if media_port is not None:
        # The shared port tells sessions apart by username fragment: aioice's 4 characters
        # could meet another session's; 24 (of 62) cannot, in practice.
        connection._local_username = "".join(random.SystemRandom().choice(UFRAG_CHARACTERS) for _ in range(24))

    async def get_component_candidates(*args: Any, **kwargs: Any) -> Any:
        candidates = await gather(*args, **kwargs)
        for protocol in connection._protocols:
            if protocol.local_candidate.type == "host":
                adopt(protocol, media_port, connection.local_username)
        return candidates

    connection.get_component_candidates = get_component_candidates


def _extension_id(transceiver: Any, uri: str) -> int | None:
    for extension in transceiver._headerExtensions:
        if extension.uri == uri:
            return extension.id
    return None


class MediaPeer:
    """A participant's peer connection, laid out as `layout`, forwarding at the RTP level."""

    def __init__(
        self,
        owner: str,
        layout: list[TrackSpec],
        ice_servers: tuple[IceServer, ...],
        on_closed: Callable[[MediaPeer], None] | None = None,
        passthrough: bool = True,
        media_port: int | None = None,
    ) -> None:
        self.owner = owner
        self.media_port = media_port
        """The shared UDP port every ICE host candidate names (`--media-port`), or None: one port per peer."""
        self.layout = layout
        self.passthrough = passthrough
        configuration = RTCConfiguration(
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            iceServers=[RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in ice_servers]
        )
        self.pc = RTCPeerConnection(configuration)
        self.publications: dict[str, Publication] = {}
        self.legs: dict[str, Leg] = {}
        self.transceivers: dict[str, Any] = {}
        self._inbox = Inbox(self._continue_in_python)
        self.destination = Destination()
        """Where the reader in C sends lanes' packets for this peer, while its ICE pair holds."""
        self.rtcp_ssrc = random.getrandbits(32)
        self._by_ssrc: dict[int, Publication] = {}
        self._legs_by_ssrc: dict[int, Leg] = {}
        self._unrouted_mids: dict[str, Publication] = {}
        self._mid_id: int | None = None
        self._rx: FastSrtp | None = None
        self._tx: FastSrtp | None = None
        self._dtls: Any = None
        self._connection: Any = None
        self._pair: Any = None
        self._pair_address: tuple[str, int] | None = None
        self._rtcp_task: asyncio.Task[None] | None = None
        self._last_sender_report: dict[int, tuple[int, float]] = {}
        self.uplink = UplinkRate()
        """What this peer is told it may send (REMB), from the loss on its uplink."""
        self._uplink_seen = (0, 0)
        self._on_closed = on_closed
        self._fallback_senders: dict[Any, CheckedSenders] = {}
        self._sender_checks: list[Any] = []  # what counts this peer's strangers_dropped
        self.closed = False
        self.live_announced = False
        """Set by the router once the participant was told `media_live` for this connection."""
        self.pc.on("connectionstatechange", self._on_state)

    # -- negotiation -----------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """Take the participant's offer and return the SFU's answer (VP8 and Opus only)."""
        check_offer(offer_sdp, self.layout)
        codecs = {
            kind: [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() == mime.lower()]
            for kind, mime in CODEC_BY_KIND.items()
        }
        # Publishers may retransmit with RTX (RFC 4588) where they offer it: upstream repair.
        rtx = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/rtx"]
        for index, spec in enumerate(self.layout):
            if index % TRANSCEIVERS_PER_TURN == 0:
                await asyncio.sleep(0)
            transceiver = self.pc.addTransceiver(spec.kind, direction="recvonly" if spec.receives else "sendonly")
            transceiver.setCodecPreferences(codecs[spec.kind] + (rtx if spec.receives and spec.kind == "video" else []))
            self.transceivers[spec.name] = transceiver
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if len(self.pc.getTransceivers()) != len(self.layout):
            raise ValueError("offer did not match the layout")
        if self.passthrough:
            self._prepare_fast_path()
        await asyncio.sleep(0)
        answer = await self.pc.createAnswer()
        await asyncio.sleep(0)
        await self.pc.setLocalDescription(answer)
        if self.passthrough:
            self._build_routes()
        return self.pc.localDescription.sdp

    def _prepare_fast_path(self) -> None:
        """Keep aiortc's per-track machinery from starting: we forward and report ourselves."""
        for spec in self.layout:
            transceiver = self.transceivers[spec.name]
            transceiver.sender.send = _not_started
            transceiver.receiver.receive = _not_started
        connections = {id(t.receiver.transport.transport.iceGatherer._connection): t for t in self.pc.getTransceivers()}
        for transceiver in connections.values():
            connection = transceiver.receiver.transport.transport.iceGatherer._connection
            _read_host_sockets_ourselves(connection, self.media_port)
            watch_checked_pairs(connection, lambda pair, connection=connection: self._pair_checked(pair, connection))

    def _pair_checked(self, pair: Any, connection: Any = None) -> None:
        """aioice checked `pair`: its socket now reads DTLS and media from the pair's remote address.

        A pair checked after another was nominated, with an address the participant never
        offered (peer-reflexive: it was learned from their checks), means they moved (a NAT
        rebinding, a new network with the same session): media follows them there. aiortc
        restarts no ICE, and its controlling peer would not nominate again; checks carry the
        ICE password, so only the participant can move their media.
        """
        transport = pair.protocol.transport
        senders = transport if isinstance(transport, MediaDatagramTransport) else self._senders_of(pair.protocol)
        try:
            senders.permit(pair.remote_addr)
        except ValueError:
            pass  # not a numeric address (aioice resolves names first): nothing from it is read
        if connection is None:
            return
        component = pair.local_candidate.component
        nominated = connection._nominated.get(component)
        if nominated is not None and nominated is not pair and pair.remote_candidate.type == "prflx":
            pair.nominated = True
            connection._nominated[component] = pair

    def _senders_of(self, protocol: Any) -> CheckedSenders:
        """Whom an ICE socket the SFU does not read itself (a TURN relay) takes non-STUN datagrams from."""
        senders = self._fallback_senders.get(protocol)
        if senders is None:
            version = ipaddress.ip_address(protocol.local_candidate.host).version
            senders = CheckedSenders(socket.AF_INET6 if version == 6 else socket.AF_INET)
            self._fallback_senders[protocol] = senders
        return senders

    @property
    def strangers_dropped(self) -> int:
        """Non-STUN datagrams this peer's ICE sockets dropped: sent from no checked pair's address."""
        return sum(check.strangers_dropped for check in self._sender_checks)

    def _build_routes(self) -> None:
        remote = SessionDescription.parse(self.pc.remoteDescription.sdp)
        for spec, section in zip(self.layout, remote.media):
            transceiver = self.transceivers[spec.name]
            codec = transceiver._codecs[0]
            self._mid_id = _extension_id(transceiver, MID_URI)
            if spec.receives:
                publication = Publication(
                    source=spec.name,
                    kind=spec.kind,
                    payload_type=codec.payloadType,
                    audio_level_id=_extension_id(transceiver, AUDIO_LEVEL_URI),
                    request_keyframe=self.send_pli,
                    send_nack=self.send_nack,
                )
                self.publications[spec.name] = publication
                rtx = {ssrc for group in section.ssrc_group if group.semantic == "FID" for ssrc in group.items[1:]}
                primary = [info.ssrc for info in section.ssrc if info.ssrc not in rtx]
                if primary:
                    self._learn(primary[0], publication)
                    self._learn_rtx(transceiver, section, publication)
                elif transceiver.mid is not None:
                    self._unrouted_mids[transceiver.mid] = publication
            else:
                leg = Leg(
                    sink=self,
                    kind=spec.kind,
                    ssrc=transceiver.sender._ssrc,
                    payload_type=codec.payloadType,
                    mid=transceiver.mid,
                    mid_id=self._mid_id,
                    abs_send_time_id=_extension_id(transceiver, ABS_SEND_TIME_URI),
                )
                self.legs[spec.name] = leg
                self._legs_by_ssrc[leg.ssrc] = leg
        first = self.pc.getTransceivers()[0]
        self._dtls = first.receiver.transport
        self._connection = self._dtls.transport._connection
        for protocol in self._connection._protocols:
            self._hook(protocol)

    def _learn(self, ssrc: int, publication: Publication) -> None:
        publication.ssrc = ssrc
        self._by_ssrc[ssrc] = publication
        self._inbox.route(ssrc, publication)

    def _learn_rtx(self, transceiver: Any, section: Any, publication: Publication) -> None:
        """Route the publication's RTX stream (ssrc-group FID, negotiated rtx payload type) to it."""
        payload_type = next(
            (c.payloadType for c in transceiver._codecs
             if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") == publication.payload_type),
            None,
        )
        groups = [g.items for g in section.ssrc_group if g.semantic == "FID" and len(g.items) == 2]
        rtx_ssrc = next((ssrcs[1] for ssrcs in groups if ssrcs[0] == publication.ssrc), None)
        if payload_type is None or rtx_ssrc is None or rtx_ssrc in self._by_ssrc:
            return
        publication.rtx_payload_type = payload_type
        self._by_ssrc[rtx_ssrc] = publication
        self._inbox.route(rtx_ssrc, publication)

    @property
    def packets_received(self) -> int:
        """Authentic RTP packets received from this peer, whichever path took them."""
        return self._inbox.packets_received

    def media_forwarded(self) -> bool:
        """True once every track this peer publishes has arrived and gone out on a connected
        subscriber's leg: what the student's LIVE banner waits for (`media_live`)."""
        if not self.passthrough:
            return self.pc.connectionState == "connected"  # the transcoding benchmark keeps no counters
        return bool(self.publications) and all(
            publication.stats.packets > 0
            and publication.leg is not None
            and publication.leg.packets_sent > 0
            and publication.leg.sink.outbound_srtp() is not None
            for publication in self.publications.values()
        )

    # -- the fast path -----------------------------------------------------------

    def _hook(self, protocol: Any) -> None:
        """Take SRTP/SRTCP datagrams off this ICE socket before aiortc sees them: through the
        MediaPoller's handler where the socket was adopted, else by wrapping the protocol
        (which then also drops what strangers send, as the reader does)."""
        transport = protocol.transport
        if isinstance(transport, MediaDatagramTransport):
            transport.media_handler = self._receive_media
            transport.inbox = self._inbox  # where the reader in C finds this peer's lanes
            self._sender_checks.append(transport.reader_socket)
            return
        original = protocol.datagram_received
        buffer = DatagramBuffer(DATAGRAM_SIZE)
        senders = self._senders_of(protocol)
        self._sender_checks.append(senders)

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            if data and data[0] > LAST_STUN_BYTE and not senders.admits(addr):
                return
            if data and 127 < data[0] < 192 and len(data) < len(buffer.memory):
                buffer.memory[: len(data)] = data
                self._receive_media(buffer, len(data))
            else:
                original(data, addr)

        protocol.datagram_received = datagram_received

    def _receive_media(self, datagram: DatagramBuffer, size: int) -> None:
        """One datagram whose first byte says RTP or RTCP (RFC 7983), still protected (the hot path)."""
        rx = self._rx
        if rx is None:
            if self._dtls is None or self._dtls._rx_srtp is None:
                return  # before DTLS has made the keys: nothing to decrypt it with
            self._srtp_ready()
            rx = self._rx
        if rx is None or size <= 12:
            return
        memory = datagram.memory
        if 191 < memory[1] < 224:
            self._receive_rtcp(rx, bytes(memory[:size]))
            return
        # Route by the SSRC in clear text first: packets nobody asked for are not even decrypted.
        publication = self._by_ssrc.get(_SSRC.unpack_from(memory, 8)[0])
        if publication is None and not self._unrouted_mids:
            return
        lane = publication.lane if publication is not None else None
        if lane is not None:
            try:
                result = lane.forward(datagram.writable, size)
            except Exception:
                publication.lane = None  # the Python path takes over rather than fail on every packet
                raise
            if result is None:
                return
            self._inbox.packets_received += 1
            if result.__class__ is bytes:
                lane.sink.resend_rtp(result)
                return
            size = result  # decrypted, but not the plain next packet: the Python path takes it
        else:
            try:
                size = rx.unprotect_in_place(datagram, size)
            except SrtpError:
                return
            self._inbox.packets_received += 1
            if publication is None:
                publication = self._route_by_mid(bytes(memory[:size]))
                if publication is None:
                    return
        self._continue_in_python(publication, datagram, size)

    def _continue_in_python(self, publication: Publication, datagram: DatagramBuffer, size: int) -> None:
        """A decrypted RTP packet in `datagram` that no lane forwarded: count and forward it in
        Python, and open a lane once the route is steady (also called by the reader in C)."""
        publication.receive(datagram.memory[:size])
        rx = self._rx
        if publication.lane is None and publication.leg is not None and publication.leg.started and rx is not None:
            publication.lane = open_lane(publication, rx)

    def _srtp_ready(self) -> None:
        self._rx = FastSrtp(self._dtls._rx_srtp)
        self._tx = FastSrtp(self._dtls._tx_srtp)
        if self._rtcp_task is None:
            self._rtcp_task = asyncio.ensure_future(self._report_forever())

    def _route_by_mid(self, packet: bytes) -> Publication | None:
        """An SSRC the offer did not announce: learn it from its mid header extension."""
        if self._mid_id is None:
            return None
        mid = extension_value(packet, self._mid_id)
        publication = self._unrouted_mids.pop(mid.decode(errors="replace"), None) if mid else None
        if publication is not None:
            self._learn(int.from_bytes(packet[8:12], "big"), publication)
        return publication

    def send_rtp(self, header: bytearray, payload: memoryview) -> bytes | None:
        """Protect `header` + `payload` as one RTP packet and send it on the nominated ICE pair.

        Returns the packet as sent, for retransmission; None if it could not be (not connected).
        """
        tx = self._tx
        if tx is None:
            return None
        try:
            packet = tx.protect_joined(header, payload)
        except SrtpError:
            return None
        self.resend_rtp(packet)
        return packet

    def outbound_srtp(self) -> FastSrtp | None:
        """The SRTP session this peer's legs protect with (None until DTLS has made the keys)."""
        return self._tx

    def resend_rtp(self, packet: bytes) -> None:
        """Send an already protected RTP packet on the nominated ICE pair (dropped if not connected)."""
        connection = self._connection
        if connection is None:
            return
        pair = connection._nominated.get(1)
        if pair is not self._pair:
            # aioice builds the address tuple anew on every access: look it up once per pair.
            if pair is None:
                return
            self._pair = pair
            self._pair_address = pair.remote_addr
            self._point_destination(connection, pair)
        transport = pair.protocol.transport
        if transport is None or transport.is_closing():
            return
        transport.sendto(packet, self._pair_address)

    def _point_destination(self, connection: Any, pair: Any) -> None:
        """Let lanes send to `pair` without asking again, where the reader in C owns its socket."""
        transport = pair.protocol.transport
        socket = transport.native_socket if isinstance(transport, MediaDatagramTransport) else None
        if socket is None:
            self.destination.forget()
            return
        try:
            self.destination.point(connection._nominated, pair, socket, self._pair_address)
        except ValueError:
            self.destination.forget()  # an address it cannot hold: every packet asks resend_rtp

    # -- RTCP ------------------------------------------------------------------------

    def _receive_rtcp(self, rx: FastSrtp, data: bytes) -> None:
        try:
            compound = rx.unprotect_rtcp(data)
        except SrtpError:
            return
        for packet_type, fmt, start, end in rtcp.packets(compound):
            if packet_type == rtcp.PAYLOAD_FEEDBACK and end - start >= 12:
                if fmt == rtcp.PLI:
                    self._keyframe_wanted(rtcp.media_ssrc(compound, start))
                elif fmt == rtcp.FIR:
                    for ssrc in rtcp.fir_ssrcs(compound, start, end):
                        self._keyframe_wanted(ssrc)
            elif packet_type == rtcp.TRANSPORT_FEEDBACK and fmt == rtcp.NACK and end - start >= 12:
                leg = self._legs_by_ssrc.get(rtcp.media_ssrc(compound, start))
                if leg is not None:
                    leg.retransmit(rtcp.nack_sequences(compound, start, end))
            elif packet_type == rtcp.SENDER_REPORT and end - start >= 28:
                ssrc, middle = rtcp.sender_report_ntp_middle(compound, start)
                self._last_sender_report[ssrc] = (middle, time.monotonic())

    def _keyframe_wanted(self, ssrc: int) -> None:
        """A subscriber asked for a keyframe of one of our legs: ask that leg's publisher."""
        leg = self._legs_by_ssrc.get(ssrc)
        if leg is not None and leg.source is not None:
            leg.source.request_keyframe()

    def send_pli(self, media_ssrc: int) -> None:
        """Ask this peer for a keyframe of one of its tracks."""
        self.send_rtcp([RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.rtcp_ssrc, media_ssrc=media_ssrc)])

    def send_nack(self, media_ssrc: int, sequences: list[int]) -> None:
        """Ask this peer to send again packets of one of its tracks (generic NACK)."""
        self.send_rtcp([rtcp.generic_nack(self.rtcp_ssrc, media_ssrc, sequences)])

    def send_rtcp(self, packets: list[Any]) -> None:
        """Protect and send one compound RTCP packet."""
        tx = self._tx
        if tx is None:
            return
        try:
            data = tx.protect_rtcp(b"".join(bytes(packet) for packet in packets))
        except SrtpError:
            return
        connection = self._connection
        pair = connection._nominated.get(1) if connection is not None else None
        if pair is not None and pair.protocol.transport is not None:
            pair.protocol.transport.sendto(data, pair.remote_addr)

    def receiver_report(self) -> list[Any]:
        """Receiver report blocks and a REMB for what this peer publishes: what its uplink
        carries, as far as loss tells (sfu/uplink_rate.py)."""
        reports = []
        now = time.monotonic()
        for publication in self.publications.values():
            stats = publication.stats
            if publication.ssrc is None or stats.expected_sequence is None:
                continue
            lsr, received_at = self._last_sender_report.get(publication.ssrc, (0, now))
            delay = int((now - received_at) * 65536) if lsr else 0
            reports.append(
                RtcpReceiverInfo(
                    ssrc=publication.ssrc,
                    fraction_lost=publication.fraction_lost(),
                    packets_lost=min(stats.lost, 0x7FFFFF),
                    highest_sequence=(stats.expected_sequence - 1) & 0xFFFF,
                    jitter=0,
                    lsr=lsr,
                    dlsr=delay,
                )
            )
        packets: list[Any] = []
        if reports:
            packets.append(RtcpRrPacket(ssrc=self.rtcp_ssrc, reports=reports[:31]))
            video = [p.ssrc for p in self.publications.values() if p.kind == "video" and p.ssrc is not None]
            if video:
                packets.append(
                    RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP,
                        ssrc=self.rtcp_ssrc,
                        media_ssrc=0,
                        fci=pack_remb_fci(self._uplink_estimate(), video),
                    )
                )
        return packets

    def _uplink_estimate(self) -> int:
        """Update the uplink estimate with the loss since the last report; return it."""
        received = lost = 0
        for publication in self.publications.values():
            in_order, missed = publication.arrivals()
            received += in_order
            lost += missed
        seen_received, seen_lost = self._uplink_seen
        self._uplink_seen = (received, lost)
        return self.uplink.update(received - seen_received, lost - seen_lost)

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(RTCP_INTERVAL * (0.5 + random.random()))
            packets = self.receiver_report()
            if packets:
                self.send_rtcp(packets)

    # -- life and death ------------------------------------------------------------

    async def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed") and not self.closed:
            await self.close()

    async def close(self) -> None:
        """Close the connection and let go of every leg and publication."""
        if self.closed:
            return
        self.closed = True
        task, self._rtcp_task = self._rtcp_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for leg in self.legs.values():
            leg.attach(None)
        for publication in self.publications.values():
            publication.close()
            if publication.leg is not None:
                publication.leg.attach(None)
        self._rx = self._tx = None
        self.destination.forget()
        self._inbox.forget()
        self._connection = None
        self._dtls = None
        await self.pc.close()
        if self._on_closed is not None:
            self._on_closed(self)
