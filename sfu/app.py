"""The aiohttp application: core routes, the signalling socket and the page sub-apps."""

from __future__ import annotations

from aiohttp import web

from .config import ServerConfig

CONFIG = web.AppKey("config", ServerConfig)


def make_app(config: ServerConfig) -> web.Application:
    """Build the whole Invigil application for `config` (used by `invigil serve` and the tests)."""
    app = web.Application()
    app[CONFIG] = config
    return app
