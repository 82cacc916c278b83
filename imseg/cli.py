"""What the command-line tools share: argument errors as one line on stderr with exit status 2."""

import argparse


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors look like imseg's other input errors: one line, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")
