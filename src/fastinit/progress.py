"""A progress counter for the command line (`label: 3/12 what`): one line redrawn in place on
a terminal, a line every few seconds in a log."""
from __future__ import annotations

import time
from typing import Optional, TextIO


class Progress:
    """Counts `total` steps on `out`: on a terminal one line redrawn at most every `interval`
    seconds, elsewhere (a pipe, a log) one line at most every `log_interval` seconds.

    Args:
        label: what is being counted, printed first.
        total: the number of steps.
        out: the stream (usually sys.stderr); None prints nothing.
        interval: the least time between two redraws on a terminal, in seconds.
        log_interval: the least time between two lines elsewhere, in seconds.
    """

    def __init__(self, label: str, total: int, out: Optional[TextIO], interval: float = 0.25,
                 log_interval: float = 2.0):
        self.label, self.total, self.out = label, total, out
        self.tty = out is not None and out.isatty()
        self.interval = interval if self.tty else log_interval
        self.done = 0
        self._last_draw = -float("inf")
        self._width = 0

    def step(self, what: str = "") -> None:
        """Count one step done; `what` names the step that comes next (or the one just done)."""
        self.done += 1
        now = time.perf_counter()
        if self.out is not None and (now - self._last_draw >= self.interval
                                     or self.done == self.total):
            self._last_draw = now
            line = f"  {self.label}: {self.done}/{self.total} {what}".rstrip()
            if self.tty:
                self.out.write("\r" + line.ljust(self._width))
                self._width = len(line)
            else:
                self.out.write(line + "\n")
            self.out.flush()

    def close(self) -> None:
        """End the line (the next output starts on a fresh one)."""
        if self.out is not None and self._width:
            self.out.write("\n")
            self.out.flush()
            self._width = 0
