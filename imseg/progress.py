"""A dependency-free progress bar on stderr for the command-line tools (one line per 10 % when not a terminal)."""

import sys
import time


def progress(items, label, unit="item", stream=None):
    """Yield from `items` (a sized sequence) while showing `label: n/total unit(s), rate, ETA`."""
    stream = stream or sys.stderr
    total = len(items)
    tty = stream.isatty()
    start = time.monotonic()
    last_decile = -1
    for i, item in enumerate(items, start=1):
        yield item
        elapsed = time.monotonic() - start
        rate = i / elapsed if elapsed > 0 else 0.0
        eta = (total - i) / rate if rate > 0 else 0.0
        line = f"{label}: {i}/{total} {unit}s, {rate:.1f}/s, {elapsed:.0f}s elapsed, ETA {eta:.0f}s"
        if tty:
            bar = "#" * (20 * i // max(total, 1))
            stream.write(f"\r[{bar:<20}] {line}" + ("\n" if i == total else ""))
            stream.flush()
        elif (10 * i // max(total, 1)) != last_decile:
            last_decile = 10 * i // max(total, 1)
            stream.write(line + "\n")
            stream.flush()
