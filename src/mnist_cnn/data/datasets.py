"""Data: IDX files, dataset specs, resolution, download, validation split, normalisation.

Nothing here imports torch: arrays are numpy (uint8 images ``[N, 28, 28]``, int64 labels ``[N]``).
Every problem a user can cause raises :class:`DataError` with a one-line message naming the file
and the fix.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from mnist_cnn.artifacts.files import sha256_file
from mnist_cnn.data.idx import read_idx
from mnist_cnn.errors import DataError

ENV_DATA_DIR = "MNIST_CNN_DATA_DIR"


# --------------------------------------------------------------------------- dataset specs


@dataclass(frozen=True)
class FileSpec:
    name: str  # file name as served by the mirrors (always .gz)
    sha256: str  # official checksum of the .gz
    kind: str  # "images" or "labels"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: tuple[str, ...]
    files: dict[str, tuple[FileSpec, FileSpec]]  # split -> (images, labels)
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()  # where OS packages install the files
    sizes: dict[str, int] = field(default_factory=dict)  # split -> expected number of images

    def all_files(self) -> list[FileSpec]:
        return [f for pair in self.files.values() for f in pair]


def _pair(prefix: str, img_sha: str, lbl_sha: str) -> tuple[FileSpec, FileSpec]:
    return (
        FileSpec(f"{prefix}-images-idx3-ubyte.gz", img_sha, "images"),
        FileSpec(f"{prefix}-labels-idx1-ubyte.gz", lbl_sha, "labels"),
    )


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        classes=tuple(str(d) for d in range(10)),
        files={
            "train": _pair(
                "train",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            "test": _pair(
                "t10k",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        sizes={"train": 60000, "test": 10000},
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        files={
            "train": _pair(
                "train",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            "test": _pair(
                "t10k",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        sizes={"train": 60000, "test": 10000},
    ),
}


def get_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise DataError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}") from None


# --------------------------------------------------------------------------- locating files


def cache_dir(dataset: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnist-cnn" / dataset


def _find_file(folder: Path, spec: FileSpec) -> Path | None:
    """The file for ``spec`` in ``folder``: the .gz name or the uncompressed name."""
    for name in (spec.name, spec.name[: -len(".gz")]):
        candidate = folder / name
        try:
            if candidate.exists() or candidate.is_symlink():
                return candidate
        except PermissionError:  # the folder is not searchable: stat() fails with EACCES
            raise DataError(f"{folder}: permission denied; make the folder readable (chmod a+rx)") from None
    return None


def _complete(folder: Path, spec: DatasetSpec) -> bool:
    return folder.is_dir() and all(_find_file(folder, f) for f in spec.all_files())


def resolve_data_dir(dataset: str = "mnist", data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the files of ``dataset`` are: ``data_dir`` / $MNIST_CNN_DATA_DIR, else the user cache,
    else an OS package's folder. Raises :class:`DataError` saying how to get them."""
    spec = get_spec(dataset)
    given = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR) or None
    if given is not None:
        folder = Path(given).expanduser()
        if not folder.exists():
            raise DataError(
                f"{folder}: data folder does not exist; create it and run "
                f"`mnist-cnn data download --dataset {dataset} --data-dir {folder}`"
            )
        if not folder.is_dir():
            raise DataError(f"{folder}: is not a folder; --data-dir must name the folder holding the IDX files")
        _check_present(folder, spec)
        return folder
    for folder in (cache_dir(dataset), *map(Path, spec.system_dirs)):
        if _complete(folder, spec):
            return folder
    raise DataError(
        f"{dataset} not found in {cache_dir(dataset)}; run `mnist-cnn data download --dataset {dataset}` "
        f"or pass --data-dir DIR (or set {ENV_DATA_DIR}) to a folder holding the four IDX files"
    )


def _check_present(folder: Path, spec: DatasetSpec) -> None:
    for f in spec.all_files():
        if _find_file(folder, f) is None:
            raise DataError(
                f"{folder / f.name}: file missing; put the official {f.name} there or run "
                f"`mnist-cnn data download --dataset {spec.name} --data-dir {folder}`"
            )


_warned: set[str] = set()


