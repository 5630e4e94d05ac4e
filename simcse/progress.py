"""Progress bars that suit where they are written: tqdm's bar on a terminal, and where stderr is a file or a pipe
(a log, a job scheduler) a plain line every few percent, since tqdm's redrawn bar is one endless line there."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LINE_EVERY = 0.05  # share of the total between two lines of a log


class LineProgress(tqdm):
    """tqdm that writes its status as a new line each time another ``LINE_EVERY`` of the total is done (and at
    the end), never redrawing one."""

    def __init__(self, *args, **kwargs):
        self.next_line_at = 0
        super().__init__(*args, **kwargs | {"mininterval": 0})  # every update is offered; display picks the lines

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "" or (self.n < self.next_line_at and self.n != self.total):
            return True  # tqdm clearing its line, or too soon after the last one
        step = max(1, int(LINE_EVERY * self.total)) if self.total else 1
        self.next_line_at = (self.n // step + 1) * step
        self.fp.write((msg or str(self)) + "\n")
        self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: tqdm.write's lines (a dev evaluation's) go between the status lines as they are."""


def progress_bar(**kwargs) -> tqdm:
    """``tqdm(**kwargs)`` on a terminal, else a ``LineProgress``."""
    return tqdm(**kwargs) if sys.stderr.isatty() else LineProgress(**kwargs)
