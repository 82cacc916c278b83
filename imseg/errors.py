"""Errors a user can cause by what they pass in; the CLI prints them as one line and exits 2."""

import difflib


def did_you_mean(word, candidates):
    """` (did you mean 'x'?)` for the candidate closest to `word` (same letters in another case count), or ""."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    if not close:
        close = [c for c in map(str, candidates) if c.lower() == str(word).lower()]
    return f" (did you mean '{close[0]}'?)" if close else ""


class UserError(ValueError):
    """Base of every error that is the user's input, not a bug in imseg."""


class ConfigError(UserError):
    """A config file, classes file or command-line value is wrong; the message names file and key."""


class DataError(UserError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


class TrainingStopped(Exception):
    """Training cannot go on (e.g. a non-finite loss); the message says where it happened. Exit status 1."""
