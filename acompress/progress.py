"""Progress with rate and ETA for long loops, through absl.logging.

A bar is rewritten in place on an interactive terminal; otherwise (CI, log files)
one line is logged at most every `min_interval` seconds, so logs stay short.
"""

import sys
import time
from typing import Optional

from absl import logging


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """Counts finished items of a known total and reports done/total, rate and ETA.

    Usage:
      bar = Progress(total=500, label="children")
      for ...:
        ...
        bar.update(1, extra="acc 0.97")
      bar.close()
    """

    def __init__(self, total: int, label: str, unit: str = "it", min_interval: float = 5.0,
                 stream=None, start: int = 0):
        self.total = total
        self.label = label
        self.unit = unit
        self.min_interval = min_interval
        self.done = start
        self._start_count = start
        self._stream = stream if stream is not None else sys.stderr
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._t0 = time.monotonic()
        self._last = -float("inf")

    @property
    def rate(self) -> float:
        """Items per second since the bar started (items done before it are not counted)."""
        elapsed = time.monotonic() - self._t0
        return (self.done - self._start_count) / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> Optional[float]:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self, extra: str = "") -> str:
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        eta = self.eta_seconds()
        text = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{self.rate * 60:.1f} {self.unit}/min elapsed {format_seconds(time.monotonic() - self._t0)} "
                f"ETA {format_seconds(eta) if eta is not None else '--:--'}")
        return f"{text} {extra}".rstrip()

    def update(self, count: int = 1, extra: str = "") -> None:
        self.done += count
        now = time.monotonic()
        if self.done < self.total and now - self._last < self.min_interval and not self._tty:
            return
        self._last = now
        if self._tty:
            self._stream.write("\r" + self.line(extra))
            self._stream.flush()
        else:
            logging.info("%s", self.line(extra))

    def close(self, extra: str = "") -> None:
        if self._tty:
            self._stream.write("\r" + self.line(extra) + "\n")
            self._stream.flush()
        logging.info("%s done: %d %s in %s", self.label, self.done - self._start_count, self.unit,
                     format_seconds(time.monotonic() - self._t0))
