"""Nobody gets in: every message type from every kind of sender, through the real server.

The matrix below is the authorization policy written out cell by cell. Each
cell runs on a fresh server with the same cast:

- exam A (cap 2): its organiser; surveillant A with student S; surveillant B
  with student T;
- exam X: a surveillant and student U (the "student of another exam");
- the creator link (an organiser without an exam);
- a link of an exam that has ended, a forged link (a student link relabelled
  organiser, signature kept), an expired link, and a socket with no link at all.

Allowed cells must succeed and reach only whom they concern. Every other cell
must get its specific error code and change nothing: not exam A's assignment,
statuses, focus, talk, slots and media, not exam X, and no other participant
may receive anything.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from sfu.app import REGISTRY
from sfu.links import Capability, ExamSettings, LinkSigner
from tests.conftest import TEST_SECRET
from tests.peers import Client, StudentPeer, SurveillantPeer, wait_until
from tests.test_sfu_forwarding import create_exam, join_student, join_surveillant, token
from tests.test_signalling import joined, wait_closed

OK = "ok"

MESSAGE_TYPES = (
    "hello", "create_exam", "add_surveillant", "set_cap", "end_exam", "offer", "status", "hand", "leave",
    "focus", "message", "talk", "hand_over", "end_session", "admit", "check", "seat_links",
)
SENDERS = (
    "creator", "organiser", "surveillant_assigned", "surveillant_not_assigned", "student",
    "student_other_exam", "no_token", "forged_token", "expired_token", "ended_exam",
)

_NA, _NAU = "not_allowed", "not_authenticated"
_LINKLESS = ("link_invalid", "link_expired", "exam_ended")
# fmt: off
EXPECTED: dict[str, tuple[str, ...]] = {
    #                 creator  organiser surv.A   surv.B   student  other st. no token  forged / expired / ended
    "hello":           (_NA,   _NA,      _NA,     _NA,     _NA,     _NA,      "invalid", *_LINKLESS),
    "create_exam":     (OK,    _NA,      _NA,     _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "add_surveillant": (_NA,   OK,       _NA,     _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "set_cap":         (_NA,   OK,       _NA,     _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "end_exam":        (_NA,   OK,       _NA,     _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "offer":           (_NA,   _NA,      OK,      OK,      OK,      OK,       _NAU,      *_LINKLESS),
    "status":          (_NA,   _NA,      _NA,     _NA,     OK,      OK,       _NAU,      *_LINKLESS),
    "hand":            (_NA,   _NA,      _NA,     _NA,     OK,      OK,       _NAU,      *_LINKLESS),
    "leave":           (_NA,   _NA,      _NA,     _NA,     OK,      OK,       _NAU,      *_LINKLESS),
    "focus":           (_NA,   _NA,      OK,      _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "message":         (_NA,   _NA,      OK,      _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "talk":            (_NA,   _NA,      OK,      _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "hand_over":       (_NA,   _NA,      OK,      _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "end_session":     (_NA,   _NA,      OK,      _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "admit":           (_NA,   _NA,      OK,      _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
    "check":           (_NA,   _NA,      _NA,     _NA,     _NA,     _NA,      OK,        *_LINKLESS),
    "seat_links":      (_NA,   OK,       _NA,     _NA,     _NA,     _NA,      _NAU,      *_LINKLESS),
}
# fmt: on
# Notes on single cells:
# - "no token" x hello: a hello without its required `token` field is `invalid`.
# - surveillant B x focus/message/talk/end_session name student S, who is A's; B x hand_over
#   is "hand S over to myself" (to = B): a surveillant cannot take a student by naming them.
# - forged / expired / ended: the sender says hello with that link and sends the message right
#   behind it; the hello is refused, the socket closed (4001, 4001, 4000) and the message never read.
# - the student of exam X acts in exam X: allowed there, and exam A must not notice.

CELLS = [(kind, sender) for kind in MESSAGE_TYPES for sender in SENDERS]


def test_the_table_covers_every_cell_and_every_protocol_type() -> None:
    from sfu.messages import CLIENT_MESSAGE_TYPES, ERROR_TEXT

    assert set(EXPECTED) == set(MESSAGE_TYPES) == set(CLIENT_MESSAGE_TYPES)
    assert all(len(row) == len(SENDERS) for row in EXPECTED.values())
    assert {code for row in EXPECTED.values() for code in row} - {OK} <= set(ERROR_TEXT)


# -- the cast -----------------------------------------------------------------------------


@dataclass
class World:
    """Everyone in one cell's server."""

    session: aiohttp.ClientSession
    server: Any
    exam_a: str
    exam_x: str
    ids: dict[str, str]
    clients: dict[str, Client]
    links: dict[str, str]
    settings_a: ExamSettings
    marks: dict[str, int] = field(default_factory=dict)

    @property
    def app(self) -> Any:
        return self.server.app


