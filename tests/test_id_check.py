"""Admitting a waiting student after a live ID check: through the real server, then in real Chromium.

With the exam's `id_check` on, a placed student is watched (media flows, messages
and talk work) but not admitted until their own surveillant sends `admit`. The
admission lives on the participant in memory: it survives a resume, a hand-over
and a return to the queue. Without `id_check` every student is admitted when placed.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from sfu.app import REGISTRY
from tests.peers import Client, wait_until
from tests.test_organiser_flow import (
    TIMEOUT_MS,
    student_joins,
    surveillant_starts,
    tab_to,
    visible,
)
from tests.test_sfu_forwarding import create_exam, join_student, join_surveillant, token
from tests.test_signalling import joined


def admitted_pushes(client: Client, after: int = 0) -> int:
    return sum(1 for message in client.received[after:] if message["type"] == "admitted")


def entry(roster: dict[str, Any], student_id: str) -> dict[str, Any]:
    return next(student for student in roster["students"] if student["id"] == student_id)


async def roster_where(desk: Client, student_id: str, admitted: bool, after: int = 0) -> dict[str, Any]:
    return await desk.wait_for(
        lambda m: m["type"] == "roster"
        and any(s["id"] == student_id and s["admitted"] is admitted for s in m["students"]),
        after=after,
    )


async def overview_where(organiser: Client, unchecked: list[int], after: int = 0) -> dict[str, Any]:
    return await organiser.wait_for(
        lambda m: m["type"] == "overview" and [s["unchecked"] for s in m["surveillants"]] == unchecked,
        after=after,
    )


# -- through the server -----------------------------------------------------------------------


async def test_a_placed_student_is_watched_but_waits_until_admitted(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2, id_check=True)
        assert created["exam"]["id_check"] is True
        organiser = await joined(session, server, created["organiser_link"])
        desk, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Mevr. K", 2)
        student, publisher = await join_student(session, server, created, "Ada")
        assert student.latest("welcome")["exam"]["id_check"] is True
        student_id = student.latest("welcome")["participant_id"]
        await student.wait_for(lambda m: m["type"] == "assigned")
        await roster_where(desk, student_id, admitted=False)
        await overview_where(organiser, [1])

        # Not admitted, yet watched: the webcam reaches the desk live (that is where the ID is shown),
        # and messages work as usual.
        await wait_until(lambda: watcher.received[0]["webcam"].frames >= 5, 20)
        reply = await desk.request({"type": "message", "student_id": student_id, "text": "Je kaart graag."})
        assert reply["type"] == "ack"
        await student.wait_for(lambda m: m["type"] == "message")
        assert admitted_pushes(student) == 0

        desk_mark, organiser_mark = desk.mark(), organiser.mark()
        reply = await desk.request({"type": "admit", "student_id": student_id})
        assert reply["type"] == "ack", reply
        await student.wait_for(lambda m: m["type"] == "admitted")
        await roster_where(desk, student_id, admitted=True, after=desk_mark)
        await overview_where(organiser, [0], after=organiser_mark)
        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        assert exam.participants[student_id].admitted is True
        del exam

        # Admitting twice is harmless and tells the student nothing new.
        mark = student.mark()
        assert (await desk.request({"type": "admit", "student_id": student_id}))["type"] == "ack"
        await student.request({"type": "hand", "raised": False})  # a barrier through the same outbox
        assert admitted_pushes(student, mark) == 0
        for closable in (publisher, watcher, student, desk, organiser):
            await closable.close()


async def test_only_the_students_own_surveillant_may_admit(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1, id_check=True)
        organiser = await joined(session, server, created["organiser_link"])
        desk_a = await joined(session, server, created["surveillant_links"][0], "A")
        student = await joined(session, server, created["student_link"], "Ada")
        student_id = student.latest("welcome")["participant_id"]
        await student.wait_for(lambda m: m["type"] == "assigned")
        queued = await joined(session, server, created["student_link"], "Bo")
        queued_id = queued.latest("welcome")["participant_id"]
        await queued.wait_for(lambda m: m["type"] == "queue")
        link_b = (await organiser.request({"type": "add_surveillant"}))["link"]
        desk_b = await joined(session, server, link_b, "B")
        await queued.wait_for(lambda m: m["type"] == "assigned")
        await roster_where(desk_b, queued_id, admitted=False)

        refusals = [
            (desk_b, {"type": "admit", "student_id": student_id}, "not_allowed"),  # A's student
            (desk_a, {"type": "admit", "student_id": queued_id}, "not_allowed"),  # B's student
            (student, {"type": "admit", "student_id": student_id}, "not_allowed"),  # admitting oneself
            (queued, {"type": "admit", "student_id": student_id}, "not_allowed"),
            (organiser, {"type": "admit", "student_id": student_id}, "not_allowed"),
            (desk_a, {"type": "admit", "student_id": desk_b.latest("welcome")["participant_id"]},
             "unknown_participant"),
            (desk_a, {"type": "admit", "student_id": "p-000000000000"}, "unknown_participant"),
        ]
        for client, message, code in refusals:
            reply = await client.request(message)
            assert reply["type"] == "error" and reply["code"] == code, (message, reply)
        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        assert not exam.participants[student_id].admitted and not exam.participants[queued_id].admitted
        del exam
        await student.request({"type": "hand", "raised": False})
        await queued.request({"type": "hand", "raised": False})
        assert admitted_pushes(student) == admitted_pushes(queued) == 0
        for client in (organiser, desk_a, desk_b, student, queued):
            await client.close()


async def test_a_queued_student_cannot_be_admitted_before_being_placed(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1, id_check=True)
        desk = await joined(session, server, created["surveillant_links"][0], "A")
        first = await joined(session, server, created["student_link"], "Ada")
        await first.wait_for(lambda m: m["type"] == "assigned")
        second = await joined(session, server, created["student_link"], "Bo")
        await second.wait_for(lambda m: m["type"] == "queue")
        reply = await desk.request({"type": "admit", "student_id": second.latest("welcome")["participant_id"]})
        assert reply["type"] == "error" and reply["code"] == "not_allowed"
        for client in (desk, first, second):
            await client.close()


async def test_admission_survives_a_resume(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2, id_check=True)
        desk = await joined(session, server, created["surveillant_links"][0], "A")
        admitted = await joined(session, server, created["student_link"], "Ada")
        waiting = await joined(session, server, created["student_link"], "Bo")
        for client in (admitted, waiting):
            await client.wait_for(lambda m: m["type"] == "assigned")
        admitted_id = admitted.latest("welcome")["participant_id"]
        waiting_id = waiting.latest("welcome")["participant_id"]
        await desk.request({"type": "admit", "student_id": admitted_id})
        await admitted.wait_for(lambda m: m["type"] == "admitted")

        # Both drop and come back with their resume secret, within the grace period.
        mark = desk.mark()
        again = {}
        for name, client in (("Ada", admitted), ("Bo", waiting)):
            resume = client.latest("welcome")["resume"]
            await client.close()
            returning = Client(session, server.url)
            welcome = await returning.connect(token(created["student_link"]), name=name, resume=resume)
            assert welcome["participant_id"] == client.latest("welcome")["participant_id"]
            again[name] = returning
        # The admitted one is told again (its page may have been reloaded); the other still waits.
        await again["Ada"].wait_for(lambda m: m["type"] == "assigned")
        await again["Ada"].wait_for(lambda m: m["type"] == "admitted")
        await again["Bo"].wait_for(lambda m: m["type"] == "assigned")
        roster = await desk.wait_for(
            lambda m: m["type"] == "roster" and len(m["students"]) == 2 and all(s["connected"] for s in m["students"]),
            after=mark,
        )
        assert entry(roster, admitted_id)["admitted"] is True
        assert entry(roster, waiting_id)["admitted"] is False
        await again["Bo"].request({"type": "hand", "raised": False})
        assert admitted_pushes(again["Bo"]) == 0
        for client in (desk, *again.values()):
            await client.close()


async def test_a_new_place_after_the_grace_period_needs_a_new_check(server_factory: Any) -> None:
    server = await server_factory(student_grace_seconds=0.2)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2, id_check=True)
        desk = await joined(session, server, created["surveillant_links"][0], "A")
        student = await joined(session, server, created["student_link"], "Ada")
        await student.wait_for(lambda m: m["type"] == "assigned")
        old_id = student.latest("welcome")["participant_id"]
        await desk.request({"type": "admit", "student_id": old_id})
        await student.wait_for(lambda m: m["type"] == "admitted")
        resume = student.latest("welcome")["resume"]
        mark = desk.mark()
        await student.close()
        await desk.wait_for(lambda m: m["type"] == "roster" and not m["students"], timeout=5, after=mark)

        late = Client(session, server.url)
        welcome = await late.connect(token(created["student_link"]), name="Ada", resume=resume)
        assert welcome["participant_id"] != old_id
        await late.wait_for(lambda m: m["type"] == "assigned")
        await roster_where(desk, welcome["participant_id"], admitted=False)
        assert admitted_pushes(late) == 0
        for client in (desk, late):
            await client.close()


async def test_admission_survives_a_hand_over_and_a_return_to_the_queue(server_factory: Any) -> None:
    server = await server_factory(surveillant_grace_seconds=0.3)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2, id_check=True)
        organiser = await joined(session, server, created["organiser_link"])
        desk_a = await joined(session, server, created["surveillant_links"][0], "A")
        checked = await joined(session, server, created["student_link"], "Ada")
        unchecked = await joined(session, server, created["student_link"], "Bo")
        for client in (checked, unchecked):
            await client.wait_for(lambda m: m["type"] == "assigned")
        checked_id = checked.latest("welcome")["participant_id"]
        unchecked_id = unchecked.latest("welcome")["participant_id"]
        await desk_a.request({"type": "admit", "student_id": checked_id})
        await checked.wait_for(lambda m: m["type"] == "admitted")

        link_b = (await organiser.request({"type": "add_surveillant"}))["link"]
        desk_b = await joined(session, server, link_b, "B")
        b_id = desk_b.latest("welcome")["participant_id"]
        await overview_where(organiser, [1, 0])
        for student_id in (checked_id, unchecked_id):
            reply = await desk_a.request({"type": "hand_over", "student_id": student_id, "to": b_id})
            assert reply["type"] == "ack", reply
        roster = await desk_b.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 2)
        assert entry(roster, checked_id)["admitted"] is True
        assert entry(roster, unchecked_id)["admitted"] is False
        await overview_where(organiser, [0, 1])
        # The student handed over unchecked is now B's to admit, no longer A's.
        reply = await desk_a.request({"type": "admit", "student_id": unchecked_id})
        assert reply["type"] == "error" and reply["code"] == "not_allowed"
        assert (await desk_b.request({"type": "admit", "student_id": unchecked_id}))["type"] == "ack"
        await unchecked.wait_for(lambda m: m["type"] == "admitted")
        await overview_where(organiser, [0, 0])

        # A, then B leave for good: both students go back to the queue, then to a new surveillant,
        # still admitted.
        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        await desk_a.close()
        await wait_until(lambda: exam.assignment.surveillants() == (b_id,), 5)
        await desk_b.close()
        for client in (checked, unchecked):
            await client.wait_for(lambda m: m["type"] == "queue", timeout=5)
        assert exam.participants[checked_id].admitted and exam.participants[unchecked_id].admitted
        del exam
        mark = organiser.mark()
        link_c = (await organiser.request({"type": "add_surveillant"}))["link"]
        desk_c = await joined(session, server, link_c, "C")
        roster = await desk_c.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 2)
        assert all(student["admitted"] for student in roster["students"])
        overview = await overview_where(organiser, [0], after=mark)
        assert overview["surveillants"][0]["students"] == 2
        for client in (organiser, desk_c, checked, unchecked):
            await client.close()


async def test_without_id_check_every_student_is_admitted_when_placed(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1, id_check=False)
        assert created["exam"]["id_check"] is False
        organiser = await joined(session, server, created["organiser_link"])
        student = await joined(session, server, created["student_link"], "Ada")
        await student.wait_for(lambda m: m["type"] == "queue")
        assert admitted_pushes(student) == 0  # queued: not placed, so not admitted yet
        desk = await joined(session, server, created["surveillant_links"][0], "A")
        student_id = student.latest("welcome")["participant_id"]
        placed = await student.wait_for(lambda m: m["type"] == "assigned")
        await student.wait_for(lambda m: m["type"] == "admitted")
        assert student.received.index(placed) < next(
            i for i, m in enumerate(student.received) if m["type"] == "admitted"
        )
        roster = await roster_where(desk, student_id, admitted=True)
        assert entry(roster, student_id)["admitted"] is True
        overview = await overview_where(organiser, [0])
        assert overview["surveillants"][0]["students"] == 1
        # `admit` is still accepted for one's own student, and changes nothing.
        assert (await desk.request({"type": "admit", "student_id": student_id}))["type"] == "ack"
        for client in (organiser, desk, student):
            await client.close()


async def test_the_oral_exam_can_check_identity_too(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, kind="oral", cap=1, id_check=True)
        examiner = await joined(session, server, created["surveillant_links"][0], "Examinator")
        student = await joined(session, server, created["student_link"], "Eva")
        student_id = student.latest("welcome")["participant_id"]
        await roster_where(examiner, student_id, admitted=False)
        assert (await examiner.request({"type": "admit", "student_id": student_id}))["type"] == "ack"
        await student.wait_for(lambda m: m["type"] == "admitted")
        for client in (examiner, student):
            await client.close()


# -- in the browser ---------------------------------------------------------------------------


async def create_exam_with_id_check(page: Any, creator_link: str) -> dict[str, str]:
    """The organiser's form: the ID check is proposed for a written exam, not for an oral one."""
    await page.goto(creator_link)
    await visible(page, "#create")
    assert await page.is_checked("#id-check-input")
    await page.check("#kind-oral")
    assert not await page.is_checked("#id-check-input")
    await page.check("#kind-written")
    assert await page.is_checked("#id-check-input")
    await page.fill("#exam-title-input", "Economie 4 havo")
    await page.fill("#contact-input", "examenbureau@school.example")
    await page.click("#create-form button[type=submit]")
    await visible(page, "#overview")
    await visible(page, "#links")
    values = await page.eval_on_selector_all(".link-input", "inputs => inputs.map((input) => input.value)")
    return {"organiser": values[0], "student": values[1], "surveillant": values[2]}


