"""Through the real server: numbers out of range and failing handlers get an error, never a closed socket."""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import pytest

from sfu.registry import ExamRegistry
from tests.peers import Client
from tests.test_sfu_forwarding import token


def create_exam_request(ends_at: Any) -> dict[str, Any]:
    return {
        "type": "create_exam", "title": "Wiskunde B", "kind": "written", "cap": 8, "note": "",
        "contact": "exams@example.org", "ends_at": ends_at, "id_check": False,
    }


async def test_an_end_at_2_to_the_53_is_invalid_and_the_socket_stays_usable(server: Any) -> None:
    """It used to pass the schema and crash `sign`, closing the organiser's socket without a word."""
    async with aiohttp.ClientSession() as session:
        organiser = Client(session, server.url)
        assert (await organiser.connect(token(server.creator_link)))["type"] == "welcome"
        for ends_at in (2**53, 2**53 - 1, int(time.time()) + 40 * 24 * 3600, int(time.time()) - 60):
            refused = await organiser.request(create_exam_request(ends_at))
            assert refused["type"] == "error" and refused["code"] == "invalid", (ends_at, refused)
            assert set(refused["message"]) == {"nl", "en"}
        created = await organiser.request(create_exam_request(int(time.time()) + 3600))
        assert created["type"] == "exam_created", created
        assert organiser.closed_code is None
        await organiser.close()


async def test_a_failing_handler_answers_internal_and_keeps_the_socket(
    server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a handler is answered with `internal` (not a silent close), and the log says where
    it failed but never the exception's message, which may quote what the client sent."""
    async with aiohttp.ClientSession() as session:
        organiser = Client(session, server.url)
        assert (await organiser.connect(token(server.creator_link)))["type"] == "welcome"
        created = await organiser.request(create_exam_request(int(time.time()) + 3600))
        exam_organiser = Client(session, server.url)
        assert (await exam_organiser.connect(token(created["organiser_link"])))["type"] == "welcome"

        def broken(self: ExamRegistry, settings: Any) -> str:
            raise RuntimeError("Geheime Naam")

        with monkeypatch.context() as patched:
            patched.setattr(ExamRegistry, "new_surveillant_link", broken)
            with caplog.at_level(logging.INFO):
                failed = await exam_organiser.request({"type": "add_surveillant"})
        assert failed["type"] == "error" and failed["code"] == "internal", failed
        assert set(failed["message"]) == {"nl", "en"}
        assert "Geheime" not in caplog.text
        assert "add_surveillant failed: RuntimeError at test_handler_errors.py" in caplog.text

        again = await exam_organiser.request({"type": "add_surveillant"})
        assert again["type"] == "surveillant_link", again
        assert exam_organiser.closed_code is None
        for client in (organiser, exam_organiser):
            await client.close()