CLIENT_OF_SENDER = {
    "creator": "creator",
    "organiser": "organiser",
    "surveillant_assigned": "surveillant_a",
    "surveillant_not_assigned": "surveillant_b",
    "student": "student_s",
    "student_other_exam": "student_u",
}


def _settings(exam: dict[str, Any]) -> ExamSettings:
    return ExamSettings(
        exam_id=exam["id"], title=exam["title"], kind=exam["kind"], cap=exam["cap"],
        note=exam["note"], contact=exam["contact"], ends_at=exam["ends_at"], id_check=exam["id_check"],
    )


def forged_token(student_token: str) -> str:
    """The exam's student link with its role changed to organiser and the signature kept."""
    body, signature = student_token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(role="organiser", seat="organiser")
    raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature


def expired_token(settings: ExamSettings) -> str:
    """A correctly signed student link of the exam that expired a minute ago."""
    capability = Capability(role="student", exam=settings, seat="student", expires_at=int(time.time()) - 60)
    return LinkSigner(TEST_SECRET).sign(capability)


async def build_world(session: aiohttp.ClientSession, server: Any) -> World:
    # A cell opens a dozen sockets from one address: well within the join limits.
    created_a = await create_exam(session, server, cap=2, id_check=True)  # S and T wait to be admitted
    created_x = await create_exam(session, server, cap=2)
    created_e = await create_exam(session, server, cap=2)

    # Exam E ends at once: its student link is the "ended exam" sender's.
    ender = await joined(session, server, created_e["organiser_link"])
    await ender.send({"type": "end_exam", "v": 1})
    await wait_closed(ender)

    clients: dict[str, Client] = {}
    clients["creator"] = await joined(session, server, server.creator_link)
    clients["organiser"] = await joined(session, server, created_a["organiser_link"])
    clients["surveillant_a"] = await joined(session, server, created_a["surveillant_links"][0], "Surveillant A")
    clients["student_s"] = await joined(session, server, created_a["student_link"], "Student S")
    await clients["student_s"].wait_for(lambda m: m["type"] == "assigned")
    link_b = (await clients["organiser"].request({"type": "add_surveillant"}))["link"]
    clients["surveillant_b"] = await joined(session, server, link_b, "Surveillant B")
    clients["student_t"] = await joined(session, server, created_a["student_link"], "Student T")
    await clients["student_t"].wait_for(lambda m: m["type"] == "assigned")
    clients["surveillant_x"] = await joined(session, server, created_x["surveillant_links"][0], "Surveillant X")
    clients["student_u"] = await joined(session, server, created_x["student_link"], "Student U")
    await clients["student_u"].wait_for(lambda m: m["type"] == "assigned")

    ids = {name: client.latest("welcome")["participant_id"] for name, client in clients.items()}
    exam_a = created_a["exam"]["id"]
    assignment = server.app[REGISTRY].exams[exam_a].assignment
    assert assignment.students_of(ids["surveillant_a"]) == (ids["student_s"],)
    assert assignment.students_of(ids["surveillant_b"]) == (ids["student_t"],)
    await clients["surveillant_a"].wait_for(lambda m: m["type"] == "roster" and m["students"])
    await clients["surveillant_b"].wait_for(lambda m: m["type"] == "roster" and m["students"])
    settings_a = _settings(created_a["exam"])
    links = {
        "forged_token": forged_token(token(created_a["student_link"])),
        "expired_token": expired_token(settings_a),
        "ended_exam": token(created_e["student_link"]),
        "student_a": token(created_a["student_link"]),
    }
    return World(session, server, exam_a, created_x["exam"]["id"], ids, clients, links, settings_a)