async def _text_of(page: Any, selector: str) -> str:
    return (await page.inner_text(selector)).strip()


@pytest.mark.browser
async def test_the_desk_admits_a_student_by_keyboard_after_a_live_id_check(server: Any, page_factory: Any) -> None:
    organiser = await page_factory(locale="en-GB", viewport={"width": 1200, "height": 900})
    links = await create_exam_with_id_check(organiser, server.creator_link)
    assert "Identity check before the start" in await organiser.inner_text("#exam-meta")
    fragment = urlsplit(links["student"]).fragment
    settings = server.app[REGISTRY].signer.verify(fragment, time.time()).exam
    assert settings is not None and settings.id_check is True

    desk = await page_factory(locale="en-GB", viewport={"width": 1300, "height": 900})
    await surveillant_starts(desk, links["surveillant"], "Mevr. Jansen")
    notice = await page_factory(locale="en-GB")
    await notice.goto(links["student"])
    await visible(notice, "#notice-id-check")  # the student is told before agreeing to anything
    assert "student card" in await notice.inner_text("#notice-id-check")
    await notice.close()
    student = await page_factory(locale="en-GB")
    await student_joins(student, links["student"], "Sanne")

    # Placed and watched, not yet admitted: a calm ID-check step under the live bar.
    await visible(student, "#live-banner")
    assert "Mevr. Jansen" in await student.inner_text("#live-text")
    await student.wait_for_selector("#session-heading:text-is('Checking your identity')", timeout=TIMEOUT_MS)
    assert "hold your student card or ID up to the camera" in await student.inner_text("#session-text")
    assert "nothing is kept" in await student.inner_text("#admission")

    await desk.wait_for_selector(".tile[data-student]", timeout=TIMEOUT_MS)
    await visible(desk, ".tile .id-badge")
    assert await _text_of(desk, ".tile .id-badge") == "Identity not checked"
    assert await desk.get_attribute(".tile .admit", "aria-label") == "Check ID of Sanne"
    await organiser.wait_for_selector("#surveillants-body td.unchecked:text-is('1')", timeout=TIMEOUT_MS)
    assert await organiser.is_visible("#unchecked-column")

    # The tile leads to the ID check view: the camera large beside a smaller screen (swappable),
    # and Admit only once the surveillant says they have looked, by the keyboard alone.
    await desk.focus("#desk-heading")
    await tab_to(desk, ".tile .admit")
    await desk.keyboard.press("Enter")
    await visible(desk, "#focus-dialog")
    await visible(desk, "#admit-section")
    webcam = await desk.eval_on_selector(".big-webcam", "node => node.getBoundingClientRect().width")
    screen = await desk.eval_on_selector(".big-screen", "node => node.getBoundingClientRect().width")
    assert webcam > 1.5 * screen, (webcam, screen)
    await desk.click("#swap-media")
    webcam = await desk.eval_on_selector(".big-webcam", "node => node.getBoundingClientRect().width")
    screen = await desk.eval_on_selector(".big-screen", "node => node.getBoundingClientRect().width")
    assert screen > 1.5 * webcam, (webcam, screen)
    await desk.click("#swap-media")
    assert await desk.is_disabled("#admit-button")
    assert await student.is_visible("#admission")  # nothing happened to the student yet
    await desk.focus("#focus-close")
    await tab_to(desk, "#admit-looked")
    await desk.keyboard.press("Space")
    await tab_to(desk, "#admit-button")
    await desk.keyboard.press("Enter")
    await desk.wait_for_selector("#admit-result:has-text('Sanne is admitted.')", timeout=TIMEOUT_MS)
    await desk.wait_for_selector(".tile .tile-admission", state="hidden", timeout=TIMEOUT_MS)
    assert "Identity checked" in await desk.inner_text("#admit-state")
    await desk.keyboard.press("Escape")
    await desk.wait_for_selector("#focus-dialog", state="hidden", timeout=TIMEOUT_MS)

    # The student's page moves to the normal live view and says so.
    await student.wait_for_selector("#session-heading:text-is('You are live')", timeout=TIMEOUT_MS)
    assert "Mevr. Jansen is watching live" in await student.inner_text("#session-text")
    assert "Your identity has been checked" in await student.inner_text("#admission")
    await visible(student, "#live-banner")
    await organiser.wait_for_selector("#surveillants-body td.unchecked:text-is('0')", timeout=TIMEOUT_MS)

    # The large view shows the check as done.
    await tab_to(desk, ".tile .open")
    await desk.keyboard.press("Enter")
    await visible(desk, "#admit-section")
    assert "Identity checked" in await desk.inner_text("#admit-state")
    assert await desk.is_hidden("#admit-button")

    for page in (organiser, desk, student):
        assert page.errors == [], page.errors
