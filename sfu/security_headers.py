"""HTTP security headers on every response: own origin only, no referrer, device access per page."""

from __future__ import annotations

from collections.abc import MutableMapping

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


SERVER_NAME = "Invigil"
"""The Server header: the product, not the library and its version (aiohttp would name both)."""


async def security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: every response of the app gets the headers, errors and upgrades included."""
    add_security_headers(response.headers, request.path)


def add_security_headers(headers: MutableMapping[str, str], path: str) -> None:
    """The security headers for a response to `path`; also used for the HTTP parser's own errors."""
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["Referrer-Policy"] = "no-referrer"
    headers["Permissions-Policy"] = permissions_for(path)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cache-Control"] = "no-store"
    headers["Server"] = SERVER_NAME
