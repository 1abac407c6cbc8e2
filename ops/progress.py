"""Progress for people waiting on frames: a bar with frames/s and ETA on a terminal, log lines elsewhere.

On a TTY, tqdm draws the bar (its rate and remaining time are the frames/s and ETA). When the
output is a log (a pipe, a file, Dagster's run log), a line every ~10% of the frames or every
10 s, whichever comes first, says the same in words.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

Say = Callable[[str], None]


def format_seconds(seconds: float) -> str:
    """12.3 -> '12.3 s'; 125 -> '2 min 05 s'; 3725 -> '1 h 02 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class FrameProgress:
    """`update(done)` after each frame; `close()` at the end (or use as a context manager)."""

    def __init__(
        self,
        what: str,
        total: int,
        say: Say | None = None,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        every_fraction: float = 0.1,
        every_s: float = 10.0,
    ) -> None:
        self.what, self.total = what, max(int(total), 0)
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        stream = stream or sys.stderr
        self.tty = tty if tty is not None else bool(getattr(stream, "isatty", lambda: False)())
        self.every_fraction, self.every_s = every_fraction, every_s
        self.started = time.perf_counter()
        self.done = 0
        self._last_line_at, self._last_line_done = self.started, 0
        self._bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=what, unit="frame", file=stream, leave=False, smoothing=0.1)
        else:
            self.say(f"{what}: {self.total} frames")

    def rate(self) -> float:
        """Frames per second so far (0 before the first frame)."""
        elapsed = time.perf_counter() - self.started
        return self.done / elapsed if elapsed > 0 and self.done else 0.0

    def line(self) -> str:
        rate = self.rate()
        eta = format_seconds((self.total - self.done) / rate) if rate > 0 else "unknown"
        percent = 100 * self.done / self.total if self.total else 100.0
        return f"{self.what}: {self.done}/{self.total} frames ({percent:.0f}%), {rate:.1f} frames/s, ETA {eta}"

    def update(self, done: int) -> None:
        self.done = done
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            return
        now = time.perf_counter()
        step = max(1, round(self.every_fraction * self.total))
        if done >= self.total or done - self._last_line_done >= step or now - self._last_line_at >= self.every_s:
            self.say(self.line())
            self._last_line_at, self._last_line_done = now, done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> FrameProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
