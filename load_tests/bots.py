"""Bot students, bot surveillants and the organiser, over the real signalling.

All bots of a run live in one process and one event loop, so their clocks
agree; times are `time.monotonic_ns()` (CLOCK_MONOTONIC, system-wide on Linux).

Measuring points, both at the RTP level:
- send: the bot student's `RTCDtlsTransport._send_rtp` is wrapped; when a
  video packet with the marker bit and a frame-id trailer has been protected
  and handed to the socket, its time is noted.
- receive: the bot surveillant's `RTCDtlsTransport._handle_rtp_data` (called
  with the decrypted packet) is REPLACED: the header is parsed here, packets
  are counted, the trailer of marker packets is read and timed, and nothing
  is passed on to aiortc's receivers (no jitter buffer, no decoder). The
  surveillant sends its own small RTCP receiver report once a second instead.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket
from aiortc.sdp import SessionDescription

from .media import (
    TRACK_SCREEN,
    TRACK_WEBCAM,
    MediaLibrary,
    PreEncodedAudioTrack,
    PreEncodedVideoTrack,
    SilentTrack,
    make_tag,
    rtp_trailer,
)

log = logging.getLogger("load_tests")
now_ns = time.monotonic_ns


# --- shared measurements -----------------------------------------------------

@dataclass
class Collector:
    """Everything the bots measure, shared by all bots of the process."""

    frames_sent: dict[int, int] = field(default_factory=dict)  # key -> ns
    frames_recv: dict[int, int] = field(default_factory=dict)  # key -> ns (first)
    duplicate_frames: int = 0
    tx_packets: int = 0  # RTP sent by bot students (all media)
    rx_packets: int = 0  # RTP received by bot surveillants (all media)
    rx_bytes: int = 0
    rx_video_frame_times: list[int] = field(default_factory=list)  # marker on a video PT
    rx_unknown_trailer: int = 0
    events: list[tuple[int, str, str]] = field(default_factory=list)  # (ns, bot, what)

    def event(self, who: str, what: str) -> None:
        self.events.append((now_ns(), who, what))

    @staticmethod
    def key(tag: int, frame_id: int) -> int:
        return (tag << 32) | frame_id


def new_rtc_config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def prefer_codec(transceiver, mime: str) -> None:
    codecs = [c for c in RTCRtpSender.getCapabilities(transceiver.kind).codecs
              if c.mimeType.lower() == mime.lower()]
    transceiver.setCodecPreferences(codecs)


def dtls_transports(pc: RTCPeerConnection) -> list:
    seen: dict[int, Any] = {}
    for t in pc.getTransceivers():
        for transport in (t.sender.transport, t.receiver.transport):
            if transport is not None:
                seen[id(transport)] = transport
    return list(seen.values())


def install_send_hook(pc: RTCPeerConnection, collector: Collector) -> None:
    """Note the send time of every video frame's last packet (trailer)."""
    frames_sent = collector.frames_sent

    for transport in dtls_transports(pc):
        if getattr(transport, "_bench_send_hook", False):
            continue
        original = transport._send_rtp

        async def send_rtp(data: bytes, _original=original) -> None:
            await _original(data)
            b1 = data[1]
            if 192 <= b1 <= 223:  # RTCP
                return
            collector.tx_packets += 1
            if b1 & 0x80:
                trailer = rtp_trailer(data)
                if trailer is not None:
                    frames_sent[(trailer[1] << 32) | trailer[0]] = now_ns()

        transport._send_rtp = send_rtp
        transport._bench_send_hook = True


class _Stream:
    """Sequence bookkeeping for one received SSRC (RFC 3550 A.1, simplified)."""

    __slots__ = ("base", "max_seq", "cycles", "received", "prior_expected", "prior_received", "pt")

    def __init__(self, seq: int, pt: int) -> None:
        self.base = seq
        self.max_seq = seq
        self.cycles = 0
        self.received = 1
        self.prior_expected = 0
        self.prior_received = 0
        self.pt = pt

    def update(self, seq: int) -> None:
        self.received += 1
        delta = (seq - self.max_seq) & 0xFFFF
        if 0 < delta < 0x8000:
            if seq < self.max_seq:
                self.cycles += 0x10000
            self.max_seq = seq

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)


