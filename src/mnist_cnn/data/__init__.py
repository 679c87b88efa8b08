"""Data: the data sets as numpy arrays (uint8 images ``[N, 28, 28]``, int64 labels ``[N]``).

Owns the declarative data-set specs (files, sizes, official sha256, mirrors), the IDX reader and
writer (:mod:`~mnist_cnn.data.idx`, every header field and size checked on every load), finding a
data folder, loading it, the seeded stratified train/validation split, the training split's
normalisation, and the idempotent, verified download (:mod:`~mnist_cnn.data.download`). Nothing
here imports torch. Depends only on :mod:`mnist_cnn.artifacts` and :mod:`mnist_cnn.errors`.

The names below are this stage's public API; modules of the package itself import the submodules.
"""

from mnist_cnn.data.datasets import (
    DATASETS,
    ENV_DATA_DIR,
    Dataset,
    cache_dir,
    clear_cache,
    get_spec,
    load_dataset,
    normalisation,
    resolve_data_dir,
    train_val_split,
    verify,
)
from mnist_cnn.data.download import download
from mnist_cnn.data.idx import IDX_DTYPES, read_idx, write_idx

__all__ = [
    "DATASETS",
    "ENV_DATA_DIR",
    "IDX_DTYPES",
    "Dataset",
    "cache_dir",
    "clear_cache",
    "download",
    "get_spec",
    "load_dataset",
    "normalisation",
    "read_idx",
    "resolve_data_dir",
    "train_val_split",
    "verify",
    "write_idx",
]
