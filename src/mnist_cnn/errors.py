"""The project's own error types.

Every error a user can cause (bad file, bad flag, bad image, bad request) is raised as a
subclass of :class:`MnistCnnError` with a one-line message that names the thing and the fix.
The CLI prints ``error: <message>`` and exits non-zero; the server maps them to HTTP 4xx.
"""

from __future__ import annotations


class MnistCnnError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is a one-line message."""

    exit_code = 2


class DataError(MnistCnnError):
    """A data file or folder is missing, malformed or fails its checksum."""


class DownloadError(DataError):
    """Every mirror failed, or a downloaded file has the wrong checksum."""


class CheckpointError(MnistCnnError):
    """A model file or run directory cannot be loaded."""


class ConfigError(MnistCnnError):
    """A flag, recipe or config file value is invalid."""


class ImageError(MnistCnnError):
    """An image cannot be decoded or contains no digit."""


class RunExistsError(ConfigError):
    """The output run directory exists and neither --resume nor --force was given."""
