"""Pre-encoded synthetic media for the load-test bots, and the frame-id trailer.

Everything here is encoded ONCE per process at start-up (a few seconds of
VP8 webcam, VP8 screen and an Opus tone) and shared by every bot: a bot's
track only loops over the encoded packets, appends a 12-byte trailer to each
video frame (magic, frame id, bot/track tag) and returns an `av.Packet`, which
aiortc's `RTCRtpSender` packetizes without encoding (`encoder.pack`).

The trailer sits at the END of the VP8 frame data, so it travels in the last
RTP packet of the frame (the one with the marker bit). VP8 decoders ignore
trailing bytes after the last partition; `tests/test_bench_smoke.py` checks
that with PyAV's decoder.
"""

from __future__ import annotations

import asyncio
import fractions
import struct
import time
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

MAGIC = b"IvGl"
TRAILER = struct.Struct("!4sII")  # magic, frame id, tag
TRAILER_SIZE = TRAILER.size  # 12

# aiortc 1.16 packetizes VP8 in chunks of PACKET_MAX (1300) minus the payload
# descriptor, which always carries a 15-bit picture id: 4 bytes.
VP8_CHUNK = 1300 - 4

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_TIME_BASE = fractions.Fraction(1, 48000)

TRACK_WEBCAM = 0
TRACK_SCREEN = 1
TRACK_NAMES = {TRACK_WEBCAM: "webcam", TRACK_SCREEN: "screen"}


def make_tag(bot_index: int, track: int) -> int:
    """The 32-bit tag that names a bot's video track in the trailer."""
    return (bot_index << 1) | track


def split_tag(tag: int) -> tuple[int, int]:
    return tag >> 1, tag & 1


def pad_for_trailer(frame: bytes, chunk: int = VP8_CHUNK) -> bytes:
    """Return `frame` followed by zero bytes so that, once a trailer is added,
    the whole trailer lands in the LAST packet of the frame (chunk = payload
    bytes per RTP packet after the payload descriptor)."""
    rest = (len(frame) + TRAILER_SIZE) % chunk
    if 0 < rest < TRAILER_SIZE:
        return frame + bytes(TRAILER_SIZE - rest)
    return frame


def add_trailer(padded_frame: bytes, frame_id: int, tag: int) -> bytes:
    return padded_frame + TRAILER.pack(MAGIC, frame_id & 0xFFFFFFFF, tag & 0xFFFFFFFF)


def read_trailer(buf: bytes | memoryview, end: int | None = None) -> tuple[int, int] | None:
    """(frame id, tag) if `buf[:end]` ends with a trailer, else None."""
    if end is None:
        end = len(buf)
    if end < TRAILER_SIZE or buf[end - TRAILER_SIZE : end - 8] != MAGIC:
        return None
    _, frame_id, tag = TRAILER.unpack_from(buf, end - TRAILER_SIZE)
    return frame_id, tag


def rtp_payload_bounds(data: bytes) -> tuple[int, int] | None:
    """Start and end of the payload of a plain (decrypted) RTP packet."""
    n = len(data)
    if n < 12:
        return None
    b0 = data[0]
    pos = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if pos + 4 > n:
            return None
        pos += 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
    end = n
    if b0 & 0x20:  # padding
        end -= data[-1]
    if pos > end:
        return None
    return pos, end


def rtp_trailer(data: bytes) -> tuple[int, int] | None:
    """(frame id, tag) carried by an RTP packet with the marker bit, or None.

    Cheap enough for every packet: no header parsing unless the marker bit is
    set and the packet is not RTCP.
    """
    if len(data) < 12 + TRAILER_SIZE:
        return None
    b1 = data[1]
    if b1 < 0x80 or 192 <= b1 <= 223:  # no marker, or RTCP
        return None
    end = len(data)
    if data[0] & 0x20:
        end -= data[-1]
    return read_trailer(data, end)


# --- synthetic content -------------------------------------------------------

