"""Command-line interface: a thin layer of click commands over the library.

:mod:`~mnist_cnn.cli.app` builds the ``mnist-cnn`` group and adds every command explicitly; shared
options are defined once in :mod:`~mnist_cnn.cli.options`; each stage's commands live in their own
module. Heavy modules (torch, onnx, fastapi, optuna) are imported inside commands, so ``--help``
stays fast. Every :class:`~mnist_cnn.errors.MnistCnnError` becomes ``error: <one line>`` and a
non-zero exit code.
"""

from mnist_cnn.cli.app import cli, main

__all__ = ["cli", "main"]
