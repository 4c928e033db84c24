"""The progress of an evaluation over its cells, with the running mean accuracy (`CellProgress`)."""

import sys
import time

import numpy as np


class CellProgress:
    """Progress over the cells of an evaluation, with the running mean accuracy.

    On a terminal, one line redrawn in place (`\\r`): cells done, the mean
    accuracy over the corruption cells so far (of every adaptation mode), the
    last cell and the time left. Elsewhere (a log file, a pipe), one line per
    corruption once its last severity is scored, and no `\\r`. The clean
    accuracy is shown on its own and left out of the mean. Cells reused from
    an interrupted evaluation count as done but not in the time left, which
    is estimated from the cells scored in this session.

    Args:
      total: number of updates expected (the cells, plus one for the clean set).
      stream: where to write (default: sys.stdout at each write).
      interactive: force the terminal (True) or line (False) form; None: the
        stream's `isatty()`.
    """

    def __init__(self, total, stream=None, interactive=None):
        self.total = int(total)
        self._stream = stream
        self.interactive = self._isatty() if interactive is None else bool(interactive)
        self.done = 0
        self.reused = 0
        self.clean = {}
        self.sums = {}
        self.counts = {}
        self._corruption = {}  # mode -> accuracies of the current corruption's severities
        self._start = time.time()
        self._width = 0

    @property
    def stream(self):
        return self._stream or sys.stdout

    def _isatty(self):
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def mean(self, mode=None):
        """Running mean accuracy over the corruption cells so far (the first mode's by default)."""
        mode = mode or next(iter(self.sums), None)
        return self.sums[mode] / self.counts[mode] if self.counts.get(mode) else None

    def _means(self):
        parts = [f"{m} {100 * self.mean(m):.1f}%" for m in self.sums if self.counts[m]]
        if len(parts) == 1:
            return "mean accuracy " + parts[0].split(" ", 1)[1]
        return "mean accuracy " + ", ".join(parts)

    def _elapsed(self):
        elapsed = time.time() - self._start
        scored = self.done - self.reused
        if not scored or self.done >= self.total:
            return f"{elapsed:.0f}s"
        left = elapsed / scored * (self.total - self.done)
        return f"{elapsed:.0f}s, ~{left:.0f}s left"

    def _write(self, text, end="\n"):
        self.stream.write(text + end)
        self.stream.flush()

    def add_clean(self, accuracies, reused=False):
        """The clean set scored: {mode: accuracy}; `reused` from an interrupted evaluation."""
        self.done += 1
        self.reused += bool(reused)
        self.clean = dict(accuracies)
        shown = ", ".join(f"{m} {100 * a:.1f}%" for m, a in self.clean.items())
        if len(self.clean) == 1:
            shown = f"{100 * next(iter(self.clean.values())):.1f}%"
        self._show(f"clean accuracy {shown}", line=True)

    def add_cell(self, corruption, severity, accuracies, last_of_corruption, reused=False):
        """One cell scored: {mode: accuracy}; `last_of_corruption` after its last severity.

        Args:
          corruption, severity: the cell.
          accuracies: {mode: accuracy}.
          last_of_corruption: the corruption's last severity.
          reused: the cell was scored by an interrupted evaluation, not now.
        """
        self.done += 1
        self.reused += bool(reused)
        for mode, accuracy in accuracies.items():
            self.sums[mode] = self.sums.get(mode, 0.0) + float(accuracy)
            self.counts[mode] = self.counts.get(mode, 0) + 1
            self._corruption.setdefault(mode, []).append(float(accuracy))
        first = next(iter(accuracies.values()))
        if self.interactive:
            self._show(f"{corruption} s{severity}: {100 * first:.1f}%")
        elif last_of_corruption:
            values = self._corruption[next(iter(self._corruption))]
            self._show(f"{corruption}: {100 * np.mean(values):.1f}% over {len(values)} severities", line=True)
        if last_of_corruption:
            self._corruption = {}

    def _show(self, what, line=False):
        text = f"[{self.done}/{self.total} cells] {what}"
        if self.counts:
            text += f"; running {self._means()}"
        text += f" ({self._elapsed()})"
        if not self.interactive:
            if line:
                self._write(text)
            return
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._write("\r" + text + padding, end="\n" if self.done >= self.total else "")

    def finish(self):
        """The closing line (always a whole line): the mean over all cells and the time."""
        if self.interactive and self.done < self.total:
            self._write("")
        if self.counts:
            clean = ""
            if self.clean:
                clean = "; clean " + ", ".join(f"{m} {100 * a:.1f}%" for m, a in self.clean.items())
                if len(self.clean) == 1:
                    clean = f"; clean {100 * next(iter(self.clean.values())):.1f}%"
            count = next(iter(self.counts.values()))
            self._write(f"scored {count} cells: {self._means()}{clean} ({time.time() - self._start:.0f}s)")
