"""Download a data set's official files: every mirror tried in turn, sha256 verified, atomic, idempotent."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mnist_cnn.artifacts.files import CHUNK, atomic_path, sha256_file
from mnist_cnn.data.datasets import FileSpec, cache_dir, get_spec
from mnist_cnn.errors import DownloadError, MirrorFailed

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
                    raise MirrorFailed(f"sha256 {actual[:12]}… != official {f.sha256[:12]}…")
            if progress:
                print(f"downloaded {url} -> {target}", file=sys.stderr)
            return
        except MirrorFailed as exc:  # try the next mirror; atomic_path has removed the partial file
            failures.append(f"{url}: {exc}")
    raise DownloadError(
        f"{f.name}: every mirror failed ({'; '.join(failures)}); "
        f"check your connection or put the file in {target.parent} by hand"
    )


_NET_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)


def _net(call, *args):
    """``call(*args)`` with network failures turned into :class:`MirrorFailed`."""
    try:
        return call(*args)
    except _NET_ERRORS as exc:
        raise MirrorFailed(str(getattr(exc, "reason", None) or exc)) from None


def _fetch(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest`` (blocks as they arrive); return the sha256 of what came."""
    digest = hashlib.sha256()
    got = 0
    req = _net(urllib.request.Request, url, None, {"User-Agent": "mnist-cnn"})  # ValueError: not a URL
    with open(dest, "wb") as out, _net(urllib.request.urlopen, req, None, timeout) as resp:  # noqa: S310
        length = resp.headers.get("Content-Length", "")
        while block := _net(resp.read1, CHUNK):
            digest.update(block)
            out.write(block)  # a full disk raises OSError here: atomic_path reports it
            got += len(block)
    # http.client ends a body cut short by the server like a complete one: compare with the header
    if length.isdigit() and got != int(length):
        raise MirrorFailed(f"transfer interrupted after {got:,} of {int(length):,} bytes")
    return digest.hexdigest()
