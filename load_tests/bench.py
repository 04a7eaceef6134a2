"""Load test of the Invigil SFU through its real signalling.

    python -m load_tests.bench --students 40 --surveillants 5 --seconds 120 \
        --mode forward --json bench.json [--plot bench.png] [--warmup 5]

Starts `python -m sfu.cli serve --media-mode MODE` as a subprocess, creates an
exam as the organiser, connects M bot surveillants and N bot students (all in
THIS process, one event loop), lets them run, and measures the SFU process
from outside (psutil) over a window of `--seconds` after `--warmup`. See
load_tests/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import re
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import psutil

from sfu import lane as native_lanes

from .bots import (
    BotStudent,
    BotSurveillant,
    Collector,
    Organiser,
    cap_for,
    gather_limited,
    now_ns,
    token_of,
)
from .media import MediaLibrary
from .metrics import frame_stats, loop_factory, percentile, round_floats

TEST_SECRET = "invigil-load-test-secret-0123456789abcdef"
LINK_RE = re.compile(r"(https?://\S+?/organise/?#\S+)")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The SFU under test, as a subprocess; its output is kept (tail) and echoed on failure."""

    def __init__(self, mode: str, port: int, extra_args: list[str],
                 module: str = "sfu.cli") -> None:
        self.cmd = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1",
                    "--port", str(port), "--media-mode", mode, *extra_args]
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None
        self.tail: list[str] = []
        self.creator_link: str | None = None
        self._link_found = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self._children: list[psutil.Process] = []
        self._children_at = -1e9

    async def start(self, timeout: float) -> None:
        env = dict(os.environ)
        env["INVIGIL_SECRET"] = TEST_SECRET
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, cwd=str(ROOT), env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.ps = psutil.Process(self.proc.pid)
        self._reader = asyncio.ensure_future(self._read())
        waiter = asyncio.ensure_future(self._link_found.wait())
        exited = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait({waiter, exited}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._link_found.is_set():
            exited.cancel()
            return
        if exited in done:
            await asyncio.sleep(0.2)  # let the reader collect the last lines
            raise RuntimeError(f"server exited with code {self.proc.returncode} before "
                               f"printing the creator link")
        exited.cancel()
        raise RuntimeError(f"server printed no creator link within {timeout:.0f} s")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            self.tail.append(text)
            del self.tail[:-200]
            if self.creator_link is None:
                m = LINK_RE.search(text)
                if m:
                    self.creator_link = m.group(1)
                    self._link_found.set()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def processes(self) -> list[psutil.Process]:
        """The server and its children. Finding children scans all of /proc,
        which stalls the bots' event loop, so it is done every 10 s only."""
        if self.ps is None:
            return []
        now = time.monotonic()
        if now - self._children_at > 10:
            self._children_at = now
            with contextlib.suppress(psutil.Error):
                self._children = self.ps.children(recursive=True)
        return [self.ps, *self._children]

    def cpu_seconds(self) -> float | None:
        total = 0.0
        seen = False
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
                seen = True
        return total if seen else None

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds of the entry (`main`) and of each worker (`worker1`, … by pid order)."""
        found: dict[str, float] = {}
        processes = self.processes()
        for label, p in [("main", processes[0])] + [
                (f"worker{i + 1}", p) for i, p in enumerate(sorted(processes[1:], key=lambda p: p.pid))
        ] if processes else []:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                found[label] = t.user + t.system
        return found

    def rss_mb(self) -> float | None:
        total = 0
        seen = False
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
                seen = True
        return total / 2**20 if seen else None

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)


class Progress:
    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_plain = 0.0

    def show(self, text: str, force: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        elif force or time.monotonic() - self._last_plain >= 5:
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        self.done() if self.tty else None
        self.stream.write(text + "\n")
        self.stream.flush()


def describe_exc(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


async def run_bench(args: argparse.Namespace) -> dict:
    progress = Progress()
    me = psutil.Process()
    started_wall = time.time()
    started_mono = time.monotonic()
    progress.note(f"[bench] encoding the media loops once (standard profile)…")
    library = MediaLibrary.standard(keyframe_seconds=args.keyframe_seconds, screen_profile=args.screen)
    collector = Collector()
    port = free_port()
    server = Server(args.mode, port, ["--workers", str(args.workers), *(args.server_arg or [])],
                    args.server_module)
    result: dict = {
        "mode": args.mode,
        "students": args.students,
        "surveillants": args.surveillants,
        "exams": args.exams,
        "workers": args.workers,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "grace_seconds": args.grace,
        "server_command": " ".join(server.cmd),
        # The server inherits this environment and install: lanes open there iff here,
        # and only for forwarding (transcode mode goes through aiortc's own path).
        "native_lanes": native_lanes.ENABLED and args.mode == "forward",
        "media_profile": library.describe(),
        "machine": {
            "cpu_count": psutil.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "event_loop": "uvloop" if loop_factory() else "asyncio",
        },
        "started_at": started_wall,
        "load_average_start": list(os.getloadavg()),
        "errors": [],
    }
    with contextlib.suppress(Exception):
        import aiortc
        result["machine"]["aiortc"] = aiortc.__version__

    errors: list[str] = result["errors"]
    gc_watch = GcWatch()
    SNAPSHOT_MS.clear()
    students: list[BotStudent] = []
    surveillants: list[BotSurveillant] = []
    organisers: list[Organiser] = []
    samples: list[dict] = []
    sampler_task: asyncio.Task | None = None
    session = aiohttp.ClientSession()
    t0 = t1 = None
    try:
        progress.note(f"[bench] starting: {' '.join(server.cmd)}")
        await server.start(args.server_timeout)
        progress.note(f"[bench] server up on port {port} (pid {server.proc.pid})")
        ws_url = f"ws://127.0.0.1:{port}/ws"

        # --exams K: K equal exams, students and surveillants dealt out in order.
        share = [(args.students * (k + 1) // args.exams - args.students * k // args.exams,
                  args.surveillants * (k + 1) // args.exams - args.surveillants * k // args.exams)
                 for k in range(args.exams)]
        cap = cap_for(share[0][0], share[0][1])
        result["cap"] = cap
        for k, (n_students, n_surveillants) in enumerate(share):
            organiser = Organiser(session, ws_url, token_of(server.creator_link))
            organisers.append(organiser)
            await organiser.setup(n_students, n_surveillants, cap_for(n_students, n_surveillants),
                                  title=f"Load test {k + 1}: {n_students}/{n_surveillants}")

        # sample the SFU and the bots once a second from now on
        state = {"phase": "connecting", "started": started_mono}
        sampler_task = asyncio.ensure_future(
            sample_loop(server, me, collector, students, surveillants, samples, state,
                        progress, args))

        for organiser, (n_students, n_surveillants) in zip(organisers, share):
            surveillants.extend(
                BotSurveillant(len(surveillants) + i, session, ws_url, token_of(link), collector)
                for i, link in enumerate(organiser.surveillant_links[:n_surveillants]))
        outcomes = await gather_limited([s.start for s in surveillants], args.connect_concurrency)
        for bot, outcome in zip(surveillants, outcomes):
            if isinstance(outcome, BaseException):
                errors.append(f"{bot.name}: {describe_exc(outcome)}")
        if not any(s.is_connected for s in surveillants):
            raise RuntimeError("no bot surveillant connected: " + "; ".join(errors[-3:]))

        for organiser, (n_students, _) in zip(organisers, share):
            student_token = token_of(organiser.student_link)
            students.extend(BotStudent(len(students) + i, session, ws_url, student_token, library, collector)
                            for i in range(n_students))
        outcomes = await gather_limited([s.start for s in students], args.connect_concurrency)
        for bot, outcome in zip(students, outcomes):
            if isinstance(outcome, BaseException):
                bot.error = describe_exc(outcome)
                errors.append(f"{bot.name}: {bot.error}")
        if not any(s.is_connected for s in students):
            raise RuntimeError("no bot student connected: " + "; ".join(errors[-3:]))
        if not server.alive:
            raise RuntimeError("the server exited during connection")

        # everything built so far lives until the end: keep it out of the
        # collector's way, and watch what the collector still costs
        gc.collect()
        gc.freeze()
        gc.callbacks.append(gc_watch)
        state["phase"] = "warm-up"
        state["phase_end"] = time.monotonic() + args.warmup
        await asyncio.sleep(args.warmup)

        # --- the measured window ---
        snap0 = snapshot(server, me, collector)
        t0 = snap0["t"]
        eligible0 = eligible_students(students, surveillants)
        state.update(phase="measuring", t0=t0, phase_end=time.monotonic() + args.seconds)
        rss_at_20 = None
        while True:
            remaining = t0 + args.seconds * 1e9 - now_ns()
            if remaining <= 0:
                break
            await asyncio.sleep(min(1.0, remaining / 1e9))
            if rss_at_20 is None and now_ns() - t0 >= 20e9:
                rss_at_20 = server.rss_mb()
            if not server.alive:
                errors.append("the server exited during the measured window")
                result["failed"] = True
                break
        snap1 = snapshot(server, me, collector)
        t1 = snap1["t"]
        state.update(phase="grace", phase_end=time.monotonic() + args.grace)
        await asyncio.sleep(args.grace)
        state["phase"] = "done"

        # placed and connected when the window opened; one that drops later counts as losses
        eligible = eligible0
        result.update(compute(args, collector, snap0, snap1, samples, eligible,
                              students, surveillants, rss_at_20))
    except BaseException as exc:
        errors.append(f"bench: {describe_exc(exc)}")
        result["failed"] = True
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
            raise
    finally:
        if sampler_task is not None:
            sampler_task.cancel()
            with contextlib.suppress(BaseException):
                await sampler_task
        progress.done()
        origin = t0 if t0 is not None else (samples[0]["t_ns"] if samples else 0)
        for sample in samples:  # seconds since the window opened (negative: before)
            sample["t"] = (sample.pop("t_ns") - origin) / 1e9
        result["samples"] = samples
        # bots that lost their connection while the bench still ran (t: s since the window opened)
        stop_at = t1 + int(args.grace * 1e9) if t1 is not None else None
        result["disconnects"] = [
            {"t": (t - origin) / 1e9, "bot": who, "what": what}
            for t, who, what in collector.events if stop_at is None or t <= stop_at]
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(gc_watch)
        gc.unfreeze()
        result["bots_gc_collections"] = len(gc_watch.pauses_ms)
        result["bots_gc_pause_ms_max"] = max(gc_watch.pauses_ms, default=None)
        result["bench_sampler_ms_max"] = max(SNAPSHOT_MS, default=None)
        result["students_connected"] = sum(1 for s in students if s.connected_at)
        result["surveillants_connected"] = sum(1 for s in surveillants if s.connected_at)
        progress.note("[bench] stopping bots and server…")
        for organiser in organisers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(organiser.end_exam(), 6)
        await asyncio.gather(*(b.stop() for b in [*students, *surveillants]),
                             return_exceptions=True)
        await session.close()
        await server.stop()
        result["server_exit_code"] = server.proc.returncode if server.proc else None
        if result.get("failed") or errors:
            result["server_log_tail"] = server.tail[-60:]
    return result


def eligible_students(students: list[BotStudent], surveillants: list[BotSurveillant]) -> set[int]:
    """Students whose frames should reach a surveillant: connected and placed."""
    rostered: set[str] = set()
    for s in surveillants:
        for entry in (s.roster or {}).get("students") or []:
            if isinstance(entry, dict) and entry.get("id"):
                rostered.add(entry["id"])
    out = set()
    for bot in students:
        if not bot.is_connected:
            continue
        if bot.assigned.is_set() or (bot.participant_id and bot.participant_id in rostered):
            out.add(bot.index)
    return out


def machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0) - getattr(t, "steal", 0.0)


def steal_seconds() -> float:
    """CPU time the hypervisor gave to someone else while this machine wanted it.

    On a shared host the same work costs more CPU seconds when neighbours are busy,
    so runs with much steal are not comparable with quiet ones.
    """
    return getattr(psutil.cpu_times(), "steal", 0.0)


class UdpDrops:
    """Datagrams the kernel dropped on a set of processes' UDP sockets (receive
    buffer full), from /proc/net/udp{,6}. The sockets of each process are
    looked up again every 10 s only (it costs a readlink per open file)."""

    def __init__(self) -> None:
        self._inodes: dict[int, set[str]] = {}
        self._at: dict[int, float] = {}
        # last count per socket: a closed socket keeps its share, so totals never go back
        self._last: dict[str, dict[str, int]] = {}

    def _sockets(self, pid: int) -> set[str]:
        now = time.monotonic()
        if now - self._at.get(pid, -1e9) > 10:
            self._at[pid] = now
            inodes: set[str] = set()
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                fds = []
            for fd in fds:
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
            self._inodes[pid] = inodes
        return self._inodes[pid]

    def read(self, groups: dict[str, list[int]]) -> dict[str, int | None]:
        wanted = {name: set().union(*(self._sockets(pid) for pid in pids)) if pids else set()
                  for name, pids in groups.items()}
        readable = False
        for path in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(path) as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            readable = True
            for line in lines:
                parts = line.split()
                if len(parts) < 13:
                    continue
                for name, inodes in wanted.items():
                    if parts[9] in inodes:
                        self._last.setdefault(name, {})[parts[9]] = int(parts[-1])
        if not readable:
            return {name: None for name in groups}
        return {name: sum(self._last.get(name, {}).values()) for name in groups}


UDP_DROPS = UdpDrops()


class GcWatch:
    """Pauses of the garbage collector in the bot process (they delay the bots'
    packets just like a slow SFU would)."""

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses_ms.append((time.perf_counter() - self._began) * 1000)
SNAPSHOT_MS: list[float] = []


def snapshot(server: Server, me: psutil.Process, collector: Collector) -> dict:
    began = time.perf_counter()
    t = me.cpu_times()
    drops = UDP_DROPS.read({"sfu": [p.pid for p in server.processes()], "bots": [me.pid]})
    snap = {
        "t": now_ns(),
        "sfu_udp_drops": drops["sfu"],
        "bots_udp_drops": drops["bots"],
        "machine_busy": machine_busy_seconds(),
        "steal": steal_seconds(),
        "sfu_cpu": server.cpu_seconds(),
        "sfu_cpu_by_process": server.cpu_by_process(),
        "bots_cpu": t.user + t.system,
        "rss": server.rss_mb(),
        "rx": collector.rx_packets,
        "tx": collector.tx_packets,
        "rx_video_frames": len(collector.rx_video_frame_times),
    }
    SNAPSHOT_MS.append((time.perf_counter() - began) * 1000)
    return snap


async def sample_loop(server, me, collector, students, surveillants, samples, state,
                      progress, args) -> None:
    prev = snapshot(server, me, collector)
    while True:
        await asyncio.sleep(1.0)
        cur = snapshot(server, me, collector)
        dt = (cur["t"] - prev["t"]) / 1e9
        if dt <= 0:
            continue
        sfu = None
        if cur["sfu_cpu"] is not None and prev["sfu_cpu"] is not None:
            sfu = 100 * (cur["sfu_cpu"] - prev["sfu_cpu"]) / dt
        bots = 100 * (cur["bots_cpu"] - prev["bots_cpu"]) / dt
        connected = sum(1 for s in students if s.is_connected)
        sample = {
            "t_ns": cur["t"],
            "machine_cpu_percent": 100 * (cur["machine_busy"] - prev["machine_busy"]) / dt,
            "sfu_udp_drops": delta(cur["sfu_udp_drops"], prev["sfu_udp_drops"]),
            "bots_udp_drops": delta(cur["bots_udp_drops"], prev["bots_udp_drops"]),
            "phase": state["phase"],
            "sfu_cpu_percent": sfu,
            "bots_cpu_percent": bots,
            "sfu_rss_mb": cur["rss"],
            "rx_packets_per_second": (cur["rx"] - prev["rx"]) / dt,
            "tx_packets_per_second": (cur["tx"] - prev["tx"]) / dt,
            "students_connected": connected,
        }
        samples.append(sample)
        prev = cur
        left = state.get("phase_end")
        left_text = f", {max(0.0, left - time.monotonic()):.0f} s left" if left else ""
        sv = sum(1 for s in surveillants if s.is_connected)
        elapsed = time.monotonic() - state["started"]
        progress.show(
            f"[bench {args.mode}] {elapsed:.0f} s, {state['phase']}{left_text} | students {connected}/"
            f"{args.students} connected, surveillants {sv}/{args.surveillants} | "
            f"rx {cur['rx']} pkts ({sample['rx_packets_per_second']:.0f}/s), "
            f"tx {sample['tx_packets_per_second']:.0f}/s | SFU cpu "
            f"{fmt(sfu, '{:.0f}')}% rss {fmt(cur['rss'], '{:.0f}')} MB | bots cpu {bots:.0f}%")


def delta(a, b):
    return None if a is None or b is None else a - b


def fmt(value, pattern: str) -> str:
    return "?" if value is None else pattern.format(value)


def compute(args, collector: Collector, s0: dict, s1: dict, samples: list[dict],
            eligible: set[int], students: list[BotStudent], surveillants: list[BotSurveillant],
            rss_at_20: float | None) -> dict:
    window = (s1["t"] - s0["t"]) / 1e9
    sfu_cpu = None
    if s0["sfu_cpu"] is not None and s1["sfu_cpu"] is not None:
        sfu_cpu = s1["sfu_cpu"] - s0["sfu_cpu"]
    bots_cpu = s1["bots_cpu"] - s0["bots_cpu"]
    forwarded = s1["rx"] - s0["rx"]
    by_process = {name: s1["sfu_cpu_by_process"][name] - s0["sfu_cpu_by_process"].get(name, 0.0)
                  for name in s1["sfu_cpu_by_process"]}
    workers_cpu = sum(v for k, v in by_process.items() if k.startswith("worker"))
    fs = frame_stats(collector, s0["t"], s1["t"], eligible)
    latencies = fs.pop("_latencies_ms")

    # frames counted without ids (all that transcoding leaves us): video
    # frames ending at a surveillant in the window / frames sent in the window
    rx_frames_window = sum(1 for t in collector.rx_video_frame_times if s0["t"] <= t <= s1["t"])
    by_count = (rx_frames_window / fs["frames_sent"]) if fs["frames_sent"] else None
    matched_by_id = bool(collector.frames_recv)
    window_rss = [x["sfu_rss_mb"] for x in samples
                  if x["phase"] == "measuring" and x["sfu_rss_mb"] is not None]
    rss_max = max([v for v in [*window_rss, s0["rss"], s1["rss"]] if v is not None], default=None)
    n_students = max(1, len(eligible))
    out = {
        "window_seconds": window,
        "sfu_cpu_seconds": sfu_cpu,
        "sfu_cpu_percent": None if sfu_cpu is None else 100 * sfu_cpu / window,
        "sfu_cpu_percent_per_student": None if sfu_cpu is None else
        100 * sfu_cpu / window / n_students,
        "forwarded_packets": forwarded,
        "forwarded_packets_per_second": forwarded / window if window else None,
        "cpu_us_per_forwarded_packet": (sfu_cpu * 1e6 / forwarded)
        if (sfu_cpu is not None and forwarded) else None,
        "sfu_cpu_seconds_by_process": by_process,
        # With workers, `main` is the entry (pages and signalling only): media CPU is the workers'.
        "workers_cpu_us_per_forwarded_packet": (workers_cpu * 1e6 / forwarded)
        if (workers_cpu and forwarded) else None,
        "student_packets_sent": s1["tx"] - s0["tx"],
        "frame_matching": "id" if matched_by_id else "count",
        "frame_delivery_ratio": fs["frame_delivery_ratio"] if matched_by_id else by_count,
        "frame_delivery_ratio_by_id": fs["frame_delivery_ratio"],
        "frame_delivery_ratio_by_count": by_count,
        "video_frames_received_in_window": rx_frames_window,
        "duplicate_frames": collector.duplicate_frames,
        "sfu_rss_mb_start": s0["rss"],
        "sfu_rss_mb_at_20s": rss_at_20,
        "sfu_rss_mb_max": rss_max,
        "sfu_rss_mb_end": s1["rss"],
        "bots_cpu_seconds": bots_cpu,
        "bots_cpu_percent": 100 * bots_cpu / window if window else None,
        "students_eligible": len(eligible),
        "students_assigned": sum(1 for s in students if s.assigned.is_set()),
        "students_queued": sum(1 for s in students if s.queue_position and not s.assigned.is_set()),
        "packets_lost_estimate": sum(s.sink.lost() for s in surveillants if s.sink),
        "keyframe_requests_at_students": sum(s.keyframe_requests() for s in students),
        "student_pushes": merge_counts(s.pushes for s in students),
        "slots_per_surveillant": [s.slots for s in surveillants],
    }
    for key, value in fs.items():
        out.setdefault(key, value)

    # seconds in which the whole machine was saturated (other people's work
    # included): the bots then cannot keep pace and latency is not the SFU's
    full = 100 * (psutil.cpu_count() or 1)
    contended: list[tuple[int, int]] = []
    previous = s0["t"]
    for sample in samples:
        t_ns = sample.get("t_ns")
        if t_ns is None or t_ns <= s0["t"]:
            previous = t_ns or previous
            continue
        if sample["machine_cpu_percent"] >= 0.95 * full:
            contended.append((previous, t_ns))
        previous = t_ns
    contended_s = sum(min(b, s1["t"]) - max(a, s0["t"]) for a, b in contended
                      if b > s0["t"] and a < s1["t"]) / 1e9
    out["machine_saturated_seconds"] = contended_s
    if contended and matched_by_id:
        def calm(t: int) -> bool:
            return not any(a <= t <= b for a, b in contended)
        calm_stats = frame_stats(collector, s0["t"], s1["t"], eligible, sent_filter=calm)
        calm_lat = calm_stats.pop("_latencies_ms")
        out["unsaturated"] = {
            "frames_sent": calm_stats["frames_sent"],
            "frame_delivery_ratio": calm_stats["frame_delivery_ratio"],
            "latency_ms_p50": percentile(calm_lat, 50),
            "latency_ms_p95": percentile(calm_lat, 95),
            "latency_ms_p99": percentile(calm_lat, 99),
        }
    if not matched_by_id:
        for key in ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_max",
                    "latency_ms_mean"):
            out[key] = None
    # everything else on the machine (other people's tests, browsers…)
    busy = s1["machine_busy"] - s0["machine_busy"]
    others = busy - (sfu_cpu or 0) - bots_cpu
    out["machine_cpu_percent"] = 100 * busy / window if window else None
    out["other_processes_cpu_percent"] = 100 * max(0.0, others) / window if window else None
    out["steal_percent"] = 100 * (s1["steal"] - s0["steal"]) / window if window else None
    out["load_average_end"] = list(os.getloadavg())
    # losses the kernel saw: a full receive buffer at the SFU or at the bots
    out["sfu_udp_drops"] = delta(s1["sfu_udp_drops"], s0["sfu_udp_drops"])
    out["bots_udp_drops"] = delta(s1["bots_udp_drops"], s0["bots_udp_drops"])
    out["frame_timeline"] = frame_timeline(collector, s0["t"], s1["t"], eligible,
                                           by_id=bool(collector.frames_recv))
    bots_pct = out["bots_cpu_percent"] or 0
    out["bots_saturated"] = bots_pct > 85
    out["_latencies_ms"] = latencies
    return out


def frame_timeline(collector: Collector, t0: int, t1: int, eligible: set[int],
                   by_id: bool = True) -> list[dict]:
    """Per second of the window (by send time): frames sent, delivered, latency
    p50/p95/max. Without ids (transcode): frames sent and VP8 frames received
    per second, no latency."""
    if not by_id:
        counts: dict[int, list[int]] = {}
        for key, t_sent in collector.frames_sent.items():
            if t0 <= t_sent <= t1 and ((key >> 32) >> 1) in eligible:
                counts.setdefault(int((t_sent - t0) // 1_000_000_000), [0, 0])[0] += 1
        for t in collector.rx_video_frame_times:
            if t0 <= t <= t1:
                counts.setdefault(int((t - t0) // 1_000_000_000), [0, 0])[1] += 1
        return [{"t": k, "sent": v[0], "delivered": v[1], "p50": None, "p95": None, "max": None}
                for k, v in sorted(counts.items())]
    buckets: dict[int, list] = {}
    recv = collector.frames_recv
    for key, t_sent in collector.frames_sent.items():
        if not (t0 <= t_sent <= t1) or ((key >> 32) >> 1) not in eligible:
            continue
        b = buckets.setdefault(int((t_sent - t0) // 1_000_000_000), [0, []])
        b[0] += 1
        t_recv = recv.get(key)
        if t_recv is not None:
            b[1].append((t_recv - t_sent) / 1e6)
    out = []
    for second in sorted(buckets):
        sent, lat = buckets[second]
        out.append({"t": second, "sent": sent, "delivered": len(lat),
                    "p50": percentile(lat, 50), "p95": percentile(lat, 95),
                    "max": max(lat) if lat else None})
    return out


def merge_counts(dicts) -> dict:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    samples = [s for s in result.get("samples", []) if s.get("t") is not None]
    lat = np.asarray(result.get("_latencies_ms", []), dtype=float)
    fig, grid = plt.subplots(2, 2, figsize=(15, 9))
    axes = [grid[0][0], grid[0][1], grid[1][0], grid[1][1]]
    title = (f"Invigil SFU, {result['mode']}: {result['students']} students, "
             f"{result['surveillants']} surveillants, {result['seconds']:.0f} s")
    fig.suptitle(title)

    ax = axes[0]
    used = [s for s in samples if s["sfu_cpu_percent"] is not None and s["students_connected"]]
    xs = [s["t"] for s in used]
    per_student = [s["sfu_cpu_percent"] / s["students_connected"] for s in used]
    ax.plot(xs, per_student, color="tab:blue", label="SFU CPU per student")
    mean = result.get("sfu_cpu_percent_per_student")
    if mean is not None:
        ax.axhline(mean, color="tab:blue", ls="--", lw=1,
                   label=f"window mean {mean:.2f}% of a core")
    ax.axvspan(0, result["seconds"], color="0.92", zorder=0, label="measured window")
    ax.set_xlabel("seconds since the window opened")
    ax.set_ylabel("% of one core per student")
    ax.set_title("SFU CPU per student")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1]
    ax.plot([s["t"] for s in samples], [s["sfu_cpu_percent"] for s in samples],
            label="SFU CPU %", color="tab:blue")
    ax.plot([s["t"] for s in samples], [s["bots_cpu_percent"] for s in samples],
            label="bots CPU %", color="tab:orange")
    ax.plot([s["t"] for s in samples], [s.get("machine_cpu_percent") for s in samples],
            label="whole machine CPU %", color="0.5", lw=0.8)
    ax.set_xlabel("seconds since the window opened")
    ax.set_ylabel("% of one core")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot([s["t"] for s in samples], [s["sfu_rss_mb"] for s in samples],
             color="tab:green", label="SFU RSS MB")
    ax2.set_ylabel("SFU RSS (MB)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")
    us = result.get("cpu_us_per_forwarded_packet")
    ax.set_title("CPU and memory" + (f" ({us:.0f} µs per forwarded packet)" if us else ""))

    ax = axes[2]
    if len(lat):
        lo = max(0.01, float(lat.min()))
        hi = max(lo * 10, float(lat.max()))
        bins = np.logspace(np.log10(lo), np.log10(hi * 1.001), 60)
        ax.hist(lat, bins=bins, color="tab:purple", alpha=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylabel("frames")
        ax3 = ax.twinx()
        srt = np.sort(lat)
        ax3.plot(srt, np.arange(1, len(srt) + 1) / len(srt), color="black", lw=1.2)
        ax3.set_ylim(0, 1.01)
        ax3.set_ylabel("CDF")
        for q, style in ((50, ":"), (95, "--")):
            v = percentile(lat, q)
            ax.axvline(v, color="black", ls=style, lw=1, label=f"p{q} {v:.1f} ms")
        ax.set_xlim(lo, hi * 1.05)
        ax.legend(fontsize=8, loc="center right")
        ratio = result.get("frame_delivery_ratio")
        ax.set_title("Frame latency (last packet sent → received)"
                     + (f", delivered {ratio:.3f}" if ratio is not None else ""))
    else:
        ax.text(0.5, 0.5, "no per-frame latency\n(frames not matched by id)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Frame latency")
    ax.set_xlabel("ms (log scale)")
    ax.grid(alpha=0.3)

    ax = axes[3]
    timeline = result.get("frame_timeline") or []
    if timeline:
        ts = [b["t"] + 0.5 for b in timeline]
        ax.plot(ts, [b["p95"] for b in timeline], color="tab:purple", label="latency p95")
        ax.plot(ts, [b["max"] for b in timeline], color="tab:purple", lw=0.7, ls=":",
                label="latency max")
        peak = max([b["max"] or 0 for b in timeline] + [1.0])
        ax.set_yscale("log")
        ax.set_ylim(0.1, peak * 1.5)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylabel("ms (frames by send second)")
        ax4 = ax.twinx()
        missing = [max(0, b["sent"] - b["delivered"]) for b in timeline]
        ax4.bar(ts, missing, width=0.8, color="tab:red", alpha=0.5, label="frames not delivered")
        ax4.set_ylabel("frames not delivered" + (" (count)" if result.get("frame_matching") == "count" else ""))
        ax4.set_ylim(0, max(missing + [1]) * 1.1)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax4.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no per-frame timeline", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title("Latency and losses over the window")
    ax.set_xlabel("seconds since the window opened")
    ax.grid(alpha=0.3)
    full = 100 * (result.get("machine", {}).get("cpu_count") or 1)
    previous = None
    for sample in samples:
        busy = sample.get("machine_cpu_percent")
        if previous is not None and busy is not None and busy >= 0.95 * full:
            for a in (axes[1], axes[3]):
                a.axvspan(previous, sample["t"], color="tab:red", alpha=0.12, lw=0)
        previous = sample["t"]
    if result.get("machine_saturated_seconds"):
        fig.text(0.5, 0.005, "red bands: the whole machine was saturated (all cores busy)",
                 ha="center", fontsize=8, color="tab:red")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def received_frames(r: dict):
    if r.get("frame_matching") == "count":
        return r.get("video_frames_received_in_window", "n/a")
    return r.get("frames_received", "n/a")


def summary_lines(r: dict) -> list[str]:
    def f(key, fmt="{:.1f}"):
        v = r.get(key)
        return "n/a" if v is None else fmt.format(v)
    return [
        f"mode {r['mode']}{' (native lanes)' if r.get('native_lanes') else ''}: "
        f"{r.get('students_connected', 0)}/{r['students']} students "
        f"({r.get('students_eligible', 0)} placed), {r.get('surveillants_connected', 0)}/"
        f"{r['surveillants']} surveillants, cap {r.get('cap')}, window {f('window_seconds')} s",
        f"SFU cpu {f('sfu_cpu_seconds', '{:.2f}')} s ({f('sfu_cpu_percent')}% of a core, "
        f"{f('sfu_cpu_percent_per_student', '{:.2f}')}% per student); forwarded "
        f"{r.get('forwarded_packets', 'n/a')} packets ({f('forwarded_packets_per_second', '{:.0f}')}/s)"
        f" -> {f('cpu_us_per_forwarded_packet')} µs per forwarded packet",
        *([] if r.get("workers", 1) == 1 and r.get("exams", 1) == 1 else [
            f"{r.get('exams')} exams on {r.get('workers')} worker(s): CPU s by process "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted((r.get("sfu_cpu_seconds_by_process") or {}).items()))
            + f"; workers' {f('workers_cpu_us_per_forwarded_packet')} µs per forwarded packet"]),
        f"frames delivered {f('frame_delivery_ratio', '{:.4f}')} ({received_frames(r)}/"
        f"{r.get('frames_sent', 'n/a')}, matched by {r.get('frame_matching', 'n/a')}); latency ms "
        f"p50 {f('latency_ms_p50', '{:.2f}')} p95 {f('latency_ms_p95', '{:.2f}')} "
        f"p99 {f('latency_ms_p99', '{:.2f}')} max {f('latency_ms_max', '{:.1f}')}",
        f"SFU RSS MB start {f('sfu_rss_mb_start')} at20s {f('sfu_rss_mb_at_20s')} "
        f"max {f('sfu_rss_mb_max')}; bots cpu {f('bots_cpu_seconds', '{:.2f}')} s "
        f"({f('bots_cpu_percent')}% of a core{', SATURATED' if r.get('bots_saturated') else ''}); "
        f"machine {f('machine_cpu_percent')}% of one core in all, others "
        f"{f('other_processes_cpu_percent')}%, hypervisor steal {f('steal_percent')}%; UDP receive drops: SFU {r.get('sfu_udp_drops', 'n/a')}, "
        f"bots {r.get('bots_udp_drops', 'n/a')}; packets lost (seq gaps) "
        f"{r.get('packets_lost_estimate', 'n/a')}",
        *([] if not r.get("disconnects") else [
            f"WARNING: {len(r['disconnects'])} disconnect event(s) during the run, first: "
            f"{r['disconnects'][0]['bot']} {r['disconnects'][0]['what']} at "
            f"{r['disconnects'][0]['t']:.1f} s"]),
        *([] if not r.get("machine_saturated_seconds") else [
            f"WARNING: the whole machine was saturated (all cores busy) for "
            f"{r['machine_saturated_seconds']:.0f} of {f('window_seconds', '{:.0f}')} s"
            + ("" if not r.get("unsaturated") else
               f"; outside those seconds: delivered "
               f"{fmt(r['unsaturated'].get('frame_delivery_ratio'), '{:.4f}')}, latency p50 "
               f"{fmt(r['unsaturated'].get('latency_ms_p50'), '{:.2f}')} p95 "
               f"{fmt(r['unsaturated'].get('latency_ms_p95'), '{:.2f}')} ms")]),
    ]


def _screen_profile(text: str) -> tuple[int, int, int, int]:
    """`WxH@FPS:KBPS` -> (width, height, fps, kbps)."""
    try:
        size, rest = text.split("@")
        width, height = (int(part) for part in size.split("x"))
        fps, kbps = (int(part) for part in rest.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected WxH@FPS:KBPS, e.g. 640x360@2:250") from None
    return width, height, fps, kbps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load_tests.bench",
                                description="Load test of the Invigil SFU with aiortc bots.")
    p.add_argument("--students", type=int, required=True)
    p.add_argument("--surveillants", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True, help="length of the measured window")
    p.add_argument("--mode", choices=("forward", "transcode"), required=True,
                   help="passed to the server as --media-mode")
    p.add_argument("--json", required=True, help="write the results here")
    p.add_argument("--workers", type=int, default=1,
                   help="passed to the server as --workers (default 1: one process, as measured before)")
    p.add_argument("--exams", type=int, default=1,
                   help="split the students and surveillants over this many equal exams (default 1)")
    p.add_argument("--plot", help="PNG with CPU per student and the latency distribution")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds after every bot connected before the window opens (default 5)")
    p.add_argument("--grace", type=float, default=2.0,
                   help="seconds after the window for frames sent in it to arrive (default 2)")
    p.add_argument("--connect-concurrency", type=int, default=4,
                   help="bots connecting at the same time (default 4)")
    p.add_argument("--screen", type=_screen_profile, default=(1280, 720, 5, 300), metavar="WxH@FPS:KBPS",
                   help="every bot's screen stream, e.g. 640x360@2:250 (the grid thumbnail)")
    p.add_argument("--keyframe-seconds", type=float, default=3.0,
                   help="keyframe interval of the pre-encoded loops (default 3)")
    p.add_argument("--server-timeout", type=float, default=30.0,
                   help="seconds to wait for the creator link (default 30)")
    p.add_argument("--server-arg", action="append", metavar="ARG",
                   help="extra argument for `sfu.cli serve` (repeatable)")
    p.add_argument("--server-module", default="sfu.cli",
                   help="module run as `python -m MODULE serve …` (default sfu.cli; for testing "
                        "the bench itself)")
    args = p.parse_args(argv)
    if args.students < 1 or args.surveillants < 1 or args.seconds <= 0:
        p.error("--students and --surveillants must be >= 1 and --seconds > 0")
    if args.workers < 1 or not 1 <= args.exams <= min(args.students, args.surveillants):
        p.error("--workers must be >= 1, and --exams from 1 to the fewer of students and surveillants")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run_bench(args))
    latencies = result.pop("_latencies_ms", None)
    if args.plot and not result.get("failed"):
        try:
            plot({**result, "_latencies_ms": latencies if latencies is not None else []}, args.plot)
        except Exception as exc:  # a plot must not lose the JSON
            result["errors"].append(f"plot: {describe_exc(exc)}")
    result["latency_histogram_ms"] = histogram(latencies)
    clean = round_floats(result)
    Path(args.json).write_text(json.dumps(clean, indent=2, ensure_ascii=False) + "\n")
    for line in summary_lines(clean):
        print(line)
    if clean["errors"]:
        print(f"{len(clean['errors'])} error(s), first: {clean['errors'][0]}")
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot and not clean.get("failed") else ""))
    return 1 if clean.get("failed") else 0


def histogram(latencies) -> dict | None:
    if latencies is None or len(latencies) == 0:
        return None
    edges = [0, 1, 2, 5, 10, 20, 35, 50, 100, 200, 500, 1000, 2000, math.inf]
    counts, _ = np.histogram(latencies, bins=edges)
    return {f"<{e}" if e != math.inf else f">={edges[-2]}": int(c)
            for e, c in zip(edges[1:], counts)}


if __name__ == "__main__":
    sys.exit(main())