class RtpSink:
    """Replaces a surveillant's `_handle_rtp_data`: count, time, drop."""

    def __init__(self, collector: Collector, video_pts: set[int]) -> None:
        self.collector = collector
        self.video_pts = video_pts
        self.streams: dict[int, _Stream] = {}
        self.packets = 0
        self.transport = None
        self.rtcp_ssrc: int | None = None
        self._rr_task: asyncio.Task | None = None

    def install(self, pc: RTCPeerConnection) -> None:
        transports = dtls_transports(pc)
        for transport in transports:
            transport._handle_rtp_data = self.handle
        self.transport = transports[0] if transports else None

    async def handle(self, data: bytes, arrival_time_ms: int) -> None:
        t = now_ns()
        c = self.collector
        c.rx_packets += 1
        c.rx_bytes += len(data)
        self.packets += 1
        if len(data) < 12:
            return
        b1 = data[1]
        ssrc = int.from_bytes(data[8:12], "big")
        seq = (data[2] << 8) | data[3]
        stream = self.streams.get(ssrc)
        if stream is None:
            self.streams[ssrc] = _Stream(seq, b1 & 0x7F)
        else:
            stream.update(seq)
        if b1 & 0x80 and (b1 & 0x7F) in self.video_pts:
            c.rx_video_frame_times.append(t)
            trailer = rtp_trailer(data)
            if trailer is not None:
                key = (trailer[1] << 32) | trailer[0]
                if key in c.frames_recv:
                    c.duplicate_frames += 1
                else:
                    c.frames_recv[key] = t

    def lost(self) -> int:
        return sum(s.lost for s in self.streams.values())

    def start_rtcp(self, interval: float = 1.0) -> None:
        self._rr_task = asyncio.ensure_future(self._run_rtcp(interval))

    async def _run_rtcp(self, interval: float) -> None:
        """A receiver report per second, as a browser would (no NACK, no PLI)."""
        try:
            while True:
                await asyncio.sleep(interval)
                if self.transport is None or self.rtcp_ssrc is None or not self.streams:
                    continue
                reports = []
                for ssrc, s in self.streams.items():
                    expected = s.expected
                    interval_expected = expected - s.prior_expected
                    interval_received = s.received - s.prior_received
                    s.prior_expected, s.prior_received = expected, s.received
                    lost_interval = interval_expected - interval_received
                    fraction = 0
                    if interval_expected > 0 and lost_interval > 0:
                        fraction = min(255, (lost_interval << 8) // interval_expected)
                    reports.append(RtcpReceiverInfo(
                        ssrc=ssrc, fraction_lost=fraction,
                        packets_lost=min(s.lost, 0x7FFFFF),
                        highest_sequence=s.extended_max & 0xFFFFFFFF,
                        jitter=0, lsr=0, dlsr=0))
                for i in range(0, len(reports), 31):
                    packet = RtcpRrPacket(ssrc=self.rtcp_ssrc, reports=reports[i:i + 31])
                    try:
                        await self.transport._send_rtp(bytes(packet))
                    except ConnectionError:
                        return
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        if self._rr_task is not None:
            self._rr_task.cancel()


def watch(pc: RTCPeerConnection, sig: "Signalling", collector: Collector, who: str) -> None:
    """Note when a connected bot's peer connection or socket goes away."""

    @pc.on("connectionstatechange")
    def _changed() -> None:
        if pc.connectionState in ("disconnected", "failed", "closed"):
            collector.event(who, f"peer connection {pc.connectionState}")

    async def _socket() -> None:
        await sig.closed.wait()
        collector.event(who, f"socket closed ({sig.close_code})")

    sig._watch_task = asyncio.ensure_future(_socket())


def video_payload_types(sdp: str) -> set[int]:
    pts: set[int] = set()
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "video":
            for codec in media.rtp.codecs:
                if codec.mimeType.lower() == "video/vp8":
                    pts.add(codec.payloadType)
    return pts


RECEIVE_BUFFER = 4 * 2**20


def enlarge_receive_buffers(pc: RTCPeerConnection, size: int = RECEIVE_BUFFER) -> None:
    """Give the bots' UDP sockets a large receive buffer, so that a hiccup of
    the (shared) bot process is not mistaken for a loss in the SFU. The kernel
    caps it at net.core.rmem_max."""
    for transport in dtls_transports(pc):
        try:
            protocols = transport.transport._connection._protocols
        except AttributeError:
            continue
        for protocol in protocols:
            datagram = getattr(protocol, "transport", None)
            sock = datagram.get_extra_info("socket") if datagram is not None else None
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                except OSError:
                    pass


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    if pc.connectionState == "connected":
        return
    done = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def _changed() -> None:
        if done.done():
            return
        if pc.connectionState == "connected":
            done.set_result(None)
        elif pc.connectionState in ("failed", "closed"):
            done.set_exception(ConnectionError(f"peer connection {pc.connectionState}"))

    if pc.connectionState == "connected":
        return
    await asyncio.wait_for(done, timeout)


# --- signalling ---------------------------------------------------------------

class SignallingError(Exception):
    def __init__(self, message: dict) -> None:
        self.message = message
        self.code = message.get("code")
        text = message.get("message")
        if isinstance(text, dict):
            text = text.get("en") or text
        super().__init__(f"{self.code}: {text}")


class Signalling:
    """One WebSocket to `/ws`, JSON per docs/PROTOCOL.md."""

    def __init__(self, session: aiohttp.ClientSession, url: str, label: str) -> None:
        self.session = session
        self.url = url
        self.label = label
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future, tuple[str, ...]]] = {}
        self._waiters: list[tuple[tuple[str, ...], asyncio.Future]] = []
        self.last: dict[str, dict] = {}
        self.on_push: Callable[[dict], None] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.errors: list[dict] = []
        self._reader: asyncio.Task | None = None

    async def connect(self) -> None:
        self.ws = await self.session.ws_connect(self.url, max_msg_size=0, heartbeat=None)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                self._dispatch(data)
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            error = ConnectionError(f"{self.label}: socket closed ({self.close_code})")
            for fut, _ in self._pending.values():
                if not fut.done():
                    fut.set_exception(error)
            for _, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(error)

    def _dispatch(self, data: dict) -> None:
        kind = data.get("type")
        re = data.get("re")
        if kind == "error":
            self.errors.append(data)
        if re is not None and re in self._pending:
            fut, _ = self._pending.pop(re)
            if not fut.done():
                if kind == "error":
                    fut.set_exception(SignallingError(data))
                else:
                    fut.set_result(data)
            return
        # an answer without `re`: match it to the oldest request expecting it
        for rid, (fut, expect) in list(self._pending.items()):
            if kind in expect and not fut.done():
                del self._pending[rid]
                fut.set_result(data)
                break
        if kind is not None:
            self.last[kind] = data
            for entry in list(self._waiters):
                types, fut = entry
                if kind in types and not fut.done():
                    fut.set_result(data)
                    self._waiters.remove(entry)
        if kind == "error" and re is None:
            log.debug("%s: unsolicited error %s", self.label, data)
        if self.on_push is not None:
            try:
                self.on_push(data)
            except Exception:  # pragma: no cover - a bot bug must not kill the reader
                log.exception("%s: push handler failed", self.label)

    async def send(self, message: dict) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps({"v": 1, **message}))

    async def request(self, message: dict, expect: tuple[str, ...] = ("ack",),
                      timeout: float = 20.0) -> dict:
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, expect)
        try:
            await self.send({**message, "id": rid})
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    async def wait_for(self, *types: str, timeout: float = 20.0, fresh: bool = False) -> dict:
        if not fresh:
            for kind in types:
                if kind in self.last:
                    return self.last[kind]
        fut = asyncio.get_running_loop().create_future()
        entry = (types, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 2)
            except (asyncio.TimeoutError, Exception):
                pass


