"""Data layer: IDX reader/writer, every bad data file (library + CLI), resolution order, checksum
warning, stratified seeded split, normalisation.

``python -m tests.test_data`` prints the table of bad data files and their one-line messages
that docs/reliability.md shows.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mnist_cnn import data as d
from mnist_cnn.artifacts.files import sha256_file
from mnist_cnn.data.idx import read_idx, write_idx
from mnist_cnn.errors import DataError
from tests.conftest import synthetic_digits, write_dataset
from tests.helpers import run_cli

TRAIN_IMG = "train-images-idx3-ubyte.gz"
TRAIN_LBL = "train-labels-idx1-ubyte.gz"
TEST_IMG = "t10k-images-idx3-ubyte.gz"
TEST_LBL = "t10k-labels-idx1-ubyte.gz"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """load_dataset caches per (folder, mtimes): start every test from a clean cache."""
    d.clear_cache()
    yield
    d.clear_cache()


# --------------------------------------------------------------------------- IDX round trip


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 4), (2, 28, 28), (2, 1, 3, 5)])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, shape, name):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    write_idx(tmp_path / name, arr)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype).newbyteorder("=") and back.shape == shape
    np.testing.assert_array_equal(back, arr)


def test_uncompressed_files_in_a_data_folder_are_accepted(tmp_path):
    folder = write_dataset(tmp_path / "gz")
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in folder.iterdir():
        (raw / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    a, b = d.load_dataset("mnist", folder), d.load_dataset("mnist", raw)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)


def test_writer_refuses_dtypes_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="IDX"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.uint16))


# --------------------------------------------------------------------------- bad data files

RAW_IMAGES = bytes([0, 0, 8, 3]) + struct.pack(">3I", 600, 28, 28)  # header of the tiny set


def _raw(folder: Path, name: str) -> bytes:
    return gzip.decompress((folder / name).read_bytes())


def _put(folder: Path, name: str, payload: bytes, compress: bool = True) -> None:
    (folder / name).write_bytes(gzip.compress(payload, mtime=0) if compress else payload)


def _truncated_gzip(folder: Path) -> None:
    blob = (folder / TRAIN_IMG).read_bytes()
    (folder / TRAIN_IMG).write_bytes(blob[: len(blob) // 2])


def _lying_header(folder: Path) -> None:
    # 2^31 images of 28x28 declared (1.7 TB), 100 images of data actually present
    _put(folder, TRAIN_IMG, bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 28, 28) + bytes(100 * 784))


def _lying_header_raw(folder: Path) -> None:
    (folder / TRAIN_IMG).unlink()
    _put(folder, TRAIN_IMG[:-3], bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 28, 28) + bytes(784), False)


def _directory(folder: Path) -> None:
    (folder / TRAIN_LBL).unlink()
    (folder / TRAIN_LBL).mkdir()


def _symlink_loop(folder: Path) -> None:
    (folder / TEST_LBL).unlink()
    os.symlink(folder / TEST_LBL, folder / TEST_LBL)


def _dangling_symlink(folder: Path) -> None:
    (folder / TEST_LBL).unlink()
    os.symlink(folder / "nowhere.gz", folder / TEST_LBL)


def _labels(folder: Path, labels: np.ndarray) -> None:
    write_idx(folder / TRAIN_LBL, labels.astype(np.uint8))


# case -> (how to break a valid folder, the file the message must name, a fragment of the message)
BAD_FOLDERS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "empty file": (lambda f: (f / TRAIN_IMG).write_bytes(b""), TRAIN_IMG, "file is empty"),
    "not gzip (a zip archive named .gz)": (
        lambda f: (f / TRAIN_IMG).write_bytes(b"PK\x03\x04" + bytes(60)),
        TRAIN_IMG,
        "not a gzip file",
    ),
    "HTML page saved as .gz": (
        lambda f: (f / TRAIN_IMG).write_bytes(b"<!DOCTYPE html><html><body>404</body></html>"),
        TRAIN_IMG,
        "HTML",
    ),
    "truncated gzip stream": (_truncated_gzip, TRAIN_IMG, "truncated gzip"),
    "gzip with a bad CRC": (
        lambda f: (f / TEST_LBL).write_bytes((f / TEST_LBL).read_bytes()[:-8] + bytes(8)),
        TEST_LBL,
        "corrupt",
    ),
    "truncated IDX body": (lambda f: _put(f, TRAIN_IMG, _raw(f, TRAIN_IMG)[:-1000]), TRAIN_IMG, "truncated"),
    "trailing bytes after the body": (
        lambda f: _put(f, TRAIN_IMG, _raw(f, TRAIN_IMG) + b"junk"),
        TRAIN_IMG,
        "trailing bytes",
    ),
    "wrong magic": (lambda f: _put(f, TRAIN_IMG, b"\x12\x34" + _raw(f, TRAIN_IMG)[2:]), TRAIN_IMG, "magic"),
    "unknown dtype code 0x07": (
        lambda f: _put(f, TRAIN_IMG, b"\0\0\x07\x03" + _raw(f, TRAIN_IMG)[4:]),
        TRAIN_IMG,
        "type code 0x07",
    ),
    "valid IDX but int32 images": (
        lambda f: write_idx(f / TRAIN_IMG, synthetic_digits(600)[0].astype(np.int32)),
        TRAIN_IMG,
        "unsigned byte",
    ),
    "wrong number of dimensions (2-D images)": (
        lambda f: write_idx(f / TRAIN_IMG, synthetic_digits(600)[0].reshape(600, 784)),
        TRAIN_IMG,
        "2 dimensions",
    ),
    "images 32x32 instead of 28x28": (
        lambda f: write_idx(f / TRAIN_IMG, np.zeros((600, 32, 32), np.uint8)),
        TRAIN_IMG,
        "32x32",
    ),
    "header claims 2^31 images (gzip)": (_lying_header, TRAIN_IMG, "2147483648"),
    "header claims 2^31 images (raw)": (_lying_header_raw, TRAIN_IMG[:-3], "2147483648"),
    "images/labels count mismatch": (lambda f: _labels(f, synthetic_digits(599)[1]), TRAIN_IMG, "599 labels"),
    "label 10 (> 9)": (
        lambda f: _labels(f, np.where(np.arange(600) == 17, 10, np.arange(600) % 10)),
        TRAIN_LBL,
        "label 10 at index 17",
    ),
    "a directory where a file should be": (_directory, TRAIN_LBL, "is a folder"),
    "symlink loop": (_symlink_loop, TEST_LBL, "symbolic link loop"),
    "dangling symlink": (_dangling_symlink, TEST_LBL, "broken symbolic link"),
    "file missing": (lambda f: (f / TEST_IMG).unlink(), TEST_IMG, "mnist-cnn data download"),
}

FIX_WORDS = ("download", "delete", "remove", "replace", "put", "right file", "fix the link")


def _broken_folder(tmp_path: Path, case: str) -> Path:
    folder = write_dataset(tmp_path / "data")
    BAD_FOLDERS[case][0](folder)
    return folder


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_data_file_is_a_one_line_data_error(tmp_path, case):
    folder = _broken_folder(tmp_path, case)
    _, name, fragment = BAD_FOLDERS[case]
    with pytest.raises(DataError) as err:
        d.load_dataset("mnist", folder)
    msg = str(err.value)
    assert "\n" not in msg and name in msg and fragment in msg, msg
    assert any(w in msg for w in FIX_WORDS), f"message names no fix: {msg}"


def _error_line(stderr: str) -> str:
    """The one `error:` line, last on stderr; the lines before it may only be checksum warnings
    about the files that were read before the bad one."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), stderr
    assert all(line.startswith("warning: ") for line in lines[:-1]), stderr
    return lines[-1]


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_data_file_through_the_cli(tmp_path, case):
    folder = _broken_folder(tmp_path, case)
    before = sorted(p.name for p in folder.iterdir())
    r = run_cli("data", "verify", "--data-dir", str(folder))
    assert r.exit_code == 2
    assert BAD_FOLDERS[case][2] in _error_line(r.stderr)
    assert r.stdout == ""
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written or removed


