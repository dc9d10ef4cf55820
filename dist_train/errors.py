"""User-facing errors.

Everything a user can get wrong (a config key, a file, a value, a missing optional package) raises `UsageError`
with one line that names the thing, the bad value and what would be valid. The CLI prints that line and exits 2
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import reprlib

USAGE_EXIT_CODE = 2
RUN_ERROR_EXIT_CODE = 1
# Characters of a bad value an error line repeats: enough to recognise it, never the whole of a huge value.
SHOWN_CHARS = 200


class UsageError(Exception):
    """A mistake in what the user asked for, reported as one line, exit code 2."""


def closest(word, choices) -> str:
    """' (did you mean X?)' for the nearest choice, or '' when nothing is close."""
    if not isinstance(word, (str, int, float)) or len(str(word)) > 100:
        return ""  # difflib is quadratic in the length: a long value is not a typo of a short name
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


class _Shortened(reprlib.Repr):
    def __init__(self, limit: int):
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple, self.maxset = 3, 8, 8, 8, 8
        self.maxstring = self.maxlong = self.maxother = limit

    def repr_int(self, x, level):
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than Python converts to text
            return f"<integer of {x.bit_length()} bits>"


def shown(value, limit: int = SHOWN_CHARS) -> str:
    """A value as an error line repeats it: its repr (newlines escaped), at most `limit` characters, built without
    ever rendering the whole of a huge value."""
    text = _Shortened(limit).repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_text(name, limit: int = 100) -> str:
    """A config key (or a file name) as a message names it: as written when it is plain printable text, else
    shortened and quoted."""
    if isinstance(name, str) and name and name.isprintable() and len(name) <= limit:
        return name
    return shown(name, limit)


def one_line(text: str, limit: int = SHOWN_CHARS) -> str:
    """Text from elsewhere (an exception's message) fit for one error line: whitespace runs collapsed, shortened."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_of(choices) -> str:
    return ", ".join(str(c) for c in choices)


class RunError(Exception):
    """A run that cannot go on for a reason that is not a bug (a non-finite loss under `train.on_nan: stop`, a
    checkpoint that cannot be written): one line, exit code 1, no traceback."""
