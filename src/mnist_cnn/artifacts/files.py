"""Atomic file writing and safe model files (safetensors + JSON metadata, never pickle).

Every artifact is written to a temporary file in the same folder, flushed, fsynced and then
renamed over the target, so a kill at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnist_cnn.errors import CheckpointError, MnistCnnError, OutputError, first_line

METADATA_KEY = "mnist_cnn"  # safetensors header key holding our JSON metadata
CHUNK = 1 << 20  # read size for checksums and copies


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the block succeeds."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; artifacts follow the umask like any file
    except OSError as exc:
        raise OutputError(_os_message(target, exc)) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as exc:
        raise OutputError(_os_message(target, exc)) from None
    finally:
        tmp_path.unlink(missing_ok=True)


@functools.lru_cache(maxsize=1)
def umask() -> int:
    """The process's file-mode creation mask (read without changing it where the OS allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back at once
    os.umask(mask)
    return mask


def _os_message(target: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{target}: no space left on device; free some space or write to another folder"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{target}: cannot write here ({exc.strerror}); choose a writable folder"
    return f"{target}: cannot write ({exc.strerror or exc}); check the path"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` (e.g. ``fig.savefig``) and move the result into place."""
    with atomic_path(path) as tmp:
        writer(tmp)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Write torch tensors to a safetensors file with ``metadata`` stored as JSON in its header."""
    from safetensors.torch import save

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    blob = save(clean, metadata={METADATA_KEY: json.dumps(metadata, default=_json_default)})
    atomic_write_bytes(path, blob)


def load_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a safetensors file written by :func:`save_tensors`: ``(tensors, metadata)``.

    Never unpickles: a pickle renamed to .safetensors fails the header parse and is reported.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, expected a .safetensors model file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read ({exc.strerror}); check the path") from None
    try:
        tensors = load(data)
        meta_raw = _read_header_metadata(data).get(METADATA_KEY)
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"{p}: not a valid safetensors file ({first_line(exc)}); re-train or re-export it"
        ) from None
    if meta_raw is None:
        raise CheckpointError(f"{p}: has no mnist_cnn metadata; it was not written by mnist-cnn")
    try:
        metadata = json.loads(meta_raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{p}: its mnist_cnn metadata is not valid JSON") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{p}: its mnist_cnn metadata must be a JSON object")
    return tensors, metadata


def _read_header_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("file shorter than its 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header length exceeds file size")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not an object")
    return meta


def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MnistCnnError(f"{p}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MnistCnnError(f"{p}: cannot read {what} ({first_line(exc)})") from None
    except json.JSONDecodeError as exc:
        raise MnistCnnError(f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
