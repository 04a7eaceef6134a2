"""The surveillant's desk and the organiser's page: static pages served by two aiohttp sub-applications."""

from .routes import desk_app, organise_app

__all__ = ["desk_app", "organise_app"]