async def close_world(world: World) -> None:
    for client in world.clients.values():
        await client.close()


async def offer_sdp(layout: str, slots: int = 2) -> str:
    """A real offer laid out like a student's or a surveillant's page (its peer closed again)."""
    peer = StudentPeer() if layout == "student" else SurveillantPeer(slots)
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    sdp = peer.pc.localDescription.sdp
    await peer.close()
    return sdp


async def payload(kind: str, sender: str, world: World) -> dict[str, Any]:
    """The message a sender tries in a cell: well-formed, naming student S where it names anyone."""
    student_s, surveillant_b = world.ids["student_s"], world.ids["surveillant_b"]
    if kind == "hello":
        return {"type": "hello", "token": world.links["student_a"], "name": "Nog een keer"}
    if kind == "offer":
        layout = "surveillant" if sender.startswith("surveillant") else "student"
        return {"type": "offer", "sdp": await offer_sdp(layout)}
    return {
        "create_exam": {
            "type": "create_exam", "title": "Extra", "kind": "written", "cap": 2, "note": "", "contact": "",
            "ends_at": int(time.time()) + 3600, "id_check": True,
        },
        "add_surveillant": {"type": "add_surveillant"},
        "set_cap": {"type": "set_cap", "cap": 3},
        "end_exam": {"type": "end_exam"},
        "status": {"type": "status", "camera": False, "microphone": False, "screen": False, "page_hidden": True},
        "hand": {"type": "hand", "raised": True},
        "leave": {"type": "leave"},
        "focus": {"type": "focus", "student_id": student_s},
        "message": {"type": "message", "student_id": student_s, "text": "Alleen voor S"},
        "talk": {"type": "talk", "student_id": student_s, "on": True},
        "hand_over": {"type": "hand_over", "student_id": student_s, "to": surveillant_b},
        "end_session": {"type": "end_session", "student_id": student_s, "reason": "Klaar"},
        "admit": {"type": "admit", "student_id": student_s},
        "check": {"type": "check", "token": world.links["student_a"]},
        "seat_links": {"type": "seat_links", "count": 2},
    }[kind]


# -- what "changes nothing" means -------------------------------------------------------------


def exam_snapshot(app: Any, exam_id: str) -> dict[str, Any] | None:
    """Everything of an exam an action could change, by value (peers by identity)."""
    exam = app[REGISTRY].exams.get(exam_id)
    if exam is None:
        return None
    return {
        "closed": exam.closed,
        "cap": exam.cap,
        "participants": sorted(
            (p.id, p.role, p.name, p.seat, p.connected, p.hand_raised, tuple(p.status.to_public().items()), p.alerts,
             p.admitted)
            for p in exam.participants.values()
        ),
        "assignment": {s: exam.assignment.students_of(s) for s in exam.assignment.surveillants()},
        "available": {s: exam.assignment.is_available(s) for s in exam.assignment.surveillants()},
        "queue": exam.assignment.queue(),
        "slots": {s: dict(slots) for s, slots in exam.slots.items()},
        "focus": dict(exam.focus),
        "talking": dict(exam.talking),
        "peers": {owner: id(peer) for owner, peer in exam.media.peers.items()},
        "routes": dict(exam.media.routes),
        "talk": dict(exam.media.talk),
    }


def world_snapshot(world: World) -> dict[str, Any]:
    return {
        "exams": sorted(world.app[REGISTRY].exams),
        "exam_a": exam_snapshot(world.app, world.exam_a),
        "exam_x": exam_snapshot(world.app, world.exam_x),
    }


IGNORED_PUSHES = frozenset({"stats"})  # once a second, whatever happens


