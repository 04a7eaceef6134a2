"""Nothing persists: a whole exam writes no file, leaves no object and logs no personal data.

A full exam here is the real server with real aiortc peers: an organiser
creates it (with the live ID check) and adds a surveillant seat, a surveillant
and two students join with live webcam, screen and microphone, the surveillant
admits both after checking their identity on camera, sends a message,
talks to one student and stops, focuses the other, that student raises a hand
and reports a status, the first student's session is ended with a reason, and
the organiser ends the exam. Each test below watches that same exam from one
side: the file system (in-process audit hook, and strace around a real
`invigil serve` process), the memory (weak references after the end), and
the logs.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import shutil
import signal
import socket
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sfu.app import REGISTRY
from tests.browser import in_ci
from tests.peers import Client, wait_until
from tests.test_sfu_forwarding import create_exam, join_student, join_surveillant, token
from tests.test_signalling import joined, wait_closed

ROOT = Path(__file__).resolve().parents[1]

# Distinctive strings, so that finding one anywhere can only mean it leaked.
SURVEILLANT_NAME = "Mevr. Quirijna Vlaskamp"
FIRST_STUDENT = "Zoë Oosterbeek-Qadir"
SECOND_STUDENT = "Ferdinand Xylander"
MESSAGE_TEXT = "Leg je telefoon weg, Zoë: opgave 7 telt mee (vraag-xq31)"
END_REASON = "Sessie beëindigd wegens overleg met iemand buiten beeld (reden-kv88)"


# -- the exam, watched from every side ------------------------------------------------------


@dataclass
class ExamRun:
    """What one full exam left in the test's hands: what must not leak, and weak references."""

    exam_id: str = ""
    tokens: list[str] = field(default_factory=list)
    resume_secrets: list[str] = field(default_factory=list)
    client_ports: set[int] = field(default_factory=set)
    client_addresses: set[str] = field(default_factory=set)
    live_refs: list[tuple[str, weakref.ref[Any]]] = field(default_factory=list)
    ended_session_refs: list[tuple[str, weakref.ref[Any]]] = field(default_factory=list)
    ended_session_alive_before_exam_end: list[str] = field(default_factory=list)
    frames_seen: dict[str, int] = field(default_factory=dict)

    def personal_strings(self) -> dict[str, str]:
        """Every string a log line must never contain, by what it is."""
        found = {
            "surveillant name": SURVEILLANT_NAME,
            "first student name": FIRST_STUDENT,
            "second student name": SECOND_STUDENT,
            "message text": MESSAGE_TEXT,
            "end reason": END_REASON,
        }
        for number, value in enumerate(self.tokens):
            found[f"token {number}"] = value
            # A prefix of a token is enough to identify it; the signature part too.
            found[f"token {number} signature"] = value.rsplit(".", 1)[-1]
        for number, value in enumerate(self.resume_secrets):
            found[f"resume secret {number}"] = value
        return found


def _client_addresses(run: ExamRun, client: Client) -> None:
    assert client.socket is not None
    sockname = client.socket.get_extra_info("sockname")
    if sockname:
        run.client_addresses.add(sockname[0])
        run.client_ports.add(sockname[1])


def _candidate_ports(run: ExamRun, *peers: Any) -> None:
    """The client side's ICE host candidates: address and port of each participant's media."""
    for peer in peers:
        for line in peer.pc.localDescription.sdp.splitlines():
            if line.startswith("a=candidate:"):
                parts = line.split()
                run.client_addresses.add(parts[4])
                run.client_ports.add(int(parts[5]))


def exam_object_refs(app: Any, exam_id: str) -> list[tuple[str, weakref.ref[Any]]]:
    """Weak references to everything the server holds for one running exam."""
    exam = app[REGISTRY].exams[exam_id]
    refs: list[tuple[str, weakref.ref[Any]]] = [
        ("Exam", weakref.ref(exam)),
        ("ExamMedia", weakref.ref(exam.media)),
        ("Assignment", weakref.ref(exam.assignment)),
    ]
    for participant in exam.participants.values():
        refs.append((f"Participant ({participant.role} {participant.id})", weakref.ref(participant)))
        if participant.socket is not None:
            refs.append((f"WebSocketResponse of {participant.id}", weakref.ref(participant.socket)))
    for owner, peer in exam.media.peers.items():
        refs += media_peer_refs(owner, peer)
    return refs


