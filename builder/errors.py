"""The error every `driptag` command raises for a user's mistake."""

from __future__ import annotations


class Failure(Exception):
    """A user error: every line is printed as it is, and driptag exits with status 2."""

    def __init__(self, *lines: str):
        super().__init__(*lines)
        self.lines = lines
