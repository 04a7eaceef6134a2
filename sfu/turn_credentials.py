"""Short-lived TURN credentials, as coturn's `use-auth-secret` checks them (the TURN REST API).

Invigil and the TURN server share a secret. Each participant gets, in `welcome`,
a username `<expiry unix seconds>:<pseudonym>` and a credential
base64(HMAC-SHA1(secret, username)); the TURN server recomputes the HMAC and
refuses a username whose expiry has passed. No password lives longer than the
credentials it signs, and nobody can make their own without the secret.

The pseudonym is an HMAC of the participant's id under Invigil's own secret: the
TURN server's logs can tell one participant's allocations apart but name nobody,
and the same participant gets the same pseudonym when they reconnect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from .config import IceServer

DEFAULT_TTL_SECONDS = 4 * 3600
"""How long credentials live at least: a long written exam with extra time."""

MAX_TTL_SECONDS = 24 * 3600
"""How long credentials live at most, whatever the exam's end says."""

END_MARGIN_SECONDS = 30 * 60
"""Credentials outlive the exam's planned end by this much: exams overrun."""

PSEUDONYM_BYTES = 8


@dataclass(frozen=True)
class TurnRest:
    """TURN servers that take credentials signed with `secret` (coturn's static-auth-secret)."""

    secret: bytes
    urls: tuple[str, ...]
    ttl_seconds: int = DEFAULT_TTL_SECONDS

    def lifetime(self, now: float, ends_at: float | None) -> int:
        """Seconds the credentials given now live: the TTL, or to the exam's end plus a margin
        if that is later (TURN refuses to refresh an allocation whose credentials expired),
        never more than MAX_TTL_SECONDS."""
        lifetime = self.ttl_seconds
        if ends_at is not None:
            lifetime = max(lifetime, int(ends_at - now) + END_MARGIN_SECONDS)
        return min(lifetime, MAX_TTL_SECONDS)

    def issue(self, holder: str, pseudonym_key: bytes, now: float | None = None, ends_at: float | None = None) -> list[IceServer]:
        """The ICE servers for participant `holder`, with credentials valid from `now` (default: now)."""
        now = time.time() if now is None else now
        pseudonym = hmac.new(pseudonym_key, b"turn:" + holder.encode(), hashlib.sha256).hexdigest()[: 2 * PSEUDONYM_BYTES]
        username = f"{int(now) + self.lifetime(now, ends_at)}:{pseudonym}"
        credential = turn_password(self.secret, username)
        return [IceServer(urls=url, username=username, credential=credential) for url in self.urls]


def turn_password(secret: bytes, username: str) -> str:
    """The TURN REST API password for `username`: base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode("ascii")
