"""The organiser's page and the surveillant's desk in a real Chromium against the real server.

An organiser opens the creator link and creates an exam; a student (the real
student page) joins and waits in the queue, which the organiser sees; a
surveillant opens the desk and the student is placed with them: a live tile on
the desk, an empty queue on the organiser's page. A reload keeps the exam.
Then the desk steps in, by keyboard alone: focus (the student's encoding follows),
a message, talk, a hand-over to a second desk, an alert, an incident note, and ending the session.
An oral exam runs face to face, one student at a time, with "next student".
The student's "screen" is an animated canvas: headless screen capture may give no frames.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import CANVAS_SCREEN_FUNCTION

pytestmark = pytest.mark.browser

# Test-only: getDisplayMedia gives an animated canvas that reports a whole monitor.
CANVAS_SCREEN = CANVAS_SCREEN_FUNCTION + "navigator.mediaDevices.getDisplayMedia = async () => window.__canvasScreen();"

# Test-only: remembers the webcam bitrate the student's page asks of its sender.
QUALITY_SPY = r"""
(() => {
  window.__maxBitrates = [];
  const setParameters = RTCRtpSender.prototype.setParameters;
  RTCRtpSender.prototype.setParameters = function (parameters) {
    if (this.track && this.track.kind === 'video') {
      window.__maxBitrates.push(parameters.encodings.map((encoding) => encoding.maxBitrate ?? null));
    }
    return setParameters.call(this, parameters);
  };
})();
"""

TIMEOUT_MS = 20_000


async def eventually(check: Any, timeout: float = 20.0) -> Any:
    """Poll an async check until it returns something truthy (CSP forbids wait_for_function)."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.1)
    return result


async def visible(page: Any, selector: str) -> None:
    await page.wait_for_selector(selector, state="visible", timeout=TIMEOUT_MS)


async def create_exam(page: Any, creator_link: str, kind: str = "written") -> dict[str, str]:
    """Fill in the organiser's form and return the links it shows."""
    await page.goto(creator_link)
    await visible(page, "#create")
    assert await page.input_value("#cap-input") == "8"
    await page.check("#kind-oral")
    assert await page.input_value("#cap-input") == "1"
    await page.check("#kind-written")
    assert await page.input_value("#cap-input") == "8"
    assert await page.input_value("#ends-input"), "the end time has a default"

    await page.fill("#exam-title-input", "Geschiedenis 5 vwo")
    await page.fill("#contact-input", "examenbureau@school.example")
    await page.fill("#note-input", "Geen camera? Bel het examenbureau.")
    await page.check(f"#kind-{kind}")
    await page.click("#create-form button[type=submit]")

    await visible(page, "#overview")
    await visible(page, "#links")
    values = await page.eval_on_selector_all(".link-input", "inputs => inputs.map((input) => input.value)")
    assert len(values) == 3, values
    return {"organiser": values[0], "student": values[1], "surveillant": values[2]}


async def student_joins(page: Any, student_link: str, name: str) -> None:
    await page.context.add_init_script(CANVAS_SCREEN)
    await page.goto(student_link)
    await page.fill("#student-name", name)
    await page.click("#confirm-button")
    await page.wait_for_selector("#camera-status[data-state=ok]", timeout=TIMEOUT_MS)
    await page.click("#screen-share")
    await page.wait_for_selector("#screen-status[data-state=ok]", timeout=TIMEOUT_MS)
    await page.click("#join-button")
    await visible(page, "#step-session")


async def surveillant_starts(page: Any, surveillant_link: str, name: str) -> None:
    await page.goto(surveillant_link)
    await visible(page, "#start")
    # The code of conduct comes first; nothing starts without agreeing to it.
    assert "record" in (await page.inner_text(".conduct")).lower()
    await page.fill("#display-name", name)
    await page.click("#start-form button[type=submit]")
    assert await page.is_visible("#start")
    assert await page.inner_text("#conduct-error")
    await page.check("#conduct-agree")
    await page.click("#start-form button[type=submit]")
    await visible(page, "#desk")


async def tile_plays(page: Any) -> bool:
    return await page.eval_on_selector(
        ".tile .tile-webcam-video",
        "video => video.videoWidth > 0 && video.currentTime > 0.5",
    )


RECORDER_SPY = """
window.__recorders = 0;
const Recorder = window.MediaRecorder;
window.MediaRecorder = class extends Recorder {
  constructor(...args) { super(...args); window.__recorders += 1; }
};
"""