async def received_since_mark(world: World, skip: str | None) -> dict[str, list[dict[str, Any]]]:
    """What each still-open client got since the marks, after a barrier that flushes its outbox.

    The barrier is a frame of unknown type: its error reply goes through the same
    outbox as any push, so everything pushed before it has arrived when it does.
    """
    news: dict[str, list[dict[str, Any]]] = {}
    for name, client in world.clients.items():
        if name == skip:
            continue
        if client.closed_code is None and client.socket is not None and not client.socket.closed:
            try:
                await client.request({"type": "barrier"}, timeout=10)
            except (ConnectionError, RuntimeError):
                pass  # closed by the action itself (end_exam, leave, end_session)
        news[name] = [
            m for m in client.received[world.marks[name]:]
            if m["type"] not in IGNORED_PUSHES and not (m["type"] == "error" and m["code"] == "unknown_type")
        ]
    return news


# -- the matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "sender"), CELLS, ids=[f"{k}-by-{s}" for k, s in CELLS])
async def test_authorization_matrix(server: Any, kind: str, sender: str) -> None:
    expected = EXPECTED[kind][SENDERS.index(sender)]
    async with aiohttp.ClientSession() as session:
        world = await build_world(session, server)
        try:
            message = await payload(kind, sender, world)
            before = world_snapshot(world)
            world.marks = {name: client.mark() for name, client in world.clients.items()}
            own = CLIENT_OF_SENDER.get(sender)
            if own is not None:
                outcome, reply, closed = await _send_as_participant(world.clients[own], kind, message)
            else:
                outcome, reply, closed = await _send_without_valid_link(world, sender, kind, message)
            news = await received_since_mark(world, skip=own)
            after = world_snapshot(world)

            if expected != OK:
                assert outcome == expected, f"{kind} by {sender}: expected {expected}, got {reply}"
                assert reply is not None and set(reply["message"]) == {"nl", "en"}
                assert after == before, f"{kind} by {sender} was refused but changed the exam"
                assert all(messages == [] for messages in news.values()), (
                    f"{kind} by {sender} was refused but others heard of it: {news}"
                )
                if sender in ("forged_token", "expired_token", "ended_exam"):
                    assert closed == (4000 if sender == "ended_exam" else 4001)
                return

            assert outcome == OK, f"{kind} by {sender} should be allowed, got {reply}"
            check_allowed_effect(world, kind, sender, reply, closed, before, after, news)
        finally:
            await close_world(world)


async def _send_as_participant(client: Client, kind: str, message: dict[str, Any]) -> tuple[str, Any, int | None]:
    """An authenticated participant sends; the outcome is OK or the error code."""
    if kind in ("end_exam", "leave"):
        # These answer by closing: end_exam with exam_ended (4000), leave with 4010.
        mark = client.mark()
        client._next_id += 1
        ref = client._next_id
        await client.send({"v": 1, **message, "id": ref})
        try:
            reply = await client.wait_for(
                lambda m: m.get("re") == ref or m["type"] == "exam_ended", timeout=10, after=mark
            )
        except ConnectionError:
            return OK, None, client.closed_code
        if reply["type"] == "error":
            return reply["code"], reply, None
        await wait_closed(client)
        return OK, reply, client.closed_code
    reply = await client.request(message)
    if reply["type"] == "error":
        return reply["code"], reply, None
    return OK, reply, None


async def _send_without_valid_link(
    world: World, sender: str, kind: str, message: dict[str, Any]
) -> tuple[str, Any, int | None]:
    """No link, or a refused one: a fresh socket tries its hello (if any) and the message right behind it."""
    client = Client(world.session, world.server.url)
    client.socket = await world.session.ws_connect(client.url, max_msg_size=1 << 20)
    client._reader = asyncio.ensure_future(client._read())
    try:
        if sender == "no_token":
            if kind == "hello":
                message = {"type": "hello", "name": "Zonder link"}
            reply = await client.request(message)
            return reply["code"] if reply["type"] == "error" else OK, reply, None
        hello_token = world.links[sender]
        await client.send({"type": "hello", "v": 1, "token": hello_token, "name": "Indringer", "id": 1})
        if kind != "hello":
            await client.send({"v": 1, **message, "id": 2})
        reply = await client.wait_for(lambda m: m.get("re") in (1, 2) or m["type"] == "error", timeout=10)
        await wait_closed(client)
        later = [m for m in client.received if m.get("re") == 2 or m["type"] not in ("error",)]
        assert later == [], f"after a refused hello the server still answered: {later}"
        assert reply["type"] == "error", reply
        return reply["code"], reply, client.closed_code
    finally:
        await client.close()


