"""Domain exceptions with sentences a user understands.

Only ``app.py`` turns these into ``gr.Error``; the CLI prints ``str(exc)`` and exits non-zero.
"""

from __future__ import annotations


class FaceEditingError(Exception):
    """Base class: ``str(exc)`` is a complete sentence meant for the user."""


class InvalidImageError(FaceEditingError):
    """The input is not a readable image (not an image, corrupt, truncated, empty)."""


class ImageTooLargeError(FaceEditingError):
    """The image has more pixels than the configured budget (decompression-bomb guard)."""


class NoFaceFoundError(FaceEditingError):
    """The face detector found no face in the photo."""


class WeightsUnavailableError(FaceEditingError):
    """One or more model files are neither in the local folder, the cache, nor downloadable.

    Attributes:
        missing: the registry entries that could not be found, in registry order.
    """

    def __init__(self, message: str, missing: tuple = ()):
        super().__init__(message)
        self.missing = tuple(missing)


class WeightsCorruptError(FaceEditingError):
    """A model file exists but has the wrong size, hash or contents."""