def _webcam_image(i: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (x + i * 4) % 256
    img[..., 1] = (y + i * 2) % 256
    img[..., 2] = 128
    # a noisy "head" moving around
    cx = int(w / 2 + w * 0.23 * np.sin(i / 10))
    cy = int(h / 2 + h * 0.22 * np.cos(i / 13))
    s = max(8, h // 7)
    y0, y1, x0, x1 = max(0, cy - s), min(h, cy + s), max(0, cx - s), min(w, cx + s)
    img[y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _screen_image(i: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    img = np.full((h, w, 3), 235, np.uint8)
    lines = np.random.default_rng(7)
    step = max(12, h // 30)
    for line in range(h // step + 1):
        yy = (line * step - i * 6) % h
        ln = int(lines.integers(w // 6, w - 2 * (w // 30)))
        hh = min(h, yy + step // 2) - yy
        img[yy : yy + hh, w // 30 : w // 30 + ln] = rng.integers(
            0, 90, (hh, ln, 3), dtype=np.uint8
        )
    cx, cy = (i * 37) % (w - 12), (i * 23) % (h - 20)
    img[cy : cy + 20, cx : cx + 12] = 0  # the mouse pointer
    return img


def encode_vp8(
    width: int,
    height: int,
    fps: int,
    kbps: int,
    seconds: float,
    keyframe_seconds: float,
    kind: str,
    seed: int = 1,
) -> list[tuple[bytes, bool]]:
    """Encode `seconds` of synthetic video with libvpx (VP8, realtime, CBR).

    Returns [(frame bytes, is keyframe)], keyframe first, one every
    `keyframe_seconds`.
    """
    codec = av.CodecContext.create("libvpx", "w")
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = kbps * 1000
    codec.framerate = fractions.Fraction(fps, 1)
    codec.time_base = fractions.Fraction(1, fps)
    gop = max(1, int(round(fps * keyframe_seconds)))
    codec.gop_size = gop
    codec.qmin = 2
    codec.qmax = 56
    rate = str(kbps * 1000)
    codec.options = {
        "bufsize": rate,
        "cpu-used": "4",
        "deadline": "realtime",
        "lag-in-frames": "0",
        "minrate": rate,
        "maxrate": rate,
        "overshoot-pct": "15",
        "undershoot-pct": "100",
        "partitions": "0",
        "static-thresh": "1",
    }
    codec.thread_count = 1
    rng = np.random.default_rng(seed)
    draw = _webcam_image if kind == "webcam" else _screen_image
    frames: list[tuple[bytes, bool]] = []
    count = int(round(fps * seconds))
    for i in range(count):
        image = draw(i, width, height, rng)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        if i % gop == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in codec.encode(frame):
            frames.append((bytes(packet), bool(packet.is_keyframe)))
    for packet in codec.encode(None):
        frames.append((bytes(packet), bool(packet.is_keyframe)))
    if not frames or not frames[0][1]:
        raise RuntimeError("libvpx did not start with a keyframe")
    return frames


def encode_opus_tone(kbps: int = 32, seconds: float = 1.0, hz: float = 440.0) -> list[bytes]:
    """Encode a tone with libopus, 20 ms frames, 48 kHz stereo."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = kbps * 1000
    codec.time_base = AUDIO_TIME_BASE
    codec.options = {"vbr": "off", "application": "voip"}  # constant ~kbps, like a call
    codec.open()
    n = codec.frame_size or 960
    total = int(48000 * seconds) // n * n
    t = np.arange(total) / 48000
    tone = (0.2 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    stereo = np.stack([tone, tone], 1).reshape(1, -1)
    out: list[bytes] = []
    for i in range(total // n):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(stereo[:, i * n * 2 : (i + 1) * n * 2]),
            format="s16",
            layout="stereo",
        )
        frame.sample_rate = 48000
        frame.pts = i * n
        out.extend(bytes(p) for p in codec.encode(frame))
    out.extend(bytes(p) for p in codec.encode(None))
    return [p for p in out if p]


@dataclass
class VideoLoop:
    name: str
    fps: int
    frames: list[bytes]  # already padded for the trailer
    keyframes: list[bool]
    width: int
    height: int
    kbps_measured: float = 0.0
    keyframe_indices: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, name: str, width: int, height: int, fps: int, kbps: int,
              seconds: float, keyframe_seconds: float) -> "VideoLoop":
        encoded = encode_vp8(width, height, fps, kbps, seconds, keyframe_seconds, name)
        frames = [pad_for_trailer(data) for data, _ in encoded]
        keys = [key for _, key in encoded]
        total = sum(len(data) for data, _ in encoded)
        return cls(
            name=name,
            fps=fps,
            frames=frames,
            keyframes=keys,
            width=width,
            height=height,
            kbps_measured=total * 8 / (len(encoded) / fps) / 1000,
            keyframe_indices=[i for i, key in enumerate(keys) if key],
        )

    def next_keyframe(self, index: int) -> int:
        for k in self.keyframe_indices:
            if k >= index:
                return k
        return 0


@dataclass
class MediaLibrary:
    """The shared, pre-encoded loops (the "standard profile" by default)."""

    webcam: VideoLoop
    screen: VideoLoop
    audio: list[bytes]
    encode_seconds: float

    @classmethod
    def standard(
        cls, loop_seconds: float = 6.0, keyframe_seconds: float = 3.0,
        screen_profile: tuple[int, int, int, int] = (1280, 720, 5, 300),
    ) -> "MediaLibrary":
        """`screen_profile` = (width, height, fps, kbps) of every bot's screen: e.g. the grid's
        screen thumbnail, 640×360 at 2 fps and 250 kbit/s, against the old 320×180 at 3 fps."""
        started = time.perf_counter()
        webcam = VideoLoop.build("webcam", 640, 360, 15, 400, loop_seconds, keyframe_seconds)
        width, height, fps, kbps = screen_profile
        screen = VideoLoop.build("screen", width, height, fps, kbps, loop_seconds, keyframe_seconds)
        audio = encode_opus_tone(32, 1.0)
        return cls(webcam, screen, audio, time.perf_counter() - started)

    def describe(self) -> dict:
        audio_kbps = sum(map(len, self.audio)) * 8 / (len(self.audio) * 0.02) / 1000
        return {
            "webcam": {"width": self.webcam.width, "height": self.webcam.height,
                       "fps": self.webcam.fps, "kbps": round(self.webcam.kbps_measured, 1),
                       "loop_frames": len(self.webcam.frames),
                       "keyframe_every_frames": (self.webcam.keyframe_indices[1]
                                                 if len(self.webcam.keyframe_indices) > 1 else None)},
            "screen": {"width": self.screen.width, "height": self.screen.height,
                       "fps": self.screen.fps, "kbps": round(self.screen.kbps_measured, 1),
                       "loop_frames": len(self.screen.frames),
                       "keyframe_every_frames": (self.screen.keyframe_indices[1]
                                                 if len(self.screen.keyframe_indices) > 1 else None)},
            "audio": {"codec": "opus", "frame_ms": 20, "kbps": round(audio_kbps, 1)},
            "encode_seconds": round(self.encode_seconds, 2),
        }


# --- tracks ------------------------------------------------------------------

class _PacedTrack(MediaStreamTrack):
    """A track that hands out one packet every period, in real time, like a device."""

    _start: float | None = None
    _due = 0.0

    async def _wait_turn(self) -> None:
        """Sleep until the next packet is due; far behind (overloaded), skip ahead like a camera."""
        now = asyncio.get_running_loop().time()
        if self._start is None:
            self._start = self._due = now
        delay = self._due - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.25:
            self._due = now


class PreEncodedVideoTrack(_PacedTrack):
    """Loops over a `VideoLoop`, paced in real time, each frame with a trailer.

    `on_frame(tag, frame_id)` (optional) is told about each frame handed out.
    A PLI/FIR (see `request_keyframe`) makes the next frame the next keyframe
    of the loop.
    """

    kind = "video"

    def __init__(self, loop: VideoLoop, tag: int, start_index: int = 0) -> None:
        super().__init__()
        self._loop = loop
        self._tag = tag
        self._index = loop.next_keyframe(start_index)
        self._period = 1.0 / loop.fps
        self._start: float | None = None
        self._due = 0.0
        self._want_keyframe = False
        self._last_forced = -1.0
        self.frame_id = 0
        self.keyframe_requests = 0
        self.keyframes_forced = 0

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._want_keyframe = True

    async def recv(self) -> av.Packet:
        await self._wait_turn()
        loop = self._loop
        if self._want_keyframe:
            self._want_keyframe = False
            if not loop.keyframes[self._index] and self._due - self._last_forced > 0.3:
                self._index = loop.next_keyframe(self._index)
                self.keyframes_forced += 1
                self._last_forced = self._due
        self.frame_id += 1
        packet = av.Packet(add_trailer(loop.frames[self._index], self.frame_id, self._tag))
        packet.pts = int((self._due - self._start) * 90000)
        packet.time_base = VIDEO_TIME_BASE
        self._index = (self._index + 1) % len(loop.frames)
        self._due += self._period
        return packet


class PreEncodedAudioTrack(_PacedTrack):
    """Loops over pre-encoded 20 ms Opus packets, paced in real time."""

    kind = "audio"

    def __init__(self, packets: list[bytes], start_index: int = 0) -> None:
        super().__init__()
        self._packets = packets
        self._index = start_index % len(packets)
        self._start: float | None = None
        self._due = 0.0
        self._samples = 0

    async def recv(self) -> av.Packet:
        await self._wait_turn()
        packet = av.Packet(self._packets[self._index])
        packet.pts = int((self._due - self._start) * 48000) // 960 * 960
        packet.time_base = AUDIO_TIME_BASE
        self._index = (self._index + 1) % len(self._packets)
        self._due += 0.02
        return packet


class SilentTrack(MediaStreamTrack):
    """A track whose `recv()` never returns: the sender loop just waits."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self):  # pragma: no cover - never returns
        await asyncio.Event().wait()