def _warn_checksum(path: Path, actual: str, official: str) -> None:
    key = f"{path}:{actual}"
    if key in _warned:
        return
    _warned.add(key)
    print(
        f"warning: {path}: sha256 {actual[:12]}… differs from the official {official[:12]}…; "
        "it is well-formed, so it is used (results may not match published figures)",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------- loading


@dataclass
class Dataset:
    """One data set in memory: uint8 images [N, 28, 28] and int64 labels [N] per split."""

    name: str
    classes: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    checksums: dict[str, str]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name == "train":
            return self.train_images, self.train_labels
        if name == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"unknown split {name!r}")

    def validation(self, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The training images a run with this ``val_size`` and ``seed`` held out (its validation split)."""
        _, va = train_val_split(self.train_labels, val_size, seed)
        return self.train_images[va], self.train_labels[va]


def _load_pair(
    folder: Path, pair: tuple[FileSpec, FileSpec], n_classes: int
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    img_spec, lbl_spec = pair
    img_path, lbl_path = (_find_file(folder, s) or folder / s.name for s in pair)
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lbl_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        bad = img_path if images.dtype != np.uint8 else lbl_path
        raise DataError(f"{bad}: IDX type must be unsigned byte (0x08); the file is not MNIST-format, replace it")
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"{img_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28; "
            "the file is not MNIST-format, replace it"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{img_path}: has {len(images):,} images but {lbl_path.name} has {len(labels):,} labels; "
            "the two files do not belong together, re-download both"
        )
    if len(labels) and int(labels.max()) >= n_classes:
        bad_i = int(np.argmax(labels >= n_classes))
        raise DataError(
            f"{lbl_path}: label {int(labels[bad_i])} at index {bad_i} is out of range 0..{n_classes - 1}; "
            "the file is corrupt, re-download it"
        )
    sums = {}
    for path, spec in ((img_path, img_spec), (lbl_path, lbl_spec)):
        if path.name == spec.name:  # compressed file: compare against the official checksum
            actual = sha256_file(path)
            sums[spec.name] = actual
            if actual != spec.sha256:
                _warn_checksum(path, actual, spec.sha256)
    return images, labels.astype(np.int64), sums


def load_dataset(dataset: str = "mnist", data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load and validate both splits. Cached per (dataset, folder) within the process."""
    folder = resolve_data_dir(dataset, data_dir).resolve()
    return _load_cached(dataset, str(folder), _mtimes(folder, get_spec(dataset)))


def _mtimes(folder: Path, spec: DatasetSpec) -> tuple[float, ...]:
    out = []
    for f in spec.all_files():
        path = _find_file(folder, f)
        try:
            out.append(path.stat().st_mtime if path else 0.0)
        except OSError:
            out.append(-1.0)
    return tuple(out)


def clear_cache() -> None:
    """Forget data sets loaded earlier in this process (they are cached by folder and file times)."""
    _load_cached.cache_clear()


@lru_cache(maxsize=4)
def _load_cached(dataset: str, folder: str, _mtimes: tuple[float, ...]) -> Dataset:
    spec = get_spec(dataset)
    n = len(spec.classes)
    tr_x, tr_y, s1 = _load_pair(Path(folder), spec.files["train"], n)
    te_x, te_y, s2 = _load_pair(Path(folder), spec.files["test"], n)
    for arr in (tr_x, tr_y, te_x, te_y):
        arr.setflags(write=False)
    return Dataset(spec.name, spec.classes, tr_x, tr_y, te_x, te_y, folder, {**s1, **s2})


def verify(dataset: str = "mnist", data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, object]]:
    """Validate every file's format; report each file's checksum against the official one."""
    folder = resolve_data_dir(dataset, data_dir)
    spec = get_spec(dataset)
    ds = load_dataset(dataset, folder)
    rows = []
    for split, (img, lbl) in spec.files.items():
        x, _ = ds.split(split)
        for f in (img, lbl):
            path = _find_file(folder, f)
            actual = ds.checksums.get(f.name) or sha256_file(path or folder / f.name)
            rows.append(
                {
                    "file": str(path),
                    "split": split,
                    "kind": f.kind,
                    "count": len(x),
                    "sha256": actual,
                    "official": actual == f.sha256,
                }
            )
    return rows


# --------------------------------------------------------------------------- split + normalisation


def train_val_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of training indices: ``(train_idx, val_idx)``, both sorted.

    The same indices as scikit-learn's ``train_test_split(np.arange(n), test_size=val_size,
    stratify=labels, random_state=seed)`` (every run so far was split by it, and evaluating a run's
    validation split rebuilds it), without importing scikit-learn (about a second). A test checks
    the two agree. Classes too rare to stratify fall back to a plain shuffled split, as before.
    """
    n = len(labels)
    if val_size == 0:
        return np.arange(n), np.arange(0)
    if not 0 < val_size < n:
        raise DataError(f"--val-size {val_size} must be between 0 and {n - 1} (the training set has {n:,} images)")
    rng = np.random.RandomState(seed)
    _, y, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_train = n - val_size
    if counts.min() < 2 or min(n_train, val_size) < len(counts):  # ShuffleSplit
        perm = rng.permutation(n)
        return np.sort(perm[val_size:]), np.sort(perm[:val_size])
    # StratifiedShuffleSplit: per class, n_i training and t_i validation images, drawn by permutation
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, val_size, rng)
    by_class = np.split(np.argsort(y, kind="stable"), np.cumsum(counts)[:-1])
    train, val = [], []
    for k, members in enumerate(by_class):
        picked = members.take(rng.permutation(counts[k]), mode="clip")
        train.append(picked[: n_i[k]])
        val.append(picked[n_i[k] : n_i[k] + t_i[k]])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _approximate_mode(counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draws closest to the proportions (the multivariate hypergeometric's approximate
    mode), ties broken by ``rng``: scikit-learn's ``_approximate_mode``, step for step."""
    continuous = counts / counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need -= add_now
            if need == 0:
                break
    return floored.astype(int)


def normalisation(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of pixels scaled to [0, 1] (the training split's, stored with the model).

    From the exact integer sums of the uint8 pixels and of their squares: no float copy of the
    images (a float64 copy of MNIST's training split is 345 MB and took most of the data stage)."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).ravel()
    n = max(flat.size, 1)
    s1 = int(flat.sum(dtype=np.int64))
    s2 = int(np.einsum("i,i->", flat, flat, dtype=np.int64))
    mean = s1 / (255.0 * n)
    std = math.sqrt(max(n * s2 - s1 * s1, 0) / n / n) / 255.0  # n*s2 - s1^2: exact, in Python integers
    return mean, std if std > 1e-6 else 1.0  # blank images: dividing by ~0 would blow inputs up
