"""Test participants: a signalling client and aiortc peers laid out like the real pages.

The students encode real VP8/Opus (aiortc's encoders, client side); the
surveillants receive through aiortc's normal path, so frames that arrive there
were decodable.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamTrack

VIDEO_CLOCK = fractions.Fraction(1, 90000)


class Client:
    """One signalling socket: sends requests, collects pushes by type."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.url = base_url.replace("http", "ws", 1) + "/ws"
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self.received: list[dict[str, Any]] = []
        self.closed_code: int | None = None
        self._next_id = 0
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, token: str, name: str | None = None, resume: str | None = None) -> dict[str, Any]:
        """Open the socket, say hello, and return the welcome."""
        self.socket = await self.session.ws_connect(self.url, max_msg_size=1 << 20)
        self._reader = asyncio.ensure_future(self._read())
        hello: dict[str, Any] = {"type": "hello", "v": 1, "token": token}
        if name is not None:
            hello["name"] = name
        if resume is not None:
            hello["resume"] = resume
        await self.send(hello)
        return await self.wait_for(lambda m: m["type"] in ("welcome", "error"))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.socket is not None
        await self.socket.send_str(json.dumps(message))

    async def request(self, message: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        """Send with an id and wait for the reply that refers to it."""
        self._next_id += 1
        ref = self._next_id
        await self.send({"v": 1, **message, "id": ref})
        return await self.wait_for(lambda m: m.get("re") == ref, timeout)

    def mark(self) -> int:
        """A position in the received messages, for `wait_for(..., after=mark)`."""
        return len(self.received)

    async def wait_for(self, predicate: Any, timeout: float = 10.0, after: int = 0) -> dict[str, Any]:
        """The first message (seen since `after`, or coming) that matches."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while True:
                    for message in self.received[after:]:
                        if predicate(message):
                            return message
                    if self.closed_code is not None:
                        raise ConnectionError(f"closed with {self.closed_code}")
                    await self._changed.wait()

    def latest(self, kind: str) -> dict[str, Any] | None:
        for message in reversed(self.received):
            if message["type"] == kind:
                return message
        return None

    async def _read(self) -> None:
        assert self.socket is not None
        async for frame in self.socket:
            if frame.type == aiohttp.WSMsgType.TEXT:
                async with self._changed:
                    self.received.append(json.loads(frame.data))
                    self._changed.notify_all()
        async with self._changed:
            self.closed_code = self.socket.close_code
            self._changed.notify_all()

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class MovingPicture(MediaStreamTrack):
    """A video track whose frames change every time (so VP8 has something to send)."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 180, fps: int = 15) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.count = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        self.count += 1
        wait = self._start + self.count / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        image = np.zeros((self.height, self.width, 3), np.uint8)
        image[:, :, 1] = (self.count * 7) % 255
        image[: self.height // 2, : (self.count * 5) % self.width] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = int(self.count * 90000 / self.fps)
        frame.time_base = VIDEO_CLOCK
        return frame


class Tone(MediaStreamTrack):
    """A 440 Hz tone, 20 ms at a time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.samples = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self.samples / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        count = int(AUDIO_PTIME * 48000)
        t = (np.arange(count) + self.samples) / 48000
        data = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, 48000)
        self.samples += count
        return frame


def _prefer(transceiver: Any, kind: str) -> None:
    mime = "video/VP8" if kind == "video" else "audio/opus"
    transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType == mime])


class Received:
    """Counts frames that an aiortc receiver decoded on one track."""

    def __init__(self) -> None:
        self.frames = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.last_frame: Any = None

    async def pump(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames += 1
                self.last_frame = frame
                now = time.monotonic()
                self.last_at = now
                if self.first_at is None:
                    self.first_at = now
        except Exception:
            return


async def _gathered(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


class StudentPeer:
    """A student's connection: webcam, screen, microphone out; voice and examiner camera in."""

    def __init__(self, configuration: RTCConfiguration | None = None) -> None:
        """`configuration` defaults to no ICE servers, all media bundled."""
        self.pc = RTCPeerConnection(
            configuration or RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.webcam = MovingPicture(320, 180, 15)
        self.screen = MovingPicture(640, 360, 5)
        self.microphone = Tone()
        self.voice = Received()
        self.examiner = Received()
        self._tasks: list[asyncio.Task[None]] = []
        for track in (self.webcam, self.screen, self.microphone):
            _prefer(self.pc.addTransceiver(track, direction="sendonly"), track.kind)
        for kind in ("audio", "video"):
            _prefer(self.pc.addTransceiver(kind, direction="recvonly"), kind)

    async def connect(self, client: Client, on_answer: Callable[[str], Any] | None = None) -> None:
        """Offer, and take the server's answer; `on_answer(sdp)` runs in between (the answer is
        known, the connection not yet started)."""
        answer = await client.request({"type": "offer", "sdp": await _gathered(self.pc)})
        assert answer["type"] == "answer", answer
        if on_answer is not None:
            on_answer(answer["sdp"])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        transceivers = self.pc.getTransceivers()
        self._tasks.append(asyncio.ensure_future(self.voice.pump(transceivers[3].receiver.track)))
        self._tasks.append(asyncio.ensure_future(self.examiner.pump(transceivers[4].receiver.track)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


class SurveillantPeer:
    """A surveillant's connection: per slot webcam, screen, microphone in; voice and camera out."""

    def __init__(self, slots: int, with_voice: bool = True, with_camera: bool = False) -> None:
        self.slots = slots
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.received: list[dict[str, Received]] = []
        self._tasks: list[asyncio.Task[None]] = []
        for _ in range(slots):
            for kind in ("video", "video", "audio"):
                _prefer(self.pc.addTransceiver(kind, direction="recvonly"), kind)
            self.received.append({"webcam": Received(), "screen": Received(), "microphone": Received()})
        self.voice = Tone() if with_voice else None
        self.camera = MovingPicture(320, 180, 15) if with_camera else None
        _prefer(self.pc.addTransceiver(self.voice or "audio", direction="sendonly"), "audio")
        _prefer(self.pc.addTransceiver(self.camera or "video", direction="sendonly"), "video")

    async def connect(self, client: Client) -> None:
        answer = await client.request({"type": "offer", "sdp": await _gathered(self.pc)})
        assert answer["type"] == "answer", answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        transceivers = self.pc.getTransceivers()
        for slot in range(self.slots):
            for index, name in enumerate(("webcam", "screen", "microphone")):
                track = transceivers[slot * 3 + index].receiver.track
                self._tasks.append(asyncio.ensure_future(self.received[slot][name].pump(track)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


async def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> float:
    """Poll until `predicate()` is true; returns the seconds it took, raises TimeoutError."""
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)
    return time.monotonic() - start