def token_of(link: str) -> str:
    if "#" not in link:
        raise ValueError(f"link without a #token: {link!r}")
    return link.split("#", 1)[1]


# --- the organiser ------------------------------------------------------------

class Organiser:
    def __init__(self, session: aiohttp.ClientSession, ws_url: str, creator_token: str) -> None:
        self.session = session
        self.ws_url = ws_url
        self.sig = Signalling(session, ws_url, "organiser")
        self.token = creator_token
        self.exam: dict | None = None
        self.student_link: str | None = None
        self.surveillant_links: list[str] = []
        self.overview: dict | None = None

    async def setup(self, students: int, surveillants: int, cap: int, title: str) -> None:
        sig = self.sig
        sig.on_push = self._push
        await sig.connect()
        welcome = await sig.request({"type": "hello", "token": self.token},
                                    expect=("welcome",))
        if welcome.get("role") != "organiser":
            raise RuntimeError(f"creator link gave role {welcome.get('role')!r}")
        created = await sig.request({
            "type": "create_exam",
            "title": title,
            "kind": "written",
            "cap": cap,
            "note": "Load test: bots only.",
            "contact": "load-test@example.invalid",
            "ends_at": int(time.time()) + 3600,
            "id_check": False,
        }, expect=("exam_created",))
        self.exam = created.get("exam")
        self.student_link = created.get("student_link")
        self.surveillant_links = list(created.get("surveillant_links") or [])
        organiser_link = created.get("organiser_link")
        if organiser_link:
            # the creator link only creates; the exam is run with its organiser link
            await sig.close()
            sig = self.sig = Signalling(self.session, self.ws_url, "organiser")
            sig.on_push = self._push
            await sig.connect()
            await sig.request({"type": "hello", "token": token_of(organiser_link)},
                              expect=("welcome",))
        while len(self.surveillant_links) < surveillants:
            reply = await sig.request({"type": "add_surveillant"}, expect=("surveillant_link",))
            self.surveillant_links.append(reply["link"])
        if not self.student_link:
            raise RuntimeError("exam_created carried no student_link")

    def _push(self, msg: dict) -> None:
        if msg.get("type") == "overview":
            self.overview = msg

    async def end_exam(self) -> None:
        try:
            await self.sig.request({"type": "end_exam"}, expect=("ack", "exam_ended"), timeout=5)
        except Exception as exc:  # the server may close the socket first
            log.debug("end_exam: %s", exc)
        await self.sig.close()


