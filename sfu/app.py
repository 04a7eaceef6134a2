"""The aiohttp application: core routes, the signalling socket and the page sub-apps.

Routes: GET / (a landing page: what Invigil is, that a link is needed), /privacy (the
privacy statement), /ws (signalling, works), /healthz, /common/ (shared page modules),
/join/ (student), /desk/ (surveillant), /organise/ (organiser).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .config import ServerConfig
from .rate_limit import JoinLimiter
from .registry import ExamRegistry
from .security_headers import security_headers
from .signalling import websocket_handler

CONFIG = web.AppKey("config", ServerConfig)
REGISTRY = web.AppKey("registry", ExamRegistry)
JOIN_LIMITER = web.AppKey("join_limiter", JoinLimiter)

STATIC = Path(__file__).parent / "static"
LANDING_PAGE = STATIC / "landing" / "index.html"
PRIVACY_STATEMENT = Path(__file__).parent.parent / "PRIVACY.md"


async def healthz(request: web.Request) -> web.Response:
    """Liveness for operators: says nothing about exams."""
    return web.json_response({"ok": True})


async def root(request: web.Request) -> web.FileResponse:
    """The landing page, in Dutch and English: what Invigil is and that a link is needed."""
    return web.FileResponse(LANDING_PAGE, headers={"Content-Type": "text/html; charset=utf-8"})


async def privacy(request: web.Request) -> web.Response:
    """The privacy statement (PRIVACY.md), as plain text."""
    try:
        text = PRIVACY_STATEMENT.read_text(encoding="utf-8")
    except OSError:
        raise web.HTTPNotFound(text="The privacy statement is not installed with this server.") from None
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _exams_lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[REGISTRY].close_all()
    app[JOIN_LIMITER].close()


def make_app(
    config: ServerConfig,
    websocket: Callable[[web.Request], Awaitable[web.StreamResponse]] = websocket_handler,
) -> web.Application:
    """Build the whole Invigil application for `config` (used by `invigil serve` and the tests).

    `websocket` answers GET /ws: the signalling socket, or on the entry of several
    workers the proxy that takes it to its exam's worker (sfu/cluster/entry.py)."""
    app = web.Application(client_max_size=64 * 1024)
    app.on_response_prepare.append(security_headers)
    app[CONFIG] = config
    app[REGISTRY] = ExamRegistry(config)
    app[JOIN_LIMITER] = JoinLimiter()
    app.cleanup_ctx.append(_exams_lifecycle)
    app.router.add_get("/", root)
    app.router.add_get("/privacy", privacy)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/common/", STATIC)
    _add_pages(app)
    return app


def _add_pages(app: web.Application) -> None:
    from student_join.routes import student_app
    from surveillant_ui.routes import desk_app, organise_app

    for page in ("join", "desk", "organise"):
        app.router.add_get(f"/{page}", _redirect_to(f"/{page}/"))
    app.add_subapp("/join/", student_app())
    app.add_subapp("/desk/", desk_app())
    app.add_subapp("/organise/", organise_app())


def _redirect_to(path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def redirect(request: web.Request) -> web.StreamResponse:
        # The browser keeps the link's fragment (the token) across the redirect.
        raise web.HTTPPermanentRedirect(path)

    return redirect


def creator_link(app: web.Application) -> str:
    """The organiser link that may create exams, for `invigil serve` to print."""
    return app[REGISTRY].creator_link()