def check_allowed_effect(
    world: World, kind: str, sender: str, reply: Any, closed: int | None,
    before: dict[str, Any], after: dict[str, Any], news: dict[str, list[dict[str, Any]]],
) -> None:
    """An allowed action did what it says, and only those it concerns heard of it."""
    types = {name: [m["type"] for m in messages] for name, messages in news.items()}
    ids = world.ids
    # Whatever happens in exam A, exam X's people never hear of it (and the reverse).
    exam_x_people = ("surveillant_x", "student_u")
    exam_a_people = ("organiser", "surveillant_a", "surveillant_b", "student_s", "student_t")
    # Student T (surveillant B's) hears nothing of actions about student S, except the exam's end.
    if kind != "end_exam":
        assert types.get("student_t", []) == [], types

    if sender == "student_other_exam":
        assert after["exam_a"] == before["exam_a"], f"{kind} in exam X changed exam A"
        assert all(types.get(name, []) == [] for name in exam_a_people), types
        if kind == "offer":
            assert reply["type"] == "answer"
        elif kind == "leave":
            assert closed == 4010
        else:
            assert reply["type"] == "ack"
        return
    assert all(types.get(name, []) == [] for name in exam_x_people if name != CLIENT_OF_SENDER.get(sender)), types
    assert after["exam_x"] == before["exam_x"]

    exam = after["exam_a"]
    if kind == "create_exam":
        assert reply["type"] == "exam_created" and reply["student_link"] and reply["surveillant_links"]
        assert after == before  # an exam starts when its first link is used
        assert all(messages == [] for messages in news.values())
    elif kind == "check":
        assert reply["type"] == "link_status" and reply["status"] == "ok"
        assert after == before and all(messages == [] for messages in news.values())
    elif kind == "seat_links":
        assert reply["type"] == "seat_links" and len(reply["links"]) == 2
        assert all("/join/#" in link for link in reply["links"])
        assert after == before and all(messages == [] for messages in news.values())
    elif kind == "add_surveillant":
        assert reply["type"] == "surveillant_link" and "/desk/#" in reply["link"]
        assert after == before and all(messages == [] for messages in news.values())
    elif kind == "set_cap":
        assert reply["type"] == "ack" and exam["cap"] == 3
        assert {"roster"} == set(types["surveillant_a"]) == set(types["surveillant_b"])
        assert types["student_s"] == []
    elif kind == "end_exam":
        assert closed == 4000 and after["exam_a"] is None and world.exam_a not in after["exams"]
        for name in exam_a_people:
            assert "exam_ended" in types.get(name, []) or world.clients[name].closed_code == 4000, name
        assert world.exam_x in after["exams"]
    elif kind == "offer":
        assert reply["type"] == "answer" and reply["sdp"].startswith("v=0")
        own = ids[CLIENT_OF_SENDER[sender]]
        assert own in exam["peers"] and exam["peers"].get(own) != before["exam_a"]["peers"].get(own)
        unchanged = {k: v for k, v in exam.items() if k not in ("peers",)}
        assert unchanged == {k: v for k, v in before["exam_a"].items() if k not in ("peers",)}
        assert all(messages == [] for name, messages in news.items()), types
    elif kind in ("status", "hand"):
        assert reply["type"] == "ack"
        alert = "page_hidden" if kind == "status" else "hand_raised"
        alerts = [m for m in news["surveillant_a"] if m["type"] == "alert"]
        assert [(m["student_id"], m["kind"]) for m in alerts] == [(ids["student_s"], alert)]
        assert types["surveillant_b"] == [] and types["student_t"] == []
        assert set(types["organiser"]) <= {"overview"}
    elif kind == "leave":
        assert closed == 4010
        assert ids["student_s"] not in exam["assignment"][ids["surveillant_a"]]
        assert ("left" in [m.get("kind") for m in news["surveillant_a"]])
        assert types["surveillant_b"] == []
    elif kind == "focus":
        assert reply["type"] == "ack" and exam["focus"][ids["surveillant_a"]] == ids["student_s"]
        assert [m["level"] for m in news["student_s"] if m["type"] == "quality"] == ["focus"]
        assert types["surveillant_b"] == []
    elif kind == "message":
        assert reply["type"] == "ack"
        assert [m["text"] for m in news["student_s"] if m["type"] == "message"] == ["Alleen voor S"]
        assert all("message" not in t for name, t in types.items() if name != "student_s"), types
    elif kind == "talk":
        assert reply["type"] == "ack" and exam["talking"][ids["surveillant_a"]] == ids["student_s"]
        assert [m["on"] for m in news["student_s"] if m["type"] == "talk"] == [True]
        assert all("talk" not in t for name, t in types.items() if name != "student_s"), types
    elif kind == "hand_over":
        assert reply["type"] == "ack"
        assert exam["assignment"][ids["surveillant_b"]] == (ids["student_t"], ids["student_s"])
        assert [m["surveillant"]["id"] for m in news["student_s"] if m["type"] == "assigned"] == [
            ids["surveillant_b"]
        ]
    elif kind == "end_session":
        assert reply["type"] == "ack"
        assert [m["reason"] for m in news["student_s"] if m["type"] == "session_ended"] == ["Klaar"]
        assert ids["student_s"] not in [p[0] for p in exam["participants"]]
        assert world.clients["student_s"].closed_code == 4002
    elif kind == "admit":
        assert reply["type"] == "ack"
        assert [p[0] for p in before["exam_a"]["participants"] if p[-1]] == []
        assert [p[0] for p in exam["participants"] if p[-1]] == [ids["student_s"]]
        assert types["student_s"] == ["admitted"]
        assert set(types["organiser"]) == {"overview"}
        assert types["surveillant_b"] == []
    else:  # pragma: no cover - the table has no other allowed cell
        raise AssertionError(f"no effect check for {kind} by {sender}")


