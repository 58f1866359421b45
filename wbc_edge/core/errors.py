"""Exception types.  Every error a user can cause is a `WbcEdgeError` whose message is one line that names
the file and the problem; the CLI prints it without a traceback (unless --debug)."""

from __future__ import annotations

import os


class WbcEdgeError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class BadImageError(WbcEdgeError):
    """An image file could not be decoded or is not acceptable."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class DatasetError(WbcEdgeError):
    """The dataset folder or split manifest is not usable (empty class, unknown label, ...)."""


class ModelFileError(WbcEdgeError):
    """A model file is missing, not a model of the expected kind, or inconsistent with its metadata."""


def first_line(exc_or_text: BaseException | str) -> str:
    """The first non-blank line of an exception's message (or of a text), stripped.

    For an exception with an empty message this is its type name, so that a reason is never blank; for a
    text it is "" when the text is blank.  Keeps wrapped library errors (TensorFlow, Pillow, the TFLite
    interpreter) within the one-line message contract.
    """
    text = str(exc_or_text).strip()
    if text:
        return text.splitlines()[0].strip()
    return type(exc_or_text).__name__ if isinstance(exc_or_text, BaseException) else ""