# --- bot student -----------------------------------------------------------

class _Bot:
    """What bot students and bot surveillants share: a signalling socket and a peer connection."""

    name: str
    token: str
    sig: Signalling
    pc: RTCPeerConnection | None

    @property
    def is_connected(self) -> bool:
        return self.pc is not None and self.pc.connectionState == "connected"

    def _push(self, msg: dict) -> None:
        raise NotImplementedError

    async def _hello(self, role: str) -> dict:
        """Connect, say hello with the link, and check the link gave `role`."""
        self.sig.on_push = self._push
        await self.sig.connect()
        welcome = await self.sig.request({"type": "hello", "token": self.token, "name": self.name},
                                         expect=("welcome",))
        if welcome.get("role") != role:
            raise RuntimeError(f"{role} link gave role {welcome.get('role')!r}")
        return welcome

    async def _connected(self, pc: RTCPeerConnection, timeout: float) -> None:
        """Wait for the peer connection, note when it came, and watch it for disconnects."""
        await wait_connected(pc, timeout)
        self.connected_at = now_ns()
        watch(pc, self.sig, self.collector, self.name)

    async def stop(self) -> None:
        """Close the peer connection (at most 5 s) and the signalling socket."""
        if self.pc is not None:
            try:
                await asyncio.wait_for(self.pc.close(), 5)
            except Exception:
                pass
        await self.sig.close()


class BotStudent(_Bot):
    def __init__(self, index: int, session: aiohttp.ClientSession, ws_url: str, token: str,
                 library: MediaLibrary, collector: Collector) -> None:
        self.index = index
        self.name = f"Bot {index + 1}"
        self.sig = Signalling(session, ws_url, self.name)
        self.token = token
        self.library = library
        self.collector = collector
        self.pc: RTCPeerConnection | None = None
        self.tracks: list = []
        self.assigned = asyncio.Event()
        self.assigned_at: int | None = None
        self.connected_at: int | None = None
        self.queue_position: int | None = None
        self.participant_id: str | None = None
        self.pushes: dict[str, int] = {}
        self.error: str | None = None

    def _push(self, msg: dict) -> None:
        kind = msg.get("type", "?")
        self.pushes[kind] = self.pushes.get(kind, 0) + 1
        if kind == "assigned":
            if not self.assigned.is_set():
                self.assigned_at = now_ns()
            self.assigned.set()
        elif kind == "queue":
            self.queue_position = msg.get("position")
        elif kind in ("session_ended", "exam_ended"):
            self.assigned.clear()
            self.collector.event(self.name, f"{kind} {msg.get('reason', '')}".strip())

    async def start(self, timeout: float = 40.0) -> None:
        sig = self.sig
        welcome = await self._hello("student")
        self.participant_id = welcome.get("participant_id")

        lib = self.library
        pc = self.pc = RTCPeerConnection(new_rtc_config())
        # stagger the loops so bots do not send keyframes in lock-step
        webcam = PreEncodedVideoTrack(lib.webcam, make_tag(self.index, TRACK_WEBCAM),
                                      start_index=(self.index * 7) % len(lib.webcam.frames))
        screen = PreEncodedVideoTrack(lib.screen, make_tag(self.index, TRACK_SCREEN),
                                      start_index=(self.index * 3) % len(lib.screen.frames))
        mic = PreEncodedAudioTrack(lib.audio, start_index=self.index)
        self.tracks = [webcam, screen, mic]
        for track in (webcam, screen):
            t = pc.addTransceiver(track, direction="sendonly")
            prefer_codec(t, "video/VP8")
            t.sender._send_keyframe = track.request_keyframe  # answer PLI/FIR
        prefer_codec(pc.addTransceiver(mic, direction="sendonly"), "audio/opus")
        prefer_codec(pc.addTransceiver("audio", direction="recvonly"), "audio/opus")
        prefer_codec(pc.addTransceiver("video", direction="recvonly"), "video/VP8")

        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        try:
            answer = await sig.request(offer, expect=("answer",), timeout=timeout)
        except SignallingError as exc:
            if exc.code != "not_allowed":
                raise
            # the server may want the student placed first
            await asyncio.wait_for(self.assigned.wait(), timeout)
            answer = await sig.request(offer, expect=("answer",), timeout=timeout)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        install_send_hook(pc, self.collector)
        enlarge_receive_buffers(pc)
        await self._connected(pc, timeout)

    def keyframe_requests(self) -> int:
        return sum(getattr(t, "keyframe_requests", 0) for t in self.tracks)


