"""How long the SFU's answer to a desk's offer takes, and how long it holds the event loop.

`python -m load_tests.desk_answer --caps 8 20 50 --runs 3`

A desk offers three m-lines per place (a cap-50 desk: 152). The SFU answers in
its one event loop, which also forwards every exam's media, so what matters is
the longest stretch of CPU between two turns of the loop: a ticker task wakes
every millisecond and records the process CPU time spent between its wake-ups.
The offer comes from an aiortc desk laid out like desk.js (VP8 and Opus only;
Chromium's is about 15% shorter at the same cap), or from `--sdp FILE` (a
browser's offer saved by hand, with `--caps` naming its cap). Measured on a
busy 2-core machine with Chromium 156's cap-50 offer (159,192 characters):
170-250 ms CPU in all; the longest stretch without a turn 87-108 ms, where it
was 200-215 ms before MediaPeer.answer took turns (sfu/peer.py
TRANSCEIVERS_PER_TURN). At cap 8: about 20 ms in all.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from sfu.peer import MediaPeer, surveillant_layout
from tests.peers import SurveillantPeer


async def _ticker(gaps: list[float]) -> None:
    last = time.process_time()
    while True:
        await asyncio.sleep(0.001)
        now = time.process_time()
        gaps.append(now - last)
        last = now


async def _desk_offer(cap: int) -> str:
    desk = SurveillantPeer(cap)
    try:
        await desk.pc.setLocalDescription(await desk.pc.createOffer())
        return desk.pc.localDescription.sdp
    finally:
        await desk.close()


async def measure(cap: int, sdp: str) -> tuple[float, float]:
    """(CPU seconds of one answer, the longest CPU seconds between two turns of the loop)."""
    gaps: list[float] = []
    ticker = asyncio.ensure_future(_ticker(gaps))
    try:
        await asyncio.sleep(0.05)
        gaps.clear()
        peer = MediaPeer("desk", surveillant_layout(cap), ())
        start = time.process_time()
        try:
            await peer.answer(sdp)
            spent = time.process_time() - start
        finally:
            await peer.close()
        await asyncio.sleep(0.01)
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    return spent, max(gaps, default=0.0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", type=int, nargs="+", default=[8, 20, 50])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sdp", help="a browser's desk offer to answer instead of an aiortc one")
    arguments = parser.parse_args()
    for cap in arguments.caps:
        if arguments.sdp:
            with open(arguments.sdp, encoding="utf-8", newline="") as file:
                sdp = file.read()
        else:
            sdp = await _desk_offer(cap)
        results = [await measure(cap, sdp) for _ in range(arguments.runs)]
        cpu = statistics.median(spent for spent, _ in results)
        stall = max(longest for _, longest in results)
        print(f"cap {cap:2d}: offer {len(sdp):7,d} chars, answer {cpu * 1000:5.0f} ms CPU (median), "
              f"longest stretch without a loop turn {stall * 1000:4.0f} ms CPU")


if __name__ == "__main__":
    asyncio.run(main())
