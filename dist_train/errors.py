"""User-facing errors.

Everything a user can get wrong (a config key, a file, a value, a missing optional package) raises `UsageError`
with one line that names the thing, the bad value and what would be valid. The CLI prints that line and exits 2
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib

USAGE_EXIT_CODE = 2
RUN_ERROR_EXIT_CODE = 1


class UsageError(Exception):
    """A mistake in what the user asked for, reported as one line, exit code 2."""


def closest(word: str, choices) -> str:
    """' (did you mean X?)' for the nearest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def one_of(choices) -> str:
    return ", ".join(str(c) for c in choices)


class RunError(Exception):
    """A run that cannot go on for a reason that is not a bug (a non-finite loss under `train.on_nan: stop`, a
    checkpoint that cannot be written): one line, exit code 1, no traceback."""