def media_peer_refs(owner: str, peer: Any) -> list[tuple[str, weakref.ref[Any]]]:
    """The MediaPeer of `owner`, its RTCPeerConnection, transports, publications and legs."""
    refs: list[tuple[str, weakref.ref[Any]]] = [
        (f"MediaPeer of {owner}", weakref.ref(peer)),
        (f"RTCPeerConnection of {owner}", weakref.ref(peer.pc)),
    ]
    for index, transceiver in enumerate(peer.pc.getTransceivers()):
        refs.append((f"RTCRtpTransceiver {index} of {owner}", weakref.ref(transceiver)))
    dtls = peer.pc.getTransceivers()[0].receiver.transport
    refs.append((f"RTCDtlsTransport of {owner}", weakref.ref(dtls)))
    refs.append((f"RTCIceTransport of {owner}", weakref.ref(dtls.transport)))
    refs.append((f"aioice Connection of {owner}", weakref.ref(dtls.transport._connection)))
    for name, publication in peer.publications.items():
        refs.append((f"Publication {name} of {owner}", weakref.ref(publication)))
    for name, leg in peer.legs.items():
        refs.append((f"Leg {name} of {owner}", weakref.ref(leg)))
    return refs


def participant_refs(app: Any, exam_id: str, participant_id: str) -> list[tuple[str, weakref.ref[Any]]]:
    """Weak references to one participant and their media."""
    exam = app[REGISTRY].exams[exam_id]
    participant = exam.participants[participant_id]
    refs = [(f"Participant {participant_id}", weakref.ref(participant))]
    peer = exam.media.peers.get(participant_id)
    if peer is not None:
        refs += media_peer_refs(participant_id, peer)
    return refs


async def still_alive(refs: list[tuple[str, weakref.ref[Any]]], patience: float = 10.0) -> list[str]:
    """Collect garbage until every referent is gone; the labels of those that stay.

    Closing callbacks may still be queued on the loop right after an exam ends,
    so we give them until `patience` runs out; we assert on what is left, never
    on how long it took.
    """
    deadline = time.monotonic() + patience
    while True:
        gc.collect()
        alive = [label for label, ref in refs if ref() is not None]
        if not alive or time.monotonic() > deadline:
            return alive
        await asyncio.sleep(0.1)


def referrer_chain(refs: list[tuple[str, weakref.ref[Any]]], label: str, depth: int = 4) -> str:
    """Who holds a leaked object: a few levels of gc referrers, for the failure message."""
    target = dict(refs)[label]()
    if target is None:
        return ""
    lines: list[str] = []
    frontier = [target]
    seen = {id(refs), id(frontier)}
    for level in range(depth):
        following = []
        for obj in frontier:
            for holder in gc.get_referrers(obj):
                if id(holder) in seen or holder is frontier or isinstance(holder, type(sys._getframe())):
                    continue
                seen.add(id(holder))
                lines.append("  " * level + f"{type(holder).__name__}: {repr(holder)[:160]}")
                following.append(holder)
        frontier = following[:6]
    return "\n".join(lines[:40])


