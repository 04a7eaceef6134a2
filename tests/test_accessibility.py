"""An automated accessibility check (axe-core, WCAG 2.1 A and AA) of every page in its main states.

axe-core is vendored in tests/fixtures (see the README there). It goes into the page
through the DevTools protocol (`page.evaluate`), which the product's Content-Security-Policy
does not govern, so the pages are checked with their real, strict CSP in force: no
`bypass_csp`, and any CSP violation would show up in `page.errors`.

Every state is checked before the test fails, so one run lists everything: a serious or
critical violation fails the test, moderate and minor ones are printed (run with -s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.test_organiser_flow import (
    TIMEOUT_MS,
    create_exam as create_exam_in_page,
    student_joins,
    surveillant_starts_oral,
    visible,
)
from tests.test_student_page import create_exam, desk_with_media, session, student_page  # noqa: F401 (session: a fixture)

pytestmark = pytest.mark.browser

AXE_SOURCE = (Path(__file__).resolve().parent / "fixtures" / "axe.min.js").read_text(encoding="utf-8")
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}

# Colours are judged at rest: wait for transitions and finite animations (a button just
# enabled, a message sliding in) to end; endless ones (the live dot) are left running.
SETTLE = """async () => {
  const finite = document.getAnimations().filter((a) => a.effect?.getComputedTiming().endTime !== Infinity);
  const settled = Promise.all(finite.map((a) => a.finished.catch(() => {})));
  await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 3000))]);
}"""

RUN_AXE = """async (tags) => {
  const results = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
  return results.violations.map((violation) => ({
    id: violation.id,
    impact: violation.impact,
    help: violation.help,
    targets: violation.nodes.map((node) => node.target.join(' ')),
  }));
}"""


def describe(violations: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["targets"][:8]) for v in violations
    )


class Audit:
    """axe runs on pages in given states; the serious and critical findings, by state."""

    def __init__(self) -> None:
        self.blocking: list[str] = []

    async def check(self, page: Any, where: str) -> None:
        if not await page.evaluate("typeof window.axe === 'object'"):
            await page.evaluate(AXE_SOURCE)
        await page.evaluate(SETTLE)
        violations = await page.evaluate(RUN_AXE, WCAG_21_AA)
        blocking = [v for v in violations if v["impact"] in BLOCKING]
        others = [v for v in violations if v["impact"] not in BLOCKING]
        if others:
            print(f"\n{where}: moderate or minor\n{describe(others)}")
        if blocking:
            self.blocking.append(f"{where}:\n{describe(blocking)}")

    async def check_after(self, page: Any, click: str, shown: str, where: str) -> None:
        """Click `click`, wait until `shown` is visible, then check."""
        await page.click(click)
        await visible(page, shown)
        await self.check(page, where)

    def assert_clean(self) -> None:
        assert not self.blocking, "serious or critical accessibility violations\n" + "\n".join(self.blocking)


async def test_the_student_page_in_every_step(server: Any, page_factory: Any, session: aiohttp.ClientSession) -> None:
    audit = Audit()
    check = audit.check
    created = await create_exam(session, server, id_check=True)
    page = await student_page(page_factory, locale="nl-NL")
    response = await page.goto(created["student_link"])
    assert "script-src 'self'" in response.headers["content-security-policy"]

    await visible(page, "#step-notice")
    await check(page, "student notice (nl)")
    await page.click("[data-lang=en]")
    await check(page, "student notice (en)")
    await page.click("#confirm-button")  # no name: the error is shown
    await visible(page, "#student-name-error")
    await check(page, "student notice with an error")
    await audit.check_after(page, "#other-way-button", "#step-alternative", "student: another way")
    await page.click("#alternative-back")

    await page.fill("#student-name", "Sanne")
    await page.click("#confirm-button")
    await page.wait_for_selector("#camera-status[data-state=ok]", timeout=TIMEOUT_MS)
    await page.click("#screen-share")
    await page.wait_for_selector("#screen-status[data-state=ok]", timeout=TIMEOUT_MS)
    await page.wait_for_selector("#uplink-status:not([data-state=pending])", timeout=TIMEOUT_MS)
    await check(page, "student device check")

    await page.click("#join-button")
    await page.wait_for_selector("#session-heading:text-is('Waiting for a surveillant')", timeout=TIMEOUT_MS)
    await check(page, "student waiting")

    # A desk with its media connection: the student is live only once their media reaches it.
    desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0])
    await page.wait_for_selector("#session-heading:text-is('Checking your identity')", timeout=TIMEOUT_MS)
    await visible(page, "#live-banner")
    await check(page, "student ID check")

    student = (await desk.wait_for(lambda m: m["type"] == "roster" and m["students"]))["students"][0]
    assert (await desk.request({"type": "admit", "student_id": student["id"]}))["type"] == "ack"
    await page.wait_for_selector("#session-heading:text-is('You are live')", timeout=TIMEOUT_MS)
    await desk.request({"type": "message", "student_id": student["id"], "text": "Hoi Sanne, alles goed?"})
    await page.wait_for_selector("#message-list .message", timeout=TIMEOUT_MS)
    await desk.request({"type": "talk", "student_id": student["id"], "on": True})
    await visible(page, "#talking")
    await page.click("#hand-button")
    await page.wait_for_selector("#hand-status:not(:empty)", timeout=TIMEOUT_MS)
    await check(page, "student live")

    await audit.check_after(page, "#leave-button", "#leave-dialog", "student leave dialog")
    await audit.check_after(page, "#leave-dialog button[value=leave]", "#step-ended", "student ended")

    await desk_media.close()
    await desk.close()
    audit.assert_clean()
    assert page.errors == [], page.errors


async def test_the_desk_and_the_organiser_page_in_every_state(server: Any, page_factory: Any) -> None:
    audit = Audit()
    check = audit.check
    organiser = await page_factory(locale="en-GB", viewport={"width": 1200, "height": 900})
    await organiser.goto(server.creator_link)
    await visible(organiser, "#create")
    await check(organiser, "organiser create form")
    await organiser.click("#create-form button[type=submit]")
    await visible(organiser, "#exam-title-error")
    await check(organiser, "organiser create form with errors")

    await organiser.fill("#exam-title-input", "Geschiedenis 5 vwo")
    await organiser.fill("#contact-input", "examenbureau@school.example")
    await organiser.click("#create-form button[type=submit]")
    await visible(organiser, "#overview")
    await visible(organiser, "#links")
    await organiser.wait_for_selector('#queue-length[data-count="0"]', timeout=TIMEOUT_MS)
    await check(organiser, "organiser links and overview")
    links = await organiser.eval_on_selector_all(".link-input", "inputs => inputs.map((input) => input.value)")
    student_link, surveillant_link = links[1], links[2]

    desk = await page_factory(locale="en-GB", viewport={"width": 1300, "height": 900})
    await desk.goto(surveillant_link)
    await visible(desk, "#start")
    await check(desk, "desk code of conduct")
    await desk.click("#start-form button[type=submit]")
    await desk.wait_for_selector("#conduct-error:not(:empty)", timeout=TIMEOUT_MS)
    await check(desk, "desk code of conduct with errors")
    await desk.fill("#display-name", "Mevr. Jansen")
    await desk.check("#conduct-agree")
    await desk.click("#start-form button[type=submit]")
    await visible(desk, "#desk")
    await check(desk, "desk without students")

    student = await page_factory(locale="en-GB")
    await student_joins(student, student_link, "Sanne")
    await desk.wait_for_selector(".tile[data-student]", timeout=TIMEOUT_MS)
    await visible(desk, ".tile .id-badge")
    await student.click("#hand-button")
    await desk.wait_for_selector("#alert-list .alert-entry", timeout=TIMEOUT_MS)
    await check(desk, "desk with a live student tile")
    await organiser.wait_for_selector("#surveillants-body tr", timeout=TIMEOUT_MS)
    await check(organiser, "organiser overview with a surveillant")

    await desk.click(".tile .open")
    await visible(desk, "#focus-dialog")
    await desk.click("[data-preset='desk.preset.look_camera']")
    await desk.wait_for_selector("#message-result[data-kind=ok]:not(:empty)", timeout=TIMEOUT_MS)
    await check(desk, "desk large view")
    await audit.check_after(desk, "#end-open", "#end-dialog", "desk end-session dialog")
    await desk.click("#end-cancel")
    await desk.keyboard.press("Escape")
    await desk.wait_for_selector("#focus-dialog", state="hidden", timeout=TIMEOUT_MS)

    await audit.check_after(organiser, "#end-exam", "#end-dialog", "organiser end-exam dialog")
    await audit.check_after(organiser, "#end-confirm", "#notice", "organiser exam ended")
    await visible(desk, "#notice")
    await check(desk, "desk exam ended")

    audit.assert_clean()
    for page in (organiser, desk, student):
        assert page.errors == [], page.errors


async def test_the_oral_exam_on_both_sides(server: Any, page_factory: Any) -> None:
    audit = Audit()
    check = audit.check
    organiser = await page_factory(locale="nl-NL", viewport={"width": 1200, "height": 900})
    links = await create_exam_in_page(organiser, server.creator_link, kind="oral")
    examiner = await page_factory(locale="nl-NL", viewport={"width": 1300, "height": 900})
    await surveillant_starts_oral(examiner, links["surveillant"])
    await check(examiner, "oral desk, nobody yet (nl)")

    student = await page_factory(locale="nl-NL")
    await student_joins(student, links["student"], "Eva")
    await examiner.wait_for_selector("#student-view:not([hidden])", timeout=TIMEOUT_MS)
    await visible(student, "#examiner-card")
    await check(examiner, "oral desk with the student (nl)")
    await check(student, "student face to face (nl)")
    await audit.check_after(examiner, "#oral-next", "#end-dialog", "oral desk, next-student dialog (nl)")

    audit.assert_clean()
    for page in (organiser, examiner, student):
        assert page.errors == [], page.errors

