"""HTTP security headers on every response: own origin only, no referrer, device access per page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

# Own origin only. Live video plays through `srcObject`, which no CSP directive governs,
# so media-src needs neither blob: nor mediastream:; the pages use no data: images.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

PERMISSIONS_BY_PAGE = {
    "/join/": "camera=(self), microphone=(self), display-capture=(self)",
    "/desk/": "camera=(self), microphone=(self), display-capture=()",
}
NO_DEVICES = "camera=(), microphone=(), display-capture=()"


def permissions_for(path: str) -> str:
    """Device permissions: the student page may use camera, mic and screen; the desk camera and mic."""
    for prefix, policy in PERMISSIONS_BY_PAGE.items():
        if path.startswith(prefix):
            return policy
    return NO_DEVICES


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Add the headers to every response, errors included."""
    try:
        response = await handler(request)
    except web.HTTPException as error:
        response = error
        _decorate(request, response)
        raise
    _decorate(request, response)
    return response


def _decorate(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:
        return
    headers = response.headers
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["Referrer-Policy"] = "no-referrer"
    headers["Permissions-Policy"] = permissions_for(request.path)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cache-Control"] = "no-store"