@pytest.mark.parametrize("case", ["truncated gzip stream", "label 10 (> 9)", "symlink loop"])
def test_bad_data_file_in_a_real_process_has_no_traceback(tmp_path, case):
    folder = _broken_folder(tmp_path, case)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_cnn",
            "train",
            "--data-dir",
            str(folder),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert BAD_FOLDERS[case][2] in _error_line(r.stderr)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_lying_header_fails_fast_without_allocating_it(tmp_path):
    folder = _broken_folder(tmp_path, "header claims 2^31 images (gzip)")
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="truncated or corrupt"):
            read_idx(folder / TRAIN_IMG)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_gzip_header_within_deflate_bound_but_short_body_reads_only_what_exists(tmp_path):
    # 2 MB of random bytes stay ~2 MB gzipped, so a header claiming 1 GiB passes the deflate-ratio
    # bound (2 MB x 1032); the short stream must be reported without allocating the 1 GiB
    body = np.random.default_rng(0).integers(0, 256, 2_000_000, dtype=np.uint8).tobytes()
    (tmp_path / "x.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 2**30) + body))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="only 2,000,000 bytes follow"):
            read_idx(tmp_path / "x.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_dimension_product_overflowing_int64_is_rejected(tmp_path):
    # 65536^4 = 2^64 wraps to 0 in int64 arithmetic: the declared size must not
    (tmp_path / "x.idx").write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", *[65536] * 4))
    with pytest.raises(DataError, match="impossible shape"):
        read_idx(tmp_path / "x.idx")
    # found by benchmarks/fuzz.py: an empty array (a 0 dimension) whose other dimensions numpy
    # cannot represent made reshape raise ValueError
    (tmp_path / "y.idx").write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", 0, 2, 2**31, 2**31))
    with pytest.raises(DataError, match=r"impossible shape \(0, 2, 2147483648, 2147483648\)"):
        read_idx(tmp_path / "y.idx")
    (tmp_path / "z.idx").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 2**31, 28))
    assert read_idx(tmp_path / "z.idx").shape == (0, 2**31, 28)  # empty and representable: fine