async def run_full_exam(
    session: aiohttp.ClientSession, server: Any, app: Any | None = None, settle: float = 0.0
) -> ExamRun:
    """One whole exam with live media through `server`; with `app` (in-process), weak references too."""
    run = ExamRun()
    created = await create_exam(session, server, cap=2, id_check=True)
    run.exam_id = created["exam"]["id"]
    organiser = await joined(session, server, created["organiser_link"])
    extra_link = (await organiser.request({"type": "add_surveillant"}))["link"]
    run.tokens += [
        token(created["organiser_link"]),
        token(created["student_link"]),
        token(created["surveillant_links"][0]),
        token(extra_link),
    ]

    desk, watcher = await join_surveillant(session, server, created["surveillant_links"][0], SURVEILLANT_NAME, 2)
    first, first_peer = await join_student(session, server, created, FIRST_STUDENT)
    second, second_peer = await join_student(session, server, created, SECOND_STUDENT)
    for client in (organiser, desk, first, second):
        _client_addresses(run, client)
    _candidate_ports(run, watcher, first_peer, second_peer)
    run.resume_secrets += [first.latest("welcome")["resume"], second.latest("welcome")["resume"]]

    roster = await desk.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 2)
    ids = {entry["name"]: entry["id"] for entry in roster["students"]}
    slots = {entry["name"]: entry["slot"] for entry in roster["students"]}
    tiles = {name: watcher.received[slot] for name, slot in slots.items()}
    await wait_until(
        lambda: all(t["webcam"].frames >= 5 and t["microphone"].frames >= 10 for t in tiles.values()), 20
    )
    if settle:
        await asyncio.sleep(settle)
    if app is not None:
        run.live_refs = exam_object_refs(app, run.exam_id)
        run.ended_session_refs = participant_refs(app, run.exam_id, ids[FIRST_STUDENT])

    # The live ID check: the surveillant admits both students (nothing is captured).
    for name, client in ((FIRST_STUDENT, first), (SECOND_STUDENT, second)):
        assert (await desk.request({"type": "admit", "student_id": ids[name]}))["type"] == "ack"
        await client.wait_for(lambda m: m["type"] == "admitted")

    # A message, talk-back on and off, focus and back, a raised hand and a status change.
    reply = await desk.request({"type": "message", "student_id": ids[FIRST_STUDENT], "text": MESSAGE_TEXT})
    assert reply["type"] == "ack", reply
    await first.wait_for(lambda m: m["type"] == "message" and m["text"] == MESSAGE_TEXT)
    assert (await desk.request({"type": "talk", "student_id": ids[FIRST_STUDENT], "on": True}))["type"] == "ack"
    await wait_until(lambda: first_peer.voice.frames >= 10, 10)
    assert (await desk.request({"type": "talk", "student_id": ids[FIRST_STUDENT], "on": False}))["type"] == "ack"
    assert (await desk.request({"type": "focus", "student_id": ids[SECOND_STUDENT]}))["type"] == "ack"
    await second.wait_for(lambda m: m["type"] == "quality" and m["level"] == "focus")
    assert (await desk.request({"type": "focus", "student_id": None}))["type"] == "ack"
    status = {"type": "status", "camera": True, "microphone": True, "screen": True, "page_hidden": False}
    assert (await second.request(status))["type"] == "ack"
    assert (await second.request({**status, "page_hidden": True}))["type"] == "ack"
    assert (await second.request({"type": "hand", "raised": True}))["type"] == "ack"
    await desk.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "hand_raised")

    # The surveillant ends the first student's session.
    reply = await desk.request(
        {"type": "end_session", "student_id": ids[FIRST_STUDENT], "reason": END_REASON}
    )
    assert reply["type"] == "ack", reply
    await first.wait_for(lambda m: m["type"] == "session_ended" and m["reason"] == END_REASON)
    await wait_closed(first)
    assert first.closed_code == 4002
    await first_peer.close()
    if app is not None:
        run.ended_session_alive_before_exam_end = await still_alive(run.ended_session_refs)
    run.frames_seen = {name: t["webcam"].frames for name, t in tiles.items()}

    # The organiser ends the exam for everyone.
    await organiser.send({"type": "end_exam", "v": 1})
    for client in (organiser, desk, second):
        await client.wait_for(lambda m: m["type"] == "exam_ended")
        await wait_closed(client)
        assert client.closed_code == 4000
    for closable in (watcher, second_peer, first, second, desk, organiser):
        await closable.close()
    return run


# -- 1. no file is written: in-process audit hook --------------------------------------------

