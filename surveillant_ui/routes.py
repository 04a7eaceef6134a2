"""Routes of the surveillant's desk (`/desk/`) and the organiser's page (`/organise/`).

Each page is one index.html plus its module and stylesheet under `/static/`; the
shared modules (`/common/…`) are served by the core. The token stays in the URL
fragment, so these routes never see it.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

STATIC_ROOT = Path(__file__).parent / "static"

# The pages run no inline script or style and load nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(), geolocation=()",
}


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # The page itself must never come from a cache shared with someone else.
    if request.path.endswith("/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _page_app(page: str) -> web.Application:
    root = STATIC_ROOT / page
    index_file = root / "index.html"

    async def index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(index_file)

    app = web.Application(middlewares=[_security_headers])
    app.router.add_get("/", index, name="index")
    app.router.add_static("/static/", root, name="static", append_version=False)
    return app


def desk_app() -> web.Application:
    """The surveillant's desk; mounted at `/desk/`."""
    return _page_app("desk")


def organise_app() -> web.Application:
    """The organiser's page; mounted at `/organise/`."""
    return _page_app("organise")