async def kept_in_the_browser(page: Any) -> list[Any]:
    """What the page left in its origin's storage, and how many recorders it made."""
    return await page.evaluate(
        "async () => [localStorage.length, sessionStorage.length, document.cookie,"
        " (await indexedDB.databases()).length, window.__recorders]"
    )


async def test_an_exam_from_creation_to_a_student_on_the_desk(server: Any, page_factory: Any) -> None:
    organiser = await page_factory(locale="en-GB", viewport={"width": 1200, "height": 900})
    await organiser.context.add_init_script(RECORDER_SPY)
    links = await create_exam(organiser, server.creator_link)

    # The page's address became the exam's organiser link, so a reload keeps the exam.
    organiser_fragment = urlsplit(links["organiser"]).fragment
    assert urlsplit(organiser.url).fragment == organiser_fragment
    assert organiser_fragment != urlsplit(server.creator_link).fragment
    assert "Geschiedenis 5 vwo" in await organiser.inner_text("#exam-title")
    await organiser.wait_for_selector('#queue-length[data-count="0"]', timeout=TIMEOUT_MS)
    assert await organiser.is_visible("#surveillants-empty")

    # A student joins before any surveillant: the organiser sees the queue and is told what to do.
    student = await page_factory(locale="en-GB")
    await student.context.add_init_script(RECORDER_SPY)
    await student_joins(student, links["student"], "Sanne")
    await organiser.wait_for_selector('#queue-length[data-count="1"]', timeout=TIMEOUT_MS)
    await visible(organiser, "#queue-prompt")
    assert "surveillant" in (await organiser.inner_text("#queue-prompt-text")).lower()

    # A surveillant comes in: the student is placed with them and the queue empties.
    desk = await page_factory(locale="en-GB", viewport={"width": 1300, "height": 900})
    await desk.context.add_init_script(RECORDER_SPY)
    await surveillant_starts(desk, links["surveillant"], "Mevr. Jansen")
    await desk.wait_for_selector(".tile[data-student]", timeout=TIMEOUT_MS)
    assert await desk.inner_text(".tile .tile-name") == "Sanne"
    await organiser.wait_for_selector('#queue-length[data-count="0"]', timeout=TIMEOUT_MS)
    assert await organiser.is_hidden("#queue-prompt")
    await organiser.wait_for_selector("#surveillants-body tr", timeout=TIMEOUT_MS)
    row = await organiser.inner_text("#surveillants-body tr")
    assert "Mevr. Jansen" in row and "1 of 8" in row and "connected" in row

    # The tile's webcam really plays (media went student → SFU → desk).
    await eventually(lambda: tile_plays(desk), timeout=30.0)
    assert await desk.eval_on_selector(
        ".tile .tile-webcam-video",
        "video => !video.controls && video.disablePictureInPicture"
        " && video.getAttribute('controlslist').includes('nodownload')",
    )

    # The organiser's reload comes back to the same exam, not to the creation form.
    await organiser.reload()
    await visible(organiser, "#overview")
    assert await organiser.is_hidden("#create")
    await organiser.wait_for_selector("#surveillants-body tr", timeout=TIMEOUT_MS)
    assert "Mevr. Jansen" in await organiser.inner_text("#surveillants-body tr")

    # Nothing is kept in any page's storage and no page ever made a recorder; the live
    # student's tab alone holds its resume in sessionStorage (PRIVACY.md; emptied at the
    # session's end: tests/test_reload.py).
    for page in (organiser, desk):
        assert await kept_in_the_browser(page) == [0, 0, "", 0, 0]
        assert page.errors == [], page.errors
    assert await kept_in_the_browser(student) == [0, 1, "", 0, 0]
    assert await student.evaluate("Object.keys(sessionStorage)[0].startsWith('invigil.resume.')")
    assert student.errors == [], student.errors


async def tab_to(page: Any, selector: str, limit: int = 40) -> None:
    """Press Tab until `selector` has the focus: proves it is reachable by keyboard."""
    for _ in range(limit):
        if await page.evaluate("(selector) => document.activeElement?.matches(selector) ?? false", selector):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{selector} is not reachable with Tab")


async def bitrates_seen(page: Any) -> list[list[int | None]]:
    return await page.evaluate("window.__maxBitrates")


