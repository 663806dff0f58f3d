"""Progress lines for long work (training, simulation, builds), on stderr so stdout stays parseable."""
from __future__ import annotations

import sys
import time


class Progress:
    """`Progress("train")(epoch, epochs, loss=0.31)` prints `[train 3/40] loss=0.31 (12.3s)`.

    Set `quiet=True` to silence it (tests). A line is printed at most every `every` seconds,
    except the last step, which is always printed.
    """

    def __init__(self, stage: str, *, quiet: bool = False, every: float = 0.5, stream=None):
        self.stage = stage
        self.quiet = quiet
        self.every = every
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self._last = -1e9

    def __call__(self, step: int, total: int, **metrics) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if step < total and now - self._last < self.every:
            return
        self._last = now
        parts = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        print(f"[{self.stage} {step}/{total}] {parts} ({now - self.start:.1f}s)", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"[{self.stage}] {text}", file=self.stream, flush=True)
