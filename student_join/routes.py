"""The student's page: `GET /` serves the single page, `/static/` its modules and styles,
and `POST /upload-check` swallows a few test bytes so the page can estimate upload speed.

Mounted by the core with `app.add_subapp("/join/", student_app())`; the shared
modules (signalling, i18n, base styles) come from the core at `/common/`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from sfu.rate_limit import UploadLimiter

STATIC = Path(__file__).parent / "static"

UPLOAD_CHECK_MAX_BYTES = 2 * 1024 * 1024
"""Largest body the upload check reads; the page sends at most 1 MiB per request."""
UPLOAD_LIMITER = web.AppKey("upload_limiter", UploadLimiter)
"""Per address a class's worth of checks, then a steady few, and a bound on checks in progress
(sfu/rate_limit.py): more is someone using us as a bandwidth sink."""
UPLOAD_CHECK_TIMEOUT = 15.0
"""A sender slower than ~1 MiB per 15 s is told so by the page's own clock first."""


async def index(request: web.Request) -> web.FileResponse:
    """The page itself; the link token stays in the fragment and never reaches us."""
    return web.FileResponse(STATIC / "index.html")


async def upload_check(request: web.Request) -> web.Response:
    """Read and drop the body (filler bytes, never kept or logged); say how many arrived."""
    limiter = request.app[UPLOAD_LIMITER]
    address = request.remote or ""
    if not limiter.start(address):
        raise web.HTTPTooManyRequests(
            text="Too many upload checks; try again in a moment.", headers={"Retry-After": "1"}
        )
    received = 0
    try:
        async with asyncio.timeout(UPLOAD_CHECK_TIMEOUT):
            while chunk := await request.content.readany():
                received += len(chunk)
                if received > UPLOAD_CHECK_MAX_BYTES:
                    raise web.HTTPRequestEntityTooLarge(
                        max_size=UPLOAD_CHECK_MAX_BYTES, actual_size=received
                    )
    except TimeoutError:
        raise web.HTTPRequestTimeout() from None
    finally:
        limiter.finish(address)
    return web.json_response({"bytes": received})


async def _stop_upload_limiter(app: web.Application) -> None:
    app[UPLOAD_LIMITER].close()


def student_app() -> web.Application:
    """The student sub-application."""
    app = web.Application()
    app[UPLOAD_LIMITER] = UploadLimiter()
    app.on_cleanup.append(_stop_upload_limiter)
    app.router.add_get("/", index)
    app.router.add_post("/upload-check", upload_check)
    app.router.add_static("/static/", STATIC)
    return app
