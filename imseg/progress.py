"""A dependency-free progress bar on stderr for the command-line tools (one line per 10 % when not a terminal)."""

import sys
import time


class Progress:
    """Call with the number done (and optionally the total) to show `label: n/total unit, rate, ETA`."""

    def __init__(self, label, total=None, unit="items", stream=None):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.last_decile = -1

    def __call__(self, done, total=None):
        total = self.total = total or self.total
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        line = f"{self.label}: {done}/{total} {self.unit}, {rate:.1f}/s, {elapsed:.0f}s elapsed, ETA {eta:.0f}s"
        if self.tty:
            bar = "#" * (20 * done // max(total, 1))
            self.stream.write(f"\r[{bar:<20}] {line}" + ("\n" if done == total else ""))
        elif 10 * done // max(total, 1) != self.last_decile:
            self.last_decile = 10 * done // max(total, 1)
            self.stream.write(line + "\n")
        self.stream.flush()


def progress(items, label, unit="items", total=None, stream=None):
    """Yield from `items` while reporting progress (`total` defaults to len(items))."""
    report = Progress(label, len(items) if total is None else total, unit, stream)
    for i, item in enumerate(items, start=1):
        yield item
        report(i)


def say(message):
    """What the library says while it works, when its caller gives no `log`: one line on stderr, at once."""
    print(message, file=sys.stderr, flush=True)