async def test_the_desk_steps_in_by_keyboard_and_the_student_sees_it(server: Any, page_factory: Any) -> None:
    organiser = await page_factory(locale="en-GB", viewport={"width": 1200, "height": 900})
    links = await create_exam(organiser, server.creator_link)
    await organiser.click("#actions-heading + .actions [data-action=add-surveillant]")
    await organiser.wait_for_selector(".link-row:nth-child(4) .link-input", timeout=TIMEOUT_MS)
    second_link = await organiser.input_value(".link-row:nth-child(4) .link-input")

    first = await page_factory(locale="en-GB", viewport={"width": 1300, "height": 900})
    await surveillant_starts(first, links["surveillant"], "Mevr. Jansen")
    student = await page_factory(locale="en-GB")
    await student.context.add_init_script(QUALITY_SPY)
    await student_joins(student, links["student"], "Sanne")
    await first.wait_for_selector(".tile[data-student]", timeout=TIMEOUT_MS)
    await eventually(lambda: tile_plays(first), timeout=30.0)

    # Focus by keyboard: the large view opens and the student is asked for full quality.
    await first.focus("#desk-heading")
    await tab_to(first, ".tile .open")
    await first.keyboard.press("Enter")
    await visible(first, "#focus-dialog")
    await eventually(lambda: _asked_for(student, 500_000))

    # A ready-made message, sent by keyboard, reaches the student and is confirmed on the desk.
    await tab_to(first, "[data-preset='desk.preset.show_desk']")
    await first.keyboard.press("Enter")
    await first.wait_for_selector("#message-result[data-kind=ok]:not(:empty)", timeout=TIMEOUT_MS)
    await student.wait_for_selector("#message-list li", timeout=TIMEOUT_MS)
    assert "Please show your desk." in await student.inner_text("#message-list")

    # Push-to-talk with the space bar: the student is told while it is held, and after it is not.
    await tab_to(first, "#talk-hold")
    await first.keyboard.down(" ")
    await first.wait_for_selector("#talk-result[data-kind=ok]:not(:empty)", timeout=TIMEOUT_MS)
    await eventually(lambda: _text(student, "#talking"))
    assert "Mevr. Jansen" in await student.inner_text("#talking")
    await first.keyboard.up(" ")
    await eventually(lambda: _no_text(student, "#talking"))

    # Escape closes the large view; the student goes back to thumbnail quality.
    await first.keyboard.press("Escape")
    await first.wait_for_selector("#focus-dialog", state="hidden", timeout=TIMEOUT_MS)
    await eventually(lambda: _asked_for(student, 150_000, last=True))

    # A second surveillant arrives; the first hands the student over, by keyboard.
    second = await page_factory(locale="en-GB", viewport={"width": 1300, "height": 900})
    await surveillant_starts(second, second_link, "Dhr. Bakker")
    await first.wait_for_selector("#handover-to option[value]:not([value=''])", state="attached", timeout=TIMEOUT_MS)
    await first.focus("#desk-heading")
    await tab_to(first, ".tile .open")
    await first.keyboard.press("Enter")
    await tab_to(first, "#handover-form button")
    await first.keyboard.press("Enter")
    await first.wait_for_selector(".tile", state="detached", timeout=TIMEOUT_MS)
    await second.wait_for_selector(".tile[data-student]", timeout=TIMEOUT_MS)
    await eventually(lambda: tile_plays(second), timeout=30.0)

    # The student raises a hand: an alert on the new desk that leads to the tile.
    await student.click("#hand-button")
    await second.wait_for_selector("#alert-list .alert-entry", timeout=TIMEOUT_MS)
    assert "Sanne" in await second.inner_text("#alert-list")
    await second.click("#alert-list .alert-entry")
    assert await second.evaluate("document.activeElement?.matches('.tile .open') ?? false")

    # An incident note stays in the page and downloads as plain text, nothing else attached.
    await second.keyboard.press("Enter")
    await tab_to(second, "#incident-note")
    await second.keyboard.type("Looked away from the screen for a minute.")
    await tab_to(second, "#incident-form button")
    await second.keyboard.press("Enter")
    await second.wait_for_selector("#incident-result[data-kind=ok]:not(:empty)", timeout=TIMEOUT_MS)
    assert "Looked away" in await second.inner_text("#incident-list")
    await second.keyboard.press("Escape")
    await second.wait_for_selector("#focus-dialog", state="hidden", timeout=TIMEOUT_MS)
    await tab_to(second, "#incidents-download")
    async with second.expect_download() as download_info:
        await second.keyboard.press("Enter")
    download = await download_info.value
    assert download.suggested_filename.endswith(".txt")
    text = Path(await download.path()).read_text(encoding="utf-8")
    assert "Sanne: Looked away from the screen for a minute." in text

    # Ending the session needs a reason, which the student then reads.
    await second.focus("#desk-heading")
    await tab_to(second, ".tile .open")
    await second.keyboard.press("Enter")
    await tab_to(second, "#end-open")
    await second.keyboard.press("Enter")
    await visible(second, "#end-dialog")
    await tab_to(second, "#end-confirm")
    await second.keyboard.press("Enter")  # the reason is empty: asked again, nothing sent
    assert await second.inner_text("#end-reason-error")
    assert await student.is_hidden("#step-ended")
    await second.fill("#end-reason", "Your phone was on the desk.")
    await second.click("#end-confirm")
    await visible(student, "#step-ended")
    assert "Your phone was on the desk." in await student.inner_text("#ended-reason")
    await second.wait_for_selector(".tile", state="detached", timeout=TIMEOUT_MS)

    for page in (organiser, first, second, student):
        assert page.errors == [], page.errors


