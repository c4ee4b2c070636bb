"""Typed errors for user-facing failures.

Every error a user can cause (a missing file, a bad image, an unknown preset, a model that is
not cached) is a subclass of :class:`SdcorrError` whose message is one line. The CLI prints
``error: <message>`` and exits with status 2 for these; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class SdcorrError(Exception):
    """Base class for errors caused by user input or the environment."""


class ImageLoadError(SdcorrError):
    """An image could not be read (missing file, not an image, empty image)."""


class ConfigError(SdcorrError, ValueError):
    """An unknown preset name or an invalid configuration value."""


class ModelNotFoundError(SdcorrError):
    """A model is neither a local folder, nor cached, nor downloadable right now."""


class PointsError(SdcorrError, ValueError):
    """Points are malformed or fall outside the image they refer to."""


class DatasetError(SdcorrError):
    """A dataset folder is missing files or holds unreadable annotations."""


class OutputError(SdcorrError):
    """An output path cannot be written."""


class ModelLoadError(SdcorrError):
    """A model folder or weights file is there but broken (bad config, wrong model type,
    missing, truncated or refused weights)."""


def first_line(err: BaseException, limit: int = 160) -> str:
    """The gist of a library's (often multi-line) error message, as one short line.

    The first non-empty line, joined with the next one when it only introduces it (ends with
    ``:``), cut at its first sentence end and at ``limit`` characters; the exception's type
    name when the message is empty.
    """
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    text = text.split(". ", 1)[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."
