"""Errors raised when tracking files on disk are missing, malformed or inconsistent."""

from __future__ import annotations

from pathlib import Path


class TrackingError(ValueError):
    """A tracking file or folder is unusable; the message names it and says what is wrong.

    `path` and `problem` are kept as attributes so callers (asset checks, reports) can show
    them separately without parsing the message.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Exceptions pickle as cls(*self.args); ours takes (path, problem), not the message.
        return (type(self), (self.path, self.problem))
