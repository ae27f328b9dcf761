"""Rate-limited logging for the data path: a flood of bad packets must not
become a flood of log lines (STYLE.md §2: count every drop, log a summary)."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """At most ``per_interval`` lines every ``interval_s`` seconds; when lines
    were suppressed, the next line that passes says how many."""

    __slots__ = ("log", "interval_s", "per_interval", "_window_start", "_in_window", "_suppressed")

    def __init__(
        self, log: logging.Logger, *, interval_s: float = 5.0, per_interval: int = 5
    ) -> None:
        self.log = log
        self.interval_s = interval_s
        self.per_interval = per_interval
        self._window_start = 0.0
        self._in_window = 0
        self._suppressed = 0

    def __call__(
        self, level: int, msg: str, *args: object, now: float | None = None, exc_info: bool = False
    ) -> bool:
        """Log unless over the limit; returns whether the line was written."""
        now = time.monotonic() if now is None else now
        if now - self._window_start >= self.interval_s:
            self._window_start = now
            self._in_window = 0
        if self._in_window >= self.per_interval:
            self._suppressed += 1
            return False
        self._in_window += 1
        if self._suppressed:
            msg += f" ({self._suppressed} similar lines suppressed)"
            self._suppressed = 0
        self.log.log(level, msg, *args, exc_info=exc_info)
        return True
