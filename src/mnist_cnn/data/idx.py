"""IDX files (the MNIST container format): read with every header field and size checked, write.

Nothing here imports torch: arrays are numpy. A malformed file raises :class:`DataError` naming the
file and what is wrong with it.
"""

from __future__ import annotations

import errno
import gzip
import math
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mnist_cnn.artifacts.files import CHUNK, atomic_write_bytes
from mnist_cnn.errors import DataError

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
        self.raw: BinaryIO | None = None

    def __enter__(self):
        p = self.path
        try:
            self.raw = open(p, "rb")  # noqa: SIM115 - closed in __exit__
        except FileNotFoundError:
            if p.is_symlink():
                raise DataError(
                    f"{p}: broken symbolic link to {os.readlink(p)}; fix the link or put the real file there"
                ) from None
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
            if self.raw is not None:
                self.raw.close()  # __exit__ does not run when __enter__ raises
            raise

    def _stream(self, p: Path) -> Any:
        assert self.raw is not None
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
        chunk = _guarded_read(fh, p, min(CHUNK, expected - len(body)))
        if not chunk:
            raise DataError(
                f"{p}: truncated: header declares shape {dims} ({expected:,} bytes) but only "
                f"{len(body):,} bytes follow; re-download the file"
            )
        body += chunk
    if _guarded_read(fh, p, 1):
        raise DataError(
            f"{p}: has trailing bytes after the {expected:,} declared by its header; "
            "the file is corrupt, re-download it"
        )
    return body
