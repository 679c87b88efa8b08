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


class MirrorFailed(Exception):
    """One mirror did not deliver a file: the download moves on to the next mirror, and only when
    every mirror failed does the user see a :class:`DownloadError`. Not an ``OSError``, so the
    atomic writer does not report it as a failure to write (a full disk stops the download at once)."""


class CheckpointError(MnistCnnError):
    """A model file or run directory cannot be loaded."""


class ConfigError(MnistCnnError):
    """A flag, recipe or config file value is invalid."""


class ImageError(MnistCnnError):
    """An image cannot be decoded or contains no digit."""


class RunExistsError(ConfigError):
    """The output run directory exists and neither --resume nor --force was given."""


class RunInUseError(RunExistsError):
    """Another process is training in the run folder (it holds the folder's lock)."""


class OutputError(MnistCnnError):
    """An output file or folder cannot be written (read-only, disk full, ...)."""


class ExportError(MnistCnnError):
    """The model cannot be exported, or the exported graph does not match PyTorch."""


class Interrupted(MnistCnnError):
    """Training was stopped with Ctrl-C (SIGINT); the last completed epoch is saved."""

    exit_code = 130


class RequestError(MnistCnnError):
    """A malformed request to the server (400): bad JSON, missing field, wrong shape."""

    status = 400


class PayloadTooLarge(RequestError):
    """The request body or batch is larger than the server accepts (413)."""

    status = 413


class UnsupportedMediaType(RequestError):
    """The request's content type is not one the endpoint takes (415)."""

    status = 415


class InvalidImage(RequestError):
    """The request is well-formed but its image cannot be used (422)."""

    status = 422


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty): for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