async def _asked_for(page: Any, bitrate: int, last: bool = False) -> bool:
    seen = await bitrates_seen(page)
    if last:
        # Each quality change sets the webcam and then the screen sender: look at that pair.
        return bool(seen) and any(bitrate in entry for entry in seen[-2:])
    return any(bitrate in entry for entry in seen)


async def _text(page: Any, selector: str) -> bool:
    return bool((await page.inner_text(selector)).strip())


async def _no_text(page: Any, selector: str) -> bool:
    return not await _text(page, selector)


async def video_plays(page: Any, selector: str) -> bool:
    return await page.eval_on_selector(selector, "video => video.videoWidth > 0 && video.currentTime > 0.5")


async def test_an_oral_exam_is_face_to_face_one_student_after_another(server: Any, page_factory: Any) -> None:
    organiser = await page_factory(locale="en-GB", viewport={"width": 1200, "height": 900})
    links = await create_exam(organiser, server.creator_link, kind="oral")
    examiner = await page_factory(locale="en-GB", viewport={"width": 1300, "height": 900})
    await surveillant_starts_oral(examiner, links["surveillant"])

    first = await page_factory(locale="en-GB")
    await student_joins(first, links["student"], "Eva")
    await examiner.wait_for_selector("#student-view:not([hidden])", timeout=TIMEOUT_MS)
    assert await examiner.inner_text("#focus-name") == "Eva"
    second = await page_factory(locale="en-GB")
    await student_joins(second, links["student"], "Finn")
    await organiser.wait_for_selector('#queue-length[data-count="1"]', timeout=TIMEOUT_MS)

    # Face to face: the examiner sees the student large, the student sees and hears the examiner.
    await eventually(lambda: video_plays(examiner, "#focus-webcam"), timeout=30.0)
    await visible(first, "#examiner-card")
    await eventually(lambda: video_plays(first, "#examiner-video"), timeout=30.0)
    assert "Examinator" in await first.inner_text("#talking")

    # "Next student" asks first, then closes this conversation and the queue moves up.
    await examiner.click("#oral-next")
    await visible(examiner, "#end-dialog")
    assert await examiner.input_value("#end-reason"), "a kind default reason is offered"
    await examiner.click("#end-confirm")
    await visible(first, "#step-ended")
    await examiner.wait_for_selector("#focus-name:text-is('Finn')", timeout=TIMEOUT_MS)
    await organiser.wait_for_selector('#queue-length[data-count="0"]', timeout=TIMEOUT_MS)
    await visible(second, "#examiner-card")
    await eventually(lambda: video_plays(examiner, "#focus-webcam"), timeout=30.0)

    for page in (organiser, examiner, first, second):
        assert page.errors == [], page.errors


async def surveillant_starts_oral(page: Any, link: str) -> None:
    await page.goto(link)
    await visible(page, "#start")
    await page.fill("#display-name", "Examinator")
    await page.check("#conduct-agree")
    await page.click("#start-form button[type=submit]")
    await visible(page, "#oral")
    await page.wait_for_selector("#self-video", state="visible", timeout=TIMEOUT_MS)
