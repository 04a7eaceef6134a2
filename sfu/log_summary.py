"""Counted log lines for failures that strangers can cause at will.

A malformed STUN datagram or HTTP request costs an attacker a few bytes; a log line
for each would let anyone fill the disk and bury what matters. A LogSummary logs the
first such failure at once, then counts the rest and writes one line per interval
with the counts per kind. A kind names the failure (an exception type and where it
was raised), never what the client sent nor who sent it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

SUMMARY_SECONDS = 60.0
MAX_KINDS = 8
"""Kinds told apart in one summary; the rest are counted as "other" (the table stays small)."""


class LogSummary:
    """Logs `what` at most once per `interval` seconds, with counts per kind since the last line.

    Quiet until the first failure, which is logged at once; the failures after it are
    summarised when the interval ends (on a timer while an event loop runs, else at
    the next failure). An interval with no failures ends the summary until the next one.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        interval: float = SUMMARY_SECONDS,
        level: int = logging.WARNING,
    ) -> None:
        self.logger = logger
        self.what = what
        self.interval = interval
        self.level = level
        self.total = 0
        """Failures counted since this summary was made (for tests and metrics)."""
        self._counts: Counter[str] = Counter()
        self._window_end: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def count(self, kind: str) -> None:
        """Count one failure of `kind` (an exception type and a place, never client data)."""
        self.total += 1
        now = time.monotonic()
        if self._window_end is not None and _running_loop() is not self._loop:
            # The timer was set on a loop that is gone (or none): write what it counted, start afresh.
            self.close()
        elif self._window_end is not None and now >= self._window_end:
            self.flush()
        if self._window_end is None:
            self.logger.log(
                self.level,
                "%s: %s (more are counted, one line per %.0f s)",
                self.what,
                kind,
                self.interval,
            )
            self._start_window(now)
            return
        if kind not in self._counts and len(self._counts) >= MAX_KINDS:
            kind = "other"
        self._counts[kind] += 1

    def flush(self) -> None:
        """Log what was counted since the last line, if anything, and start a new interval."""
        self._cancel_timer()
        if not self._counts:
            self._window_end = None
            return
        kinds = "; ".join(f"{kind} ×{number}" for kind, number in self._counts.most_common())
        self.logger.log(
            self.level,
            "%s: %d more in the last %.0f s (%s)",
            self.what,
            sum(self._counts.values()),
            self.interval,
            kinds,
        )
        self._counts.clear()
        self._start_window(time.monotonic())

    def close(self) -> None:
        """Log what is left and stop the timer."""
        self.flush()
        self._cancel_timer()
        self._window_end = None

    def _start_window(self, now: float) -> None:
        self._window_end = now + self.interval
        self._loop = _running_loop()
        if self._loop is not None:  # else the next failure after the interval logs the summary
            self._timer = self._loop.call_later(self.interval, self.flush)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