# -- guessing ids and replaying offers, with live media ---------------------------------------


async def test_a_surveillant_gets_no_unassigned_student_by_guessing_ids(server: Any) -> None:
    """Surveillant B names A's student S in every way it can; B's peer never receives S's media."""
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        organiser = await joined(session, server, created["organiser_link"])
        desk_a, watcher_a = await join_surveillant(session, server, created["surveillant_links"][0], "A", 2)
        student, publisher = await join_student(session, server, created, "S")
        await student.wait_for(lambda m: m["type"] == "assigned")
        link_b = (await organiser.request({"type": "add_surveillant"}))["link"]
        desk_b, watcher_b = await join_surveillant(session, server, link_b, "B", 2)
        student_id = student.latest("welcome")["participant_id"]
        b_id = desk_b.latest("welcome")["participant_id"]
        a_id = desk_a.latest("welcome")["participant_id"]
        await wait_until(lambda: watcher_a.received[0]["webcam"].frames >= 5, 15)

        for message in (
            {"type": "focus", "student_id": student_id},
            {"type": "hand_over", "student_id": student_id, "to": b_id},
            {"type": "talk", "student_id": student_id, "on": True},
            {"type": "message", "student_id": student_id, "text": "psst"},
            {"type": "end_session", "student_id": student_id, "reason": "x"},
            {"type": "admit", "student_id": student_id},
            {"type": "hand_over", "student_id": a_id, "to": b_id},  # a surveillant's id as a student's
            {"type": "focus", "student_id": a_id},
        ):
            reply = await desk_b.request(message)
            assert reply["type"] == "error" and reply["code"] in ("not_allowed", "unknown_participant"), (
                message, reply
            )
        # B re-offers with as many slots as the cap allows: still nothing of S.
        await watcher_b.close()
        watcher_b = SurveillantPeer(2)
        await watcher_b.connect(desk_b)
        start = watcher_a.received[0]["webcam"].frames
        await wait_until(lambda: watcher_a.received[0]["webcam"].frames >= start + 15, 15)
        assert all(track.frames == 0 for slot in watcher_b.received for track in slot.values())

        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        assert exam.assignment.surveillant_of(student_id) == a_id
        s_peer, b_peer = exam.media.peers[student_id], exam.media.peers[b_id]
        for publication in s_peer.publications.values():
            assert publication.leg is None or publication.leg.sink is exam.media.peers[a_id]
        assert all(leg.source is None for leg in b_peer.legs.values())
        del exam, s_peer, b_peer
        assert not [m for m in student.received if m["type"] in ("message", "talk", "session_ended")]
        for closable in (publisher, watcher_a, watcher_b, student, desk_a, desk_b, organiser):
            await closable.close()


