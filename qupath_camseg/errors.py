"""The package's error types.

Every error a user can cause derives from :class:`CamsegError` and also from the builtin that
fits (``FileNotFoundError``, ``ValueError``...), so callers can catch either. The message is one
line that names the file and says how to fix the problem; the CLI prints it without a traceback
(``--debug`` shows the traceback).
"""

from __future__ import annotations

__all__ = [
    "CamsegError",
    "InvalidSettingsError",
    "SlideNotFoundError",
    "SlideReadError",
    "MissingMppError",
    "InvalidAnnotationError",
    "InvalidGeoJSONError",
    "InvalidXMLError",
    "ProjectError",
    "ProjectNotFoundError",
    "ProjectExistsError",
    "ProjectLockedError",
    "ImageMissingError",
    "ModelBundleError",
    "QuPathNotFoundError",
    "OutputNotWritableError",
    "TrainingDivergedError",
    "ImagesFailedError",
    "InvalidPixelClassifierError",
    "StainNormalizationError",
    "UnsafePathError",
]


class CamsegError(Exception):
    """Base class of every error this package raises on purpose (exit code 2 in the CLI)."""

    exit_code = 2


class InvalidSettingsError(CamsegError, ValueError):
    """An option or setting is impossible (``--epochs 0``, ``--threshold nan``, a device that is
    not there); the message names the option and a value that works."""


class SlideNotFoundError(CamsegError, FileNotFoundError):
    """A slide file does not exist."""


class SlideReadError(CamsegError, OSError):
    """A slide exists but cannot be read (corrupt, truncated, unsupported)."""


class MissingMppError(CamsegError, ValueError):
    """The slide carries no pixel size; the user must pass ``--mpp``."""


class InvalidAnnotationError(CamsegError, ValueError):
    """An annotation file or geometry cannot be used."""


class InvalidGeoJSONError(InvalidAnnotationError):
    """GeoJSON that QuPath would not read (or that is not GeoJSON)."""


class InvalidXMLError(InvalidAnnotationError):
    """ASAP XML that is malformed or malicious."""


class ProjectError(CamsegError, ValueError):
    """A QuPath project cannot be read or written."""


class ProjectNotFoundError(ProjectError, FileNotFoundError):
    """No ``project.qpproj`` at the given path."""


class ProjectExistsError(ProjectError, FileExistsError):
    """A project was to be created where one already exists."""


class ProjectLockedError(ProjectError, BlockingIOError):
    """Another qcamseg command is writing to the same project."""


class ImageMissingError(ProjectError, FileNotFoundError):
    """A project entry's image file is not where the project says it is."""


class ModelBundleError(CamsegError, ValueError):
    """A model folder is missing, incomplete, unsafe (pickles) or incompatible."""


class QuPathNotFoundError(CamsegError, RuntimeError):
    """The paquo door was requested but no QuPath installation was found."""


class OutputNotWritableError(CamsegError, PermissionError):
    """An output location cannot be written (permissions, disk full)."""


class TrainingDivergedError(CamsegError, FloatingPointError):
    """The loss became NaN/inf repeatedly; training stopped with the last good checkpoint kept."""


class ImagesFailedError(CamsegError, RuntimeError):
    """Some images of a multi-image run failed (each was reported); finished ones are kept."""


class InvalidPixelClassifierError(CamsegError, ValueError):
    """A QuPath pixel-classifier JSON that QuPath would reject or misread (names the field)."""


class StainNormalizationError(CamsegError, ValueError):
    """Stain normalisation cannot be set up: too little stained tissue to fit a reference, or a
    model's stain reference is invalid."""
class UnsafePathError(CamsegError, ValueError):
    """A file name taken from an input (a project's entry ID, a slide's name) would write outside
    its output folder, or is not a file name on every platform; nothing is written."""
