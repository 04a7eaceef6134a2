"""Server configuration: what `invigil serve` was started with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .turn_credentials import TurnRest


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as handed to browsers and to aiortc."""

    urls: str
    username: str | None = None
    credential: str | None = None

    def to_browser(self) -> dict[str, str]:
        """The RTCIceServer dictionary a browser expects."""
        entry = {"urls": self.urls}
        if self.username is not None:
            entry["username"] = self.username
        if self.credential is not None:
            entry["credential"] = self.credential
        return entry


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to know at start; nothing here is secret but `secret` and `turn`'s."""

    secret: bytes
    public_url: str = "http://127.0.0.1:8080"
    default_cap: int = 8
    ice_servers: tuple[IceServer, ...] = field(default_factory=tuple)
    turn: TurnRest | None = None
    """TURN servers each participant gets short-lived credentials for (sfu/turn_credentials.py)."""
    surveillant_grace_seconds: float = 20.0
    student_grace_seconds: float = 20.0
    student_media_seconds: float = 60.0
    """How long a placed student may hold a surveillant's place before their media is up."""
    media_port: int | None = None
    """The one UDP port all media uses (one socket per host address), or None: a port per peer."""
    creator_link_days: int = 30
    media_mode: str = "forward"
    """"forward" (the product) or "transcode" (aiortc's decode/re-encode relay, a benchmark baseline)."""
