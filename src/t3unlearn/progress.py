"""Progress bars that also work in logs and CI.

On a terminal, :func:`progress` is a plain ``tqdm`` bar. When standard error is not a terminal
(output piped to a file, a CI log, a notebook's captured stream), a redrawn bar would print
nothing readable until the end; there it prints one plain line per update instead, at most
every :data:`LOG_INTERVAL` seconds, and a last line when the work is done.

``T3UNLEARN_PROGRESS`` overrides the choice: ``bar``, ``log`` or ``off``.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm

LOG_INTERVAL = 15.0  # seconds between two log lines of the same task


class LogProgress(tqdm):
    """A ``tqdm`` that writes whole lines (no carriage returns), for logs: the first, then at most one
    every ``interval`` seconds (postfix updates included), and the last. tqdm's own throttling is off
    (it would adapt to the skipped lines and stop asking); this class keeps the time."""

    _last_line = None
    _printed_n = None
    interval = LOG_INTERVAL

    def display(self, msg=None, pos=None):
        if msg == "":  # tqdm clearing its bar: nothing to clear in a log
            return False
        now = time.monotonic()
        final = self.n == self.total and self._printed_n != self.n
        if self._last_line is not None and now - self._last_line < self.interval and not final:
            return True
        self._last_line, self._printed_n = now, self.n
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        return True

    def close(self):
        if not self.disable and self._printed_n != self.n:
            self._last_line = None
            self.display()  # the final count, whatever the interval
        super().close()


def mode() -> str:
    """``bar``, ``log`` or ``off``: ``$T3UNLEARN_PROGRESS``, else ``bar`` on a terminal and ``log`` elsewhere."""
    forced = os.environ.get("T3UNLEARN_PROGRESS", "").strip().lower()
    if forced in ("bar", "log", "off"):
        return forced
    try:
        return "bar" if sys.stderr.isatty() else "log"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "log"


def progress(iterable=None, *, total=None, desc: str | None = None, unit: str = "it", enabled: bool = True, **kwargs):
    """A progress bar over ``iterable`` (or a manual one with ``total``); see the module doc.

    ``enabled=False`` returns a silent bar with the same interface, so callers never branch.
    """
    how = mode() if enabled else "off"
    kwargs.setdefault("leave", False)
    if how == "log":
        kwargs["leave"] = False
        kwargs.setdefault("ascii", True)
        bar = LogProgress(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=False, ncols=100,
                          mininterval=0, miniters=1, **kwargs)
        bar.interval = LOG_INTERVAL
        return bar
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=how == "off", dynamic_ncols=True, **kwargs)
