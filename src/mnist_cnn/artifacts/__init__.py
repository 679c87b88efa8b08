"""Artifacts: everything written to or read from disk that is not a data set.

Owns atomic file writing (write to a temporary file, fsync, rename), the safetensors container with
JSON metadata that every model file and checkpoint uses (never pickle), and the run-folder contract
(:mod:`mnist_cnn.artifacts.runs`): the names of a run folder's files, resolving a run folder or
``default`` to a model file, file checksums, a run's history and the parameters of its validation
split. It sits just above :mod:`mnist_cnn.errors` and imports nothing else of the package, so every
other stage can use it.
"""
