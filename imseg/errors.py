"""Errors a user can cause by what they pass in; the CLI prints them as one line and exits 2."""


class UserError(ValueError):
    """Base of every error that is the user's input, not a bug in imseg."""


class ConfigError(UserError):
    """A config file, classes file or command-line value is wrong; the message names file and key."""


class DataError(UserError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


class TrainingStopped(Exception):
    """Training cannot go on (e.g. a non-finite loss); the message says where it happened. Exit status 1."""