def _without_root_file_powers() -> list[str]:
    """Command prefix that runs a program the way a normal user meets permissions: as root, drop
    the capabilities that let root read anything (``setpriv``, util-linux); empty for non-root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, who reads chmod-000 files, and setpriv (util-linux) is absent")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_unreadable_file_and_folder(tmp_path):
    """chmod 000 on one file, then on the whole folder: a one-line message saying what to chmod.
    Tests run as root here: the CLI then runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH."""
    folder = write_dataset(tmp_path / "data")
    prefix = _without_root_file_powers()
    cmd = [*prefix, sys.executable, "-m", "mnist_cnn", "data", "verify", "--data-dir", str(folder)]
    try:
        (folder / TRAIN_IMG).chmod(0)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip() == f"error: {folder / TRAIN_IMG}: permission denied; make the file readable (chmod a+r)"
        folder.chmod(0)  # the folder itself: not even searchable
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        # click's own --data-dir check sees it first
        assert r.stderr.strip() == (
            f"error: Invalid value for '--data-dir': Path {str(folder)!r} is not readable. "
            "(see `mnist-cnn data verify --help`)"
        )
        # the library, called without click in front of it
        code = f"from mnist_cnn.data import load_dataset\nload_dataset('mnist', {str(folder)!r})"
        r = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        last = r.stderr.strip().splitlines()[-1]
        assert last == f"mnist_cnn.errors.DataError: {folder}: permission denied; make the folder readable (chmod a+rx)"
    finally:
        folder.chmod(0o755)
        (folder / TRAIN_IMG).chmod(0o644)


# --------------------------------------------------------------------------- checksums


def test_checksum_that_differs_warns_once_per_file_and_is_used(tiny_data, capsys):
    ds = d.load_dataset("mnist", tiny_data)
    err = capsys.readouterr().err
    for name in (TRAIN_IMG, TRAIN_LBL, TEST_IMG, TEST_LBL):
        assert err.count(name) == 1, err
    assert err.count("warning: ") == 4 and "differs from the official" in err
    assert len(ds.train_images) == 600  # not refused
    d.clear_cache()
    d.load_dataset("mnist", tiny_data)
    d.verify("mnist", tiny_data)
    assert capsys.readouterr().err == ""  # not repeated in the same process


def test_data_verify_reports_checksum_difference_and_exits_zero(tiny_data):
    r = run_cli("data", "verify", "--data-dir", str(tiny_data))
    assert r.exit_code == 0, r.output
    assert r.stdout.count("differs from official (format OK)") == 4
    assert "600 images" in r.stdout and "200 labels" in r.stdout


def test_official_checksum_gives_no_warning(tiny_data, monkeypatch, capsys):
    files = {s: sha256_file(tiny_data / f.name) for s, f in ((f, f) for f in d.DATASETS["mnist"].all_files())}
    spec = d.DATASETS["mnist"]
    patched = {split: tuple(replace(f, sha256=files[f]) for f in pair) for split, pair in spec.files.items()}
    monkeypatch.setitem(d.DATASETS, "mnist", replace(spec, files=patched))
    rows = d.verify("mnist", tiny_data)
    assert all(r["official"] for r in rows) and capsys.readouterr().err == ""


# --------------------------------------------------------------------------- resolution order


def test_data_dir_argument_wins_over_env_and_cache(tmp_path, monkeypatch):
    a, b = write_dataset(tmp_path / "a"), write_dataset(tmp_path / "b")
    cache = write_dataset(d.cache_dir("mnist"))
    monkeypatch.setenv(d.ENV_DATA_DIR, str(b))
    assert d.resolve_data_dir("mnist", a) == a
    assert d.resolve_data_dir("mnist") == b
    monkeypatch.delenv(d.ENV_DATA_DIR)
    assert d.resolve_data_dir("mnist") == cache


def test_env_var_reaches_the_cli(tmp_path, monkeypatch):
    folder = write_dataset(tmp_path / "env")
    monkeypatch.setenv(d.ENV_DATA_DIR, str(folder))
    r = run_cli("data", "info")
    assert r.exit_code == 0 and f"folder    {folder}" in r.stdout


def test_xdg_cache_home_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert d.cache_dir("fashion-mnist") == tmp_path / "xdg" / "mnist-cnn" / "fashion-mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert d.cache_dir("mnist") == tmp_path / "home" / ".cache" / "mnist-cnn" / "mnist"


def test_incomplete_cache_falls_through_to_system_dir_then_error(tmp_path, monkeypatch):
    spec = d.DATASETS["fashion-mnist"]
    system = write_dataset(tmp_path / "usr-share")
    monkeypatch.setitem(d.DATASETS, "fashion-mnist", replace(spec, system_dirs=(str(system),)))
    partial = write_dataset(d.cache_dir("fashion-mnist"))
    (partial / TEST_LBL).unlink()
    assert d.resolve_data_dir("fashion-mnist") == system
    monkeypatch.setitem(d.DATASETS, "fashion-mnist", replace(spec, system_dirs=(str(tmp_path / "none"),)))
    with pytest.raises(DataError) as err:
        d.resolve_data_dir("fashion-mnist")
    msg = str(err.value)
    assert "mnist-cnn data download --dataset fashion-mnist" in msg and "--data-dir" in msg
    assert str(d.cache_dir("fashion-mnist")) in msg


def test_nothing_found_anywhere_through_the_cli():
    r = run_cli("data", "info")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: mnist not found in ") and "mnist-cnn data download" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_given_folder_missing_or_a_file(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist; create it and run `mnist-cnn data download"):
        d.resolve_data_dir("mnist", tmp_path / "nope")
    # an env var naming a missing folder is an error too: no silent fall-back to the cache
    write_dataset(d.cache_dir("mnist"))
    monkeypatch.setenv(d.ENV_DATA_DIR, str(tmp_path / "typo"))
    with pytest.raises(DataError, match="typo: data folder does not exist"):
        d.resolve_data_dir("mnist")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        d.resolve_data_dir("mnist", tmp_path / "file")


def test_missing_file_message_says_where_to_put_it_and_how_to_download(tmp_path):
    folder = _broken_folder(tmp_path, "file missing")
    with pytest.raises(DataError) as err:
        d.resolve_data_dir("mnist", folder)
    msg = str(err.value)
    assert msg.startswith(str(folder / TEST_IMG) + ": file missing")
    assert f"put the official {TEST_IMG} there" in msg and f"--data-dir {folder}" in msg


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError, match="choose one of: mnist, fashion-mnist"):
        d.get_spec("kmnist")


# --------------------------------------------------------------------------- split + normalisation


@pytest.mark.parametrize("n,val_size", [(600, 100), (1000, 37), (5000, 1000)])
def test_split_is_disjoint_complete_stratified_and_seeded(n, val_size):
    labels = np.random.default_rng(n).integers(0, 10, n)
    tr, va = d.train_val_split(labels, val_size, seed=3)
    assert len(va) == val_size and len(tr) == n - val_size
    assert np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).size == n
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)  # sorted, no repeats
    # stratified: each class's share of the validation set matches its share overall (±1 image)
    expected = np.bincount(labels, minlength=10) * val_size / n
    assert np.all(np.abs(np.bincount(labels[va], minlength=10) - expected) <= 1)
    tr2, va2 = d.train_val_split(labels, val_size, seed=3)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert not np.array_equal(va, d.train_val_split(labels, val_size, seed=4)[1])


def test_split_edge_cases():
    labels = np.arange(100) % 10
    tr, va = d.train_val_split(labels, 0, seed=0)
    assert len(tr) == 100 and len(va) == 0
    for bad in (100, 101, -1):
        with pytest.raises(DataError, match="--val-size"):
            d.train_val_split(labels, bad, seed=0)
    # a class with a single example cannot be stratified: falls back to a plain seeded split
    odd = np.array([0] * 50 + [1] * 49 + [2])
    tr, va = d.train_val_split(odd, 10, seed=0)
    assert len(va) == 10 and np.intersect1d(tr, va).size == 0


def test_normalisation_matches_numpy():
    x = np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8)
    mean, std = d.normalisation(x)
    assert mean == pytest.approx((x / 255.0).mean(), rel=1e-12)
    assert std == pytest.approx((x / 255.0).std(), rel=1e-12)
    assert d.normalisation(np.full((3, 28, 28), 7, np.uint8))[1] == 1.0  # blank images: no division by 0


def test_normalisation_comes_from_the_training_split_only(tiny_data):
    import torch

    from mnist_cnn.evaluation.metrics import normalise
    from mnist_cnn.training.config import TrainConfig
    from mnist_cnn.training.device_data import prepare_data

    cfg = TrainConfig(data_dir=str(tiny_data), val_size=100)
    dd = prepare_data(cfg, torch.device("cpu"))
    ds = d.load_dataset("mnist", tiny_data)
    tr, va = d.train_val_split(ds.train_labels, 100, 0)
    assert (dd.mean, dd.std) == d.normalisation(ds.train_images[tr])
    assert (dd.mean, dd.std) != d.normalisation(ds.train_images)  # validation images excluded
    z = normalise(torch.from_numpy(ds.train_images[tr]), dd.mean, dd.std).double()
    assert float(z.mean()) == pytest.approx(0, abs=1e-5) and float(z.std()) == pytest.approx(1, abs=1e-3)


# --------------------------------------------------------------------------- table for the docs


def _message(case: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        folder = _broken_folder(Path(tmp), case)
        try:
            d.load_dataset("mnist", folder)
        except DataError as exc:
            return str(exc).replace(tmp, "$TMP")
        finally:
            d.clear_cache()
    return "(accepted!)"


if __name__ == "__main__":
    print("| bad data file | message (`mnist-cnn data verify`, exit 2) |\n| --- | --- |")
    for name in BAD_FOLDERS:
        print(f"| {name} | `` error: {_message(name)} `` |")  # double backticks: messages quote commands