WRITE_MODE_CHARS = frozenset("wax+")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
FILE_CHANGING_EVENTS = frozenset(
    {
        "os.mkdir",
        "os.rename",  # also os.replace
        "os.remove",  # also os.unlink
        "os.rmdir",
        "os.truncate",
        "os.link",
        "os.symlink",
        "os.mkfifo",
        "os.mknod",
        "os.chmod",
        "os.chown",
        "os.utime",
        "sqlite3.connect",
        "dbm.open",
    }
)
FILE_CHANGING_PREFIXES = ("shutil.", "tempfile.")
SERVER_FRAME = re.compile(
    r"/(sfu|student_join|surveillant_ui)/[^/]+\.py$|/aiohttp/web[^/]*\.py$|/aiortc/|/aioice/"
)

_recording = False
_events: list[tuple[str, str, list[str]]] = []


def _stack() -> list[str]:
    """The calling frames as 'file:line function', innermost first (no source lines: no file reads)."""
    frames = []
    frame = sys._getframe(2)
    while frame is not None and len(frames) < 60:
        frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return frames


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Called for every audited event of the process (every sendto too): stay cheap when idle.
    if not _recording:
        return
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int):
            return  # wrapping a descriptor we already have (its creation was itself an event)
        by_mode = isinstance(mode, str) and not WRITE_MODE_CHARS.isdisjoint(mode)
        by_flags = isinstance(flags, int) and bool(flags & WRITE_FLAGS)
        if not (by_mode or by_flags):
            return
    elif event not in FILE_CHANGING_EVENTS and not event.startswith(FILE_CHANGING_PREFIXES):
        return
    _events.append((event, repr(args)[:200], _stack()))


sys.addaudithook(_audit)


class recording:
    """Switch the audit hook on for a block (a hook cannot be removed, so it checks a flag).

    The interpreter's own bytecode cache is switched off meanwhile: a `.pyc`
    written by a lazy import is Python's, not the server's, and would hide
    nothing; with it off, every write left is somebody's code.
    """

    def __enter__(self) -> list[tuple[str, str, list[str]]]:
        global _recording
        _events.clear()
        self._bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True
        _recording = True
        return _events

    def __exit__(self, *exc: object) -> None:
        global _recording
        _recording = False
        sys.dont_write_bytecode = self._bytecode


def _describe(events: list[tuple[str, str, list[str]]]) -> str:
    return "\n\n".join(f"{event} {args}\n    " + "\n    ".join(stack[:25]) for event, args, stack in events)


async def test_a_whole_exam_writes_no_file_in_process(server: Any) -> None:
    """Audit hook on open-for-writing and every file-changing event, for the whole exam.

    Client and server share this process. We assert on *every* event, not only
    on those with a server frame on the stack: a write by aiortc or aioice
    inside the server would otherwise be attributable to the test's own peers.
    Then the subset with a server frame is reported first, to say who did it.
    """
    async with aiohttp.ClientSession() as session:
        with recording() as events:
            run = await run_full_exam(session, server)
    assert run.frames_seen and all(frames >= 5 for frames in run.frames_seen.values())
    by_server = [e for e in events if any(SERVER_FRAME.search(frame.split(":")[0]) for frame in e[2])]
    assert by_server == [], "the server wrote to the file system:\n" + _describe(by_server)
    assert events == [], "something in the process wrote to the file system:\n" + _describe(events)


def test_the_audit_hook_sees_what_it_must_see(tmp_path: Path) -> None:
    """The hook is not blind: each kind of write it watches for is caught."""
    import tempfile

    target = tmp_path / "probe"
    with recording() as events:
        with open(target, "w") as handle:
            handle.write("x")
        with open(target, "a"):
            pass
        os.close(os.open(target, os.O_RDWR))
        os.mkdir(tmp_path / "d")
        os.rename(target, tmp_path / "renamed")
        os.remove(tmp_path / "renamed")
        shutil.rmtree(tmp_path / "d")
        handle, name = tempfile.mkstemp(dir=tmp_path)
        os.close(handle)
        with open(name) as readonly:
            readonly.read()
    kinds = [event for event, _, _ in events]
    assert kinds.count("open") == 4  # w, a, O_RDWR, and mkstemp's own O_CREAT; not the read
    for expected in ("os.mkdir", "os.rename", "os.remove", "shutil.rmtree", "tempfile.mkstemp"):
        assert expected in kinds, kinds
    assert not [args for event, args, _ in events if event == "open" and "r')" in args]