async def test_replaying_someone_elses_offer_receives_nothing(server: Any) -> None:
    """Surveillant B replays A's offer SDP, student T replays student S's: the replayers' peers get
    nothing, A keeps receiving S, and no student ever receives another student's media."""
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        organiser = await joined(session, server, created["organiser_link"])
        desk_a, watcher_a = await join_surveillant(session, server, created["surveillant_links"][0], "A", 1)
        student_s, publisher_s = await join_student(session, server, created, "S")
        await student_s.wait_for(lambda m: m["type"] == "assigned")
        link_b = (await organiser.request({"type": "add_surveillant"}))["link"]
        desk_b, watcher_b = await join_surveillant(session, server, link_b, "B", 1)
        student_t, publisher_t = await join_student(session, server, created, "T")
        await student_t.wait_for(lambda m: m["type"] == "assigned")
        await wait_until(lambda: watcher_a.received[0]["webcam"].frames >= 5, 15)
        await wait_until(lambda: watcher_b.received[0]["webcam"].frames >= 5, 15)
        ids = {name: c.latest("welcome")["participant_id"] for name, c in
               (("a", desk_a), ("b", desk_b), ("s", student_s), ("t", student_t))}

        # B replays A's offer; T replays S's offer. The server answers (the SDP is well-formed)
        # or refuses; either way the answer is useless without the other side's DTLS key.
        for client, stolen in ((desk_b, watcher_a), (student_t, publisher_s)):
            reply = await client.request({"type": "offer", "sdp": stolen.pc.localDescription.sdp})
            assert reply["type"] in ("answer", "error"), reply
            if reply["type"] == "error":
                assert reply["code"] == "media_failed"

        # A still receives S; B (whose own peer was replaced) and the students receive nothing of S.
        b_frames = watcher_b.received[0]["webcam"].frames
        start = watcher_a.received[0]["webcam"].frames
        await wait_until(lambda: watcher_a.received[0]["webcam"].frames >= start + 30, 15)
        assert watcher_b.received[0]["webcam"].frames - b_frames <= 1
        assert publisher_s.examiner.frames == 0 and publisher_t.examiner.frames == 0
        assert publisher_s.voice.frames == 0 and publisher_t.voice.frames == 0

        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        a_peer = exam.media.peers[ids["a"]]
        for publication in exam.media.peers[ids["s"]].publications.values():
            assert publication.leg is None or publication.leg.sink is a_peer
        b_peer = exam.media.peers.get(ids["b"])
        if b_peer is not None:
            assert b_peer.pc.connectionState != "connected"
            s_publications = set(map(id, exam.media.peers[ids["s"]].publications.values()))
            assert not [leg for leg in b_peer.legs.values() if id(leg.source) in s_publications]
        del exam, a_peer, b_peer
        for closable in (publisher_s, publisher_t, watcher_a, watcher_b, student_s, student_t, desk_a, desk_b,
                         organiser):
            await closable.close()
