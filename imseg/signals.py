"""SIGTERM and SIGINT for long runs: stop at the end of the current training step, not mid-write."""

import signal


class Interrupted(Exception):
    """A stop signal arrived; `signum` is the signal."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While `active` (during training) a signal is only recorded, for a callback to act on at the end
    of the step; otherwise, and on a second signal, `Interrupted` is raised at once."""

    def __init__(self):
        self.received = None
        self.active = False
        self._previous = {}

    def install(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if not self.active or self.received is not None:
            raise Interrupted(signum)
        self.received = signum