# -- 2. no file is written: strace around a real `invigil serve` --------------------------------

TRACED_CALLS = (
    "open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,"
    "link,linkat,symlink,symlinkat,truncate,mknod,mknodat"
)
ALWAYS_CHANGING_CALLS = (
    "creat", "mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir",
    "link", "linkat", "symlink", "symlinkat", "truncate", "mknod", "mknodat",
)
SYSCALL_LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(?:<\.\.\. )?(\w+)\((.*)$")
PSEUDO_FILESYSTEMS = ("/dev/", "/proc/", "/sys/")


def writing_calls(trace: str, cwd: Path) -> list[str]:
    """The traced calls that created, changed or opened-for-writing a real file.

    Allowed: /dev, /proc and /sys (devices and kernel views, e.g. /dev/null,
    /dev/urandom), but not /dev/shm, which is a file system like any other.
    """
    found = []
    for line in trace.splitlines():
        match = SYSCALL_LINE.match(line)
        if match is None or "resumed>" in line:
            continue
        call, rest = match.group(2), match.group(3)
        paths = re.findall(r'"((?:[^"\\]|\\.)*)"', rest)
        if call in ("open", "openat", "openat2"):
            flags = rest.split('", ', 1)[1] if '", ' in rest else ""
            if not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND", flags):
                continue
        elif call not in ALWAYS_CHANGING_CALLS:
            continue
        absolute = [p if p.startswith("/") else str(cwd / p) for p in paths]
        if absolute and all(p.startswith(PSEUDO_FILESYSTEMS) and not p.startswith("/dev/shm") for p in absolute):
            continue
        found.append(line)
    return found


def test_the_trace_reader_flags_writes_and_spares_devices() -> None:
    trace = "\n".join(
        [
            '101 openat(AT_FDCWD, "/usr/lib/x.so", O_RDONLY|O_CLOEXEC) = 3',
            '101 openat(AT_FDCWD, "/dev/null", O_WRONLY) = 4',
            '101 openat(AT_FDCWD, "/proc/self/fd", O_RDONLY|O_DIRECTORY) = 5',
            '102 openat(AT_FDCWD, "/tmp/rec.webm", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 6',
            '102 openat(AT_FDCWD, "notes.txt", O_RDWR|O_CLOEXEC <unfinished ...>',
            "102 <... openat resumed>) = 7",
            '103 mkdir("/var/tmp/x", 0777) = 0',
            '103 openat(AT_FDCWD, "/dev/shm/sem.x", O_RDWR|O_CREAT, 0600) = 8',
            '103 unlink("/tmp/a") = -1 ENOENT (No such file or directory)',
        ]
    )
    flagged = writing_calls(trace, Path("/srv"))
    assert [line.split()[1].split("(")[0] for line in flagged] == ["openat", "openat", "mkdir", "openat", "unlink"]
    assert "rec.webm" in flagged[0] and "notes.txt" in flagged[1] and "/dev/shm" in flagged[3]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


async def test_a_whole_exam_writes_no_file_under_strace(tmp_path: Path) -> None:
    """The real `invigil serve` process, traced from outside: C code (OpenSSL, libsrtp,
    libvpx, the kernel interface of aioice) is visible here, where audit hooks are blind.

    The whole process life is traced, start-up and shut-down included; Python's
    bytecode cache is off (PYTHONDONTWRITEBYTECODE) for the reason given in `recording`.
    """
    strace = shutil.which("strace")
    if strace is None:
        if in_ci():
            pytest.fail("strace is missing: .ci/run installs it; this test must run in CI", pytrace=False)
        pytest.skip("strace is not installed (apt-get install strace)")
    port = _free_port()
    trace_file = tmp_path / "trace.txt"
    env = {key: value for key, value in os.environ.items() if key != "INVIGIL_SECRET"}
    env.update(INVIGIL_SECRET="7e" * 24, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    process = await asyncio.create_subprocess_exec(
        strace, "-f", "-qq", "-s", "512", "-e", f"trace={TRACED_CALLS}", "-o", str(trace_file),
        sys.executable, "-m", "sfu.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stderr_text = ""
    try:
        creator = await _read_creator_link(process)
        server = _Remote(url=f"http://127.0.0.1:{port}", creator_link=creator)
        async with aiohttp.ClientSession() as session:
            run = await run_full_exam(session, server)
        assert all(frames >= 5 for frames in run.frames_seen.values())
    finally:
        children = _descendants(process.pid)
        for pid in children[:1]:
            os.kill(pid, signal.SIGINT)
        if not children and process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
        stderr_text = stderr.decode(errors="replace")
    assert process.returncode == 0, stderr_text
    trace = trace_file.read_text()
    assert "sfu/cli.py" in trace or "sfu" in trace, "strace saw nothing of the server"
    written = writing_calls(trace, ROOT)
    assert written == [], "invigil serve wrote to the file system:\n" + "\n".join(written[:40])
    # The real server's own log output (the `invigil serve` logging set-up) is clean too.
    leaked = [label for label, value in run.personal_strings().items() if value in stderr_text]
    assert leaked == [], f"invigil serve logged {leaked}:\n{stderr_text[-3000:]}"
    for address in run.client_addresses:
        assert address not in stderr_text, f"invigil serve logged a client address:\n{stderr_text[-3000:]}"


@dataclass(frozen=True)
class _Remote:
    url: str
    creator_link: str


async def _read_creator_link(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    seen = []
    async with asyncio.timeout(60):
        while True:
            raw = await process.stdout.readline()
            if not raw:
                raise AssertionError("invigil serve exited early: " + "".join(seen))
            line = raw.decode().strip()
            seen.append(line + "\n")
            if "/organise/#" in line:
                return line


# -- 3. nothing of an ended exam stays in memory, and its links are refused -------------------


async def test_an_ended_exam_leaves_no_object_and_its_links_are_refused(server: Any) -> None:
    """Weak references to the exam, its participants, peers, connections, publications and legs
    are dead after `gc.collect()`; every link of the exam (and a resume secret) gets exam_ended."""
    async with aiohttp.ClientSession() as session:
        run = await run_full_exam(session, server, app=server.app)
        assert len([label for label, _ in run.live_refs if label.startswith("Participant")]) == 4
        assert len([label for label, _ in run.live_refs if label.startswith("MediaPeer")]) == 3
        assert len([label for label, _ in run.live_refs if label.startswith("Leg")]) == 2 * 3 + 2 * 2
        assert run.ended_session_alive_before_exam_end == [], (
            "a student whose session ended was still in memory while the exam ran on: "
            f"{run.ended_session_alive_before_exam_end}\n"
            + referrer_chain(run.ended_session_refs, run.ended_session_alive_before_exam_end[0])
        )
        exam_refs = [(label, ref) for label, ref in run.live_refs if not label.startswith("WebSocketResponse")]
        socket_refs = [(label, ref) for label, ref in run.live_refs if label.startswith("WebSocketResponse")]
        alive = await still_alive(exam_refs)
        assert alive == [], f"still in memory after the exam ended: {alive}\n" + referrer_chain(
            exam_refs, alive[0]
        )
        # aiohttp 3.14 may re-arm a closed socket's heartbeat timer when the client's
        # close frame arrives, so the closed WebSocketResponse itself (headers, no
        # exam data: everything above is gone) can linger until that timer fires.
        for label, ref in socket_refs:
            socket_left = ref()
            assert socket_left is None or socket_left.closed, label
            del socket_left
        registry = server.app[REGISTRY]
        assert run.exam_id not in registry.exams
        assert registry.exams == {}

        for number, link_token in enumerate(run.tokens):
            client = Client(session, server.url)
            reply = await client.connect(link_token, name="Opnieuw")
            assert reply["type"] == "error" and reply["code"] == "exam_ended", (number, reply)
            await wait_closed(client)
            assert client.closed_code == 4000
        student_token = run.tokens[1]
        for resume in run.resume_secrets:
            client = Client(session, server.url)
            reply = await client.connect(student_token, name="Terug", resume=resume)
            assert reply["type"] == "error" and reply["code"] == "exam_ended", reply
            await wait_closed(client)
        assert registry.exams == {}, "a refused link brought the exam back"


# -- 4. logs carry no personal data -----------------------------------------------------------

# `invigil serve` keeps only warnings of these libraries (sfu.cli.NOISY_LOGGERS): they log
# ICE candidate addresses at INFO. Below WARNING their records never reach the server's log.
from sfu.cli import NOISY_LOGGERS  # noqa: E402


def _library_below_serve_level(record: Any) -> bool:
    return record.levelno < 30 and any(
        record.name == noisy or record.name.startswith(noisy + ".") for noisy in NOISY_LOGGERS
    )


def _rendered(record: Any) -> str:
    text = f"{record.name} {record.levelname} {record.getMessage()}"
    if record.exc_info and record.exc_info[1] is not None:
        import traceback

        text += "\n" + "".join(traceback.format_exception(*record.exc_info))
    if record.stack_info:
        text += "\n" + record.stack_info
    return text


async def test_logs_of_a_whole_exam_hold_no_personal_data(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Everything at INFO and above, and the `sfu` loggers at DEBUG, during a whole exam:
    no display name, message or reason text, token, resume secret or client address."""
    caplog.set_level("INFO")
    caplog.set_level("DEBUG", logger="sfu")
    async with aiohttp.ClientSession() as session:
        run = await run_full_exam(session, server)
    records = list(caplog.records)
    sfu_records = [r for r in records if r.name.startswith("sfu")]
    assert sfu_records, "the server logged nothing: the capture is not looking at it"
    assert any(run.exam_id in r.getMessage() for r in sfu_records), "exam events are logged by pseudonymous id"
    secrets_by_label = run.personal_strings()
    addresses = run.client_addresses | {"127.0.0.1"}
    port_pattern = re.compile(r"(?<![\w.-])(" + "|".join(str(p) for p in sorted(run.client_ports)) + r")(?![\w.-])")
    problems = []
    library_addresses = 0
    for record in records:
        text = _rendered(record)
        for label, value in secrets_by_label.items():
            if value in text:
                problems.append(f"{label} in {record.name}: {text[:300]}")
        if any(address in text for address in addresses) or port_pattern.search(text):
            if _library_below_serve_level(record):
                library_addresses += 1  # dropped by `invigil serve`; see NOISY_LOGGERS
                continue
            problems.append(f"client address in {record.name}: {text[:300]}")
    assert problems == [], "\n".join(problems)


def test_serve_keeps_only_warnings_of_the_libraries_that_log_addresses() -> None:
    """The exemption above holds only if `invigil serve` really sets those loggers to WARNING."""
    import logging

    from sfu.cli import configure_logging

    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    try:
        configure_logging()
        for name in ("aioice", "aioice.ice", "aiortc", "aiortc.rtcpeerconnection"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
            assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
    finally:
        for handler in list(root.handlers):
            if handler not in saved_handlers:
                root.removeHandler(handler)
        root.setLevel(saved_level)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)



# -- 5. PRIVACY.md names tests that exist ---------------------------------------------------------


def test_privacy_md_names_only_tests_that_exist() -> None:
    """PRIVACY.md tells the school how each claim is tested: every test it names must exist,
    in the file it names, so the document cannot quietly outlive its evidence."""
    text = (ROOT / "PRIVACY.md").read_text(encoding="utf-8")
    named = 0
    for row in text.splitlines():
        files = re.findall(r"`?(tests/test_\w+\.py)`?", row)
        if not files:
            continue
        # Within a table row, each test name belongs to the last file named before it.
        for piece in re.split(r"(tests/test_\w+\.py)", row)[1:]:
            if piece.startswith("tests/"):
                source = (ROOT / piece).read_text(encoding="utf-8")
                continue
            for name in re.findall(r"`(test_\w+)`", piece):
                assert re.search(rf"def {name}\b", source), f"PRIVACY.md names {name}, which does not exist"
                named += 1
    assert named >= 20