# --- bot surveillant -------------------------------------------------------

class BotSurveillant(_Bot):
    def __init__(self, index: int, session: aiohttp.ClientSession, ws_url: str, token: str,
                 collector: Collector) -> None:
        self.index = index
        self.name = f"Bot Surveillant {index + 1}"
        self.sig = Signalling(session, ws_url, self.name)
        self.token = token
        self.collector = collector
        self.pc: RTCPeerConnection | None = None
        self.sink: RtpSink | None = None
        self.slots = 0
        self.roster: dict | None = None
        self.connected_at: int | None = None

    def _push(self, msg: dict) -> None:
        if msg.get("type") == "roster":
            self.roster = msg

    @property
    def students(self) -> int:
        if not self.roster:
            return 0
        return len(self.roster.get("students") or [])

    async def start(self, timeout: float = 40.0) -> None:
        sig = self.sig
        welcome = await self._hello("surveillant")
        slots = None
        try:
            roster = await sig.wait_for("roster", timeout=3)
            slots = roster.get("slots")
        except asyncio.TimeoutError:
            pass
        if not isinstance(slots, int) or slots <= 0:
            slots = int((welcome.get("exam") or {}).get("cap") or 8)
        self.slots = slots

        pc = self.pc = RTCPeerConnection(new_rtc_config())
        for _ in range(slots):
            prefer_codec(pc.addTransceiver("video", direction="recvonly"), "video/VP8")
            prefer_codec(pc.addTransceiver("video", direction="recvonly"), "video/VP8")
            prefer_codec(pc.addTransceiver("audio", direction="recvonly"), "audio/opus")
        talk = pc.addTransceiver(SilentTrack("audio"), direction="sendonly")
        prefer_codec(talk, "audio/opus")
        prefer_codec(pc.addTransceiver(SilentTrack("video"), direction="sendonly"), "video/VP8")

        await pc.setLocalDescription(await pc.createOffer())
        answer = await sig.request({"type": "offer", "sdp": pc.localDescription.sdp},
                                   expect=("answer",), timeout=timeout)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        pts = video_payload_types(answer["sdp"]) | video_payload_types(pc.localDescription.sdp)
        self.sink = RtpSink(self.collector, pts)
        self.sink.rtcp_ssrc = talk.sender._ssrc
        self.sink.install(pc)
        self.sink.start_rtcp()
        enlarge_receive_buffers(pc)
        await self._connected(pc, timeout)

    async def stop(self) -> None:
        if self.sink is not None:
            self.sink.stop()
        await super().stop()


async def gather_limited(factories: list[Callable[[], Awaitable[Any]]], limit: int) -> list:
    """Run coroutine factories with at most `limit` at a time; exceptions are returned."""
    semaphore = asyncio.Semaphore(limit)

    async def run(factory):
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(run(f) for f in factories), return_exceptions=True)


def cap_for(students: int, surveillants: int) -> int:
    return max(1, min(50, math.ceil(students / max(1, surveillants))))
