"""Data: IDX files, dataset specs, resolution, download, validation split, normalisation.

Nothing here imports torch: arrays are numpy (uint8 images ``[N, 28, 28]``, int64 labels ``[N]``).
Every problem a user can cause raises :class:`DataError` with a one-line message naming the file
and the fix.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import math
import os
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import DataError, DownloadError
from .files import atomic_path, atomic_write_bytes

ENV_DATA_DIR = "MNIST_CNN_DATA_DIR"

# IDX type codes -> numpy dtype (big-endian, as the format stores them).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data by more than this factor
_CHUNK = 1 << 20


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
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
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


# --------------------------------------------------------------------------- IDX format


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz, unless ``compress``)."""
    arr = np.asarray(array)
    codes = {v.newbyteorder(">") if v.itemsize > 1 else v: k for k, v in IDX_DTYPES.items()}
    be = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if be not in codes:
        raise ValueError(f"dtype {arr.dtype} has no IDX type code")
    header = bytes([0, 0, codes[be], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(be, copy=False).tobytes()
    if compress is None:
        compress = str(path).endswith(".gz")
    atomic_write_bytes(path, gzip.compress(payload, mtime=0) if compress else payload)


def read_idx(path: str | os.PathLike[str], ndim: int | None = None) -> np.ndarray:
    """Read and validate an IDX file (raw or gzipped).

    Checks, in order, each failing with a :class:`DataError` naming the file: readable regular
    file, not empty, not an HTML page, valid gzip stream, magic number, type code, number of
    dimensions (when ``ndim`` is given), declared size against what the file actually holds.
    A header that claims more data than the file holds fails before anything that large is
    allocated: the body is read in bounded chunks.
    """
    p = Path(path)
    with _open_checked(p) as (fh, compressed, size):
        head = _read_exact(fh, p, 4, "header")
        if head[0] != 0 or head[1] != 0:
            raise DataError(f"{p}: wrong magic number (0x{head[:4].hex()}), not an IDX file; re-download it")
        dtype = IDX_DTYPES.get(head[2])
        if dtype is None:
            raise DataError(f"{p}: unknown IDX type code 0x{head[2]:02x}; the file is corrupt, re-download it")
        nd = head[3]
        if ndim is not None and nd != ndim:
            raise DataError(f"{p}: has {nd} dimensions, expected {ndim}; is this the right file?")
        dims = struct.unpack(f">{nd}I", _read_exact(fh, p, 4 * nd, "header"))
        expected = math.prod(dims) * dtype.itemsize  # Python ints: np.prod would wrap at 2^64
        if math.prod(d for d in dims if d) * dtype.itemsize > sys.maxsize:  # even when a 0 makes it empty
            raise DataError(f"{p}: header declares an impossible shape {dims}; the file is corrupt, re-download it")
        bound = (size * _MAX_DEFLATE_RATIO) if compressed else size - 4 - 4 * nd
        if expected > bound:
            raise DataError(
                f"{p}: header declares shape {dims} ({expected:,} bytes) but the file is only "
                f"{size:,} bytes; it is truncated or corrupt, re-download it"
            )
        body = _read_body(fh, p, expected, dims)
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


class _open_checked:
    """Context manager: open ``path`` as a binary stream, transparently gunzipping."""

    def __init__(self, path: Path):
        self.path = path
        self.raw = None

    def __enter__(self):
        p = self.path
        try:
            self.raw = open(p, "rb")  # noqa: SIM115 - closed in __exit__
        except FileNotFoundError:
            if p.is_symlink():
                raise DataError(f"{p}: broken symbolic link to {os.readlink(p)}; fix the link or put the real "
                                "file there") from None
            raise DataError(f"{p}: file not found; check the path") from None
        except IsADirectoryError:
            raise DataError(f"{p}: is a folder, expected an IDX file; remove it or point elsewhere") from None
        except PermissionError:
            raise DataError(f"{p}: permission denied; make the file readable (chmod a+r)") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DataError(f"{p}: symbolic link loop; replace the link with the real file") from None
            raise DataError(f"{p}: cannot open ({exc.strerror}); check the path") from None
        try:
            return self._stream(p)
        except BaseException:
            self.raw.close()  # __exit__ does not run when __enter__ raises
            raise

    def _stream(self, p: Path):
        size = os.fstat(self.raw.fileno()).st_size
        start = self.raw.read(16)
        self.raw.seek(0)
        if not start:
            raise DataError(f"{p}: file is empty; delete it and download again")
        if start.lstrip()[:1] == b"<":
            raise DataError(f"{p}: is an HTML/XML page, not data (a failed download?); delete it and download again")
        if start[:2] == _GZIP_MAGIC:
            return gzip.GzipFile(fileobj=self.raw), True, size
        if p.suffix == ".gz":
            raise DataError(f"{p}: not a gzip file although named .gz; delete it and download again")
        return self.raw, False, size

    def __exit__(self, *exc):
        if self.raw is not None:
            self.raw.close()
        return False


def _read_exact(fh, p: Path, n: int, what: str) -> bytes:
    data = _guarded_read(fh, p, n)
    if len(data) != n:
        raise DataError(f"{p}: truncated {what} ({len(data)} of {n} bytes); re-download the file")
    return data


def _guarded_read(fh, p: Path, n: int) -> bytes:
    try:
        return fh.read(n)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"{p}: corrupt or truncated gzip stream ({exc}); delete it and download again") from None


def _read_body(fh, p: Path, expected: int, dims: tuple[int, ...]) -> bytearray:
    body = bytearray()
    while len(body) < expected:
        chunk = _guarded_read(fh, p, min(_CHUNK, expected - len(body)))
        if not chunk:
            raise DataError(
                f"{p}: truncated: header declares shape {dims} ({expected:,} bytes) but only "
                f"{len(body):,} bytes follow; re-download the file"
            )
        body += chunk
    if _guarded_read(fh, p, 1):
        raise DataError(f"{p}: has trailing bytes after the {expected:,} declared by its header; the file is corrupt, re-download it")
    return body


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
            raise DataError(f"{folder}: data folder does not exist; create it and run "
                            f"`mnist-cnn data download --dataset {dataset} --data-dir {folder}`")
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _load_pair(folder: Path, pair: tuple[FileSpec, FileSpec], n_classes: int) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    img_spec, lbl_spec = pair
    img_path, lbl_path = (_find_file(folder, s) or folder / s.name for s in pair)
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lbl_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        bad = img_path if images.dtype != np.uint8 else lbl_path
        raise DataError(f"{bad}: IDX type must be unsigned byte (0x08); the file is not MNIST-format, replace it")
    if images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28; the file is not MNIST-format, replace it")
    if len(images) != len(labels):
        raise DataError(f"{img_path}: has {len(images):,} images but {lbl_path.name} has {len(labels):,} labels; "
                        "the two files do not belong together, re-download both")
    if len(labels) and int(labels.max()) >= n_classes:
        bad_i = int(np.argmax(labels >= n_classes))
        raise DataError(f"{lbl_path}: label {int(labels[bad_i])} at index {bad_i} is out of range 0..{n_classes - 1}; "
                        "the file is corrupt, re-download it")
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
            actual = ds.checksums.get(f.name) or sha256_file(path)
            rows.append({
                "file": str(path), "split": split, "kind": f.kind, "count": len(x),
                "sha256": actual, "official": actual == f.sha256,
            })
    return rows


# --------------------------------------------------------------------------- download


def download(
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    mirrors: tuple[str, ...] | None = None,
    timeout: float = 30.0,
    progress: bool = False,
) -> Path:
    """Fetch every missing or corrupt file of ``dataset`` into ``data_dir`` (default: the cache).

    Tries each mirror in turn, verifies the official sha256, writes atomically (a kill leaves no
    partial file under the real name) and skips files already present and correct (idempotent).
    """
    spec = get_spec(dataset)
    folder = Path(data_dir).expanduser() if data_dir else cache_dir(dataset)
    for f in spec.all_files():
        target = folder / f.name
        if target.is_file() and sha256_file(target) == f.sha256:
            continue
        _remove_stale_partials(target, timeout)
        _download_one(f, target, mirrors or spec.mirrors, timeout, progress)
    return folder


def _remove_stale_partials(target: Path, timeout: float) -> None:
    """Delete temporary files a killed download of ``target`` left behind (atomic_path names them
    ``.NAME.*.tmp``). One nobody has written to for longer than the read timeout is abandoned: a
    live download writes at least that often or fails."""
    now = time.time()
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > timeout:
                tmp.unlink()
        except OSError:
            pass  # gone already, or not ours to delete: the new download uses its own name


def _download_one(f: FileSpec, target: Path, mirrors: tuple[str, ...], timeout: float, progress: bool) -> None:
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + f.name
        try:
            with atomic_path(target) as tmp:
                actual = _fetch(url, tmp, timeout)
                if actual != f.sha256:
                    raise _MirrorFailed(f"sha256 {actual[:12]}… != official {f.sha256[:12]}…")
            if progress:
                print(f"downloaded {url} -> {target}", file=sys.stderr)
            return
        except _MirrorFailed as exc:  # try the next mirror; atomic_path has removed the partial file
            failures.append(f"{url}: {exc}")
    raise DownloadError(f"{f.name}: every mirror failed ({'; '.join(failures)}); "
                        f"check your connection or put the file in {target.parent} by hand")


class _MirrorFailed(Exception):
    """This mirror did not deliver the file (not an OSError, so atomic_path does not report it as
    a failure to write: a full disk stops the download, a 404 moves on to the next mirror)."""


_NET_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)


