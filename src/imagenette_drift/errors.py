"""Expected user errors: what the user passed or has on disk must change, and the message says how.

The `imagenette` command prints a `UserError` as one line and exits 2, without a traceback; any other
exception is a bug and keeps its traceback. Each class also derives from the built-in type the code raised
before (``FileNotFoundError``, ``ValueError``, ``RuntimeError``), so existing ``except`` clauses still hold.
"""

from __future__ import annotations

__all__ = [
    "BadCheckpointError",
    "BadDataError",
    "MissingCheckpointError",
    "MissingDataError",
    "UnreadableImagesError",
    "UserError",
    "one_line",
]


class UserError(Exception):
    """An expected mistake (missing data, a missing or foreign checkpoint, an empty folder), not a bug."""


class MissingDataError(UserError, FileNotFoundError):
    """The data set, a split, a folder or a file the run needs does not exist (or could not be downloaded)."""


class BadDataError(UserError, ValueError):
    """The data exists but cannot be used: wrong layout, a folder with no images, labels that do not match."""


class UnreadableImagesError(UserError, RuntimeError):
    """Some image files cannot be opened; the message lists them."""


class MissingCheckpointError(UserError, FileNotFoundError):
    """The checkpoint path does not exist."""


class BadCheckpointError(UserError, ValueError):
    """The file is not a readable imagenette-drift checkpoint (corrupt, truncated, or another program's)."""


def one_line(error: BaseException) -> str:
    """The error's message with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(error).split()) or type(error).__name__
