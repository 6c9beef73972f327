"""The one error type users see: what went wrong, where, and how to fix it."""

from __future__ import annotations

from typing import Optional


class SeplError(Exception):
    """An error caused by input the user can fix.

    Args:
        message: what is wrong, e.g. "mask stack has shape (3, 10, 10), seed is (12, 12)".
        hint: how to fix it, e.g. "recompute the masks for this image".
        sample: the sample (id or filepath) the error is about, if any.

    The CLI prints ``str(error)`` as one line and exits non-zero.
    """

    def __init__(self, message: str, hint: Optional[str] = None, sample: Optional[str] = None):
        self.message = message
        self.hint = hint
        self.sample = sample
        super().__init__(self._format())

    def _format(self) -> str:
        text = self.message
        if self.sample:
            text = f"sample {self.sample}: {text}"
        if self.hint:
            text = f"{text} (fix: {self.hint})"
        return text
