"""What the command-line tools share: their option parser, number checks, and one runner for every `main()`.

The runner gives every tool the same contract: a user's mistake (`UserError`) is one line on stderr and exit
status 2; training that cannot go on (`TrainingStopped`) is one line and exit status 1; SIGTERM or Ctrl-C is
one line and 128 + the signal's number. Anything else is a bug and keeps its traceback.
"""

import argparse
import errno
import signal
import sys

from imseg.errors import TrainingStopped, UserError
from imseg.signals import Interrupted, StopSignals


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors look like imseg's other input errors (one line, exit status 2), and whose
    long options are accepted in both spellings: `--data-path` and the AIR ImSeg `--data_path`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def add_argument(self, *names, **kwargs):
        longs = [n for n in names if n.startswith("--")]
        if longs and "dest" not in kwargs and kwargs.get("action") not in ("version", "help"):
            kwargs["dest"] = longs[0][2:].replace("-", "_")
        aliases = [n[:2] + n[2:].replace("-", "_") for n in longs] + [n[:2] + n[2:].replace("_", "-") for n in longs]
        return super().add_argument(*names, *[a for a in dict.fromkeys(aliases) if a not in names], **kwargs)


def integer(minimum):
    """An argparse type: an integer >= `minimum`, refused in the words imseg's other checks use."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def number(low, high):
    """An argparse type: a number in [low, high]."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number between {low} and {high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a number between {low} and {high}, got {value:g}")
        return value

    return parse


def log(message):
    """What the tools say while they work: one line on stderr, at once."""
    print(message, file=sys.stderr, flush=True)


def run(prog, work, stop_signals=False, stopped_hint=""):
    """Run `work()` (or `work(signals)` with `stop_signals`) as the tool `prog`; returns the exit status.

    With `stop_signals`, SIGTERM and SIGINT are recorded while training runs and stop it at the end of
    the current step (see `imseg.signals`); `stopped_hint` is added to the message that reports them.
    """
    signals = StopSignals()
    if stop_signals:
        signals.install()
    try:
        status = work(signals) if stop_signals else work()
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"{prog}: error: no space left on the device{where}; free some and run the same command again (what "
              "was finished is kept, the rest is done then)", file=sys.stderr)  # fmt: skip
        return 2
    except TrainingStopped as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"{prog}: stopped by {signal.Signals(signum).name}{stopped_hint}", file=sys.stderr)
        return 128 + signum
    finally:
        if stop_signals:
            signals.uninstall()
    return status or 0