def _net(call, *args):
    """``call(*args)`` with network failures turned into :class:`_MirrorFailed`."""
    try:
        return call(*args)
    except _NET_ERRORS as exc:
        raise _MirrorFailed(str(getattr(exc, "reason", None) or exc)) from None


def _fetch(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest`` (blocks as they arrive); return the sha256 of what came."""
    digest = hashlib.sha256()
    got = 0
    req = _net(urllib.request.Request, url, None, {"User-Agent": "mnist-cnn"})  # ValueError: not a URL
    with open(dest, "wb") as out, _net(urllib.request.urlopen, req, None, timeout) as resp:  # noqa: S310
        length = resp.headers.get("Content-Length", "")
        while block := _net(resp.read1, _CHUNK):
            digest.update(block)
            out.write(block)  # a full disk raises OSError here: atomic_path reports it
            got += len(block)
    # http.client ends a body cut short by the server like a complete one: compare with the header
    if length.isdigit() and got != int(length):
        raise _MirrorFailed(f"transfer interrupted after {got:,} of {int(length):,} bytes")
    return digest.hexdigest()


# --------------------------------------------------------------------------- split + normalisation


def train_val_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of training indices: ``(train_idx, val_idx)``, both sorted."""
    n = len(labels)
    if val_size == 0:
        return np.arange(n), np.arange(0)
    if not 0 < val_size < n:
        raise DataError(f"--val-size {val_size} must be between 0 and {n - 1} (the training set has {n:,} images)")
    from sklearn.model_selection import train_test_split

    try:
        tr, va = train_test_split(np.arange(n), test_size=val_size, stratify=labels, random_state=seed)
    except ValueError:  # too few examples of some class to stratify: fall back to a plain split
        tr, va = train_test_split(np.arange(n), test_size=val_size, random_state=seed)
    return np.sort(tr), np.sort(va)


def normalisation(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of pixels scaled to [0, 1] (the training split's, stored with the model)."""
    x = images.astype(np.float64) / 255.0
    std = float(x.std())  # blank images give ~1e-17, not 0: dividing by it would blow inputs up
    return float(x.mean()), std if std > 1e-6 else 1.0
