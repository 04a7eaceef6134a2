"""An aiortc student in its own process, to run inside a network namespace (tests/netns.py):
`python -m tests.netns_student BASE_URL STUDENT_TOKEN SECONDS [rtx]`.

It joins, offers webcam, screen and microphone (VP8, with RTX if asked), prints `connected`
once the answer is in, sends for SECONDS and leaves."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from aiortc import RTCRtpSender

from tests.peers import Client, StudentPeer


async def main(url: str, token: str, seconds: float, rtx: bool) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, url)
        welcome = await client.connect(token, name="Sam")
        assert welcome["type"] == "welcome", welcome
        peer = StudentPeer()
        if rtx:
            codecs = RTCRtpSender.getCapabilities("video").codecs
            for transceiver in peer.pc.getTransceivers()[:2]:
                transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() in ("video/vp8", "video/rtx")])
        await peer.connect(client)
        print("connected", flush=True)
        await asyncio.sleep(seconds)
        await peer.close()
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:] == ["rtx"]))
