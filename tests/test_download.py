"""Download against a local HTTP server on 127.0.0.1 serving files the test makes: good files,
wrong checksum, 404 on the first mirror, idempotence, a transfer cut mid-file, a process killed
mid-file. No network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mnist_cnn import data as d
from mnist_cnn.artifacts.files import sha256_file
from mnist_cnn.errors import DownloadError
from tests.helpers import TINY_FLAGS, run_cli, serve_files

# the `server` (a local mirror on 127.0.0.1) and `files` (the tiny data set's four files) fixtures are in conftest.py

NAMES = [f.name for f in d.DATASETS["mnist"].all_files()]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_files_download_verify_and_load(server, files, tmp_path):
    url, mirror = server("a")
    serve_files(mirror, files)
    out = d.download("mnist", tmp_path / "dl", mirrors=(url,), timeout=5)
    assert _leftovers(out) == sorted(NAMES)  # no temporary files left
    assert all((out / n).read_bytes() == files[n] for n in NAMES)
    ds = d.load_dataset("mnist", out)
    assert ds.train_images.shape == (600, 28, 28) and ds.checksums == {n: sha256_file(out / n) for n in NAMES}


def test_default_folder_is_the_user_cache(server, files):
    url, mirror = server("a")
    serve_files(mirror, files)
    assert d.download("mnist", mirrors=(url,), timeout=5) == d.cache_dir("mnist")
    assert d.resolve_data_dir("mnist") == d.cache_dir("mnist")


def test_second_run_is_idempotent_and_makes_no_request(server, files, tmp_path):
    url, mirror = server("a")
    serve_files(mirror, files)
    d.download("mnist", tmp_path / "dl", mirrors=(url,), timeout=5)
    assert sorted(mirror.requests) == sorted(NAMES)
    mtimes = {n: (tmp_path / "dl" / n).stat().st_mtime_ns for n in NAMES}
    mirror.requests.clear()
    d.download("mnist", tmp_path / "dl", mirrors=(url,), timeout=5)
    assert mirror.requests == []
    assert mtimes == {n: (tmp_path / "dl" / n).stat().st_mtime_ns for n in NAMES}


def test_only_missing_or_corrupt_files_are_fetched_again(server, files, tmp_path):
    url, mirror = server("a")
    serve_files(mirror, files)
    out = d.download("mnist", tmp_path / "dl", mirrors=(url,), timeout=5)
    (out / NAMES[0]).write_bytes(b"corrupt")
    (out / NAMES[3]).unlink()
    mirror.requests.clear()
    d.download("mnist", out, mirrors=(url,), timeout=5)
    assert sorted(mirror.requests) == sorted([NAMES[0], NAMES[3]])
    assert (out / NAMES[0]).read_bytes() == files[NAMES[0]]


def test_wrong_checksum_is_refused_and_nothing_is_kept(server, files, tmp_path):
    url, mirror = server("a")
    serve_files(mirror, {n: b[:-1] + bytes([b[-1] ^ 1]) for n, b in files.items()})  # one bit flipped
    with pytest.raises(DownloadError) as err:
        d.download("mnist", tmp_path / "dl", mirrors=(url,), timeout=5)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{NAMES[0]}: every mirror failed")
    assert "sha256" in msg and "!= official" in msg and "put the file in" in msg
    assert _leftovers(tmp_path / "dl") == []


def test_404_on_first_mirror_then_second_mirror_succeeds(server, files, tmp_path):
    bad_url, bad = server("bad")
    good_url, good = server("good")
    serve_files(good, files)
    out = d.download("mnist", tmp_path / "dl", mirrors=(bad_url, good_url), timeout=5)
    assert bad.requests == NAMES and good.requests == NAMES  # each file: first mirror first
    assert _leftovers(out) == sorted(NAMES)


def test_every_mirror_failing_lists_each_failure(server, files, tmp_path):
    a_url, _ = server("a")
    b_url, b = server("b")
    b.routes[NAMES[0]] = (500, b"oops", "full")
    with pytest.raises(DownloadError) as err:
        d.download("mnist", tmp_path / "dl", mirrors=(a_url, b_url, "not-a-url"), timeout=5)
    msg = str(err.value)
    assert f"{a_url}{NAMES[0]}: Not Found" in msg and f"{b_url}{NAMES[0]}: Internal Server Error" in msg
    assert "not-a-url" in msg and "check your connection" in msg


def test_transfer_cut_mid_file_leaves_nothing_and_next_run_starts_clean(server, files, tmp_path):
    url, mirror = server("a")
    serve_files(mirror, files, mode="cut")
    with pytest.raises(DownloadError, match=r"transfer interrupted after [\d,]+ of [\d,]+ bytes"):
        d.download("mnist", tmp_path / "dl", mirrors=(url,), timeout=5)
    assert _leftovers(tmp_path / "dl") == []
    serve_files(mirror, files)
    out = d.download("mnist", tmp_path / "dl", mirrors=(url,), timeout=5)
    assert all((out / n).read_bytes() == files[n] for n in NAMES)


def test_stalled_transfer_times_out_cleanly(server, files, tmp_path):
    url, mirror = server("a")
    serve_files(mirror, files, mode="stall")
    with pytest.raises(DownloadError, match="timed out"):
        d.download("mnist", tmp_path / "dl", mirrors=(url,), timeout=0.5)
    assert _leftovers(tmp_path / "dl") == []


def test_download_killed_mid_file_leaves_no_file_under_its_name(server, files, tmp_path):
    """SIGKILL while the body is arriving: the real name never exists; the orphaned temporary file
    is removed by the next run, which downloads a complete, verified file."""
    url, mirror = server("a")
    serve_files(mirror, files, mode="stall")  # half of the first file, then nothing: the kill lands mid-file
    folder = tmp_path / "dl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_cnn",
            "data",
            "download",
            "--data-dir",
            str(folder),
            "--mirror",
            url,
            "--timeout",
            "60",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    half = len(files[NAMES[0]]) // 2
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size >= half for p in folder.glob(".*.tmp")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    partial = list(folder.glob(".*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size == half, _leftovers(folder)
    assert not (folder / NAMES[0]).exists()
    old = time.time() - 3600  # abandoned an hour ago
    os.utime(partial[0], (old, old))
    serve_files(mirror, files)
    d.download("mnist", folder, mirrors=(url,), timeout=5)
    assert _leftovers(folder) == sorted(NAMES)
    assert all((folder / n).read_bytes() == files[n] for n in NAMES)


def test_a_recent_partial_file_is_left_to_its_writer(server, files, tmp_path):
    url, mirror = server("a")
    serve_files(mirror, files)
    folder = tmp_path / "dl"
    folder.mkdir()
    live = folder / f".{NAMES[0]}.abc123.tmp"  # another process's download in progress
    live.write_bytes(b"partial")
    d.download("mnist", folder, mirrors=(url,), timeout=5)
    assert live.exists() and (folder / NAMES[0]).read_bytes() == files[NAMES[0]]


def test_cli_download_then_verify(server, files, tmp_path):
    url, mirror = server("a")
    serve_files(mirror, files)
    folder = tmp_path / "dl"
    r = run_cli("data", "download", "--data-dir", str(folder), "--mirror", url, "--timeout", "5")
    assert r.exit_code == 0, r.output
    assert f"mnist ready in {folder}" in r.stdout and r.stderr.count("downloaded ") == 4
    r = run_cli("data", "verify", "--data-dir", str(folder))
    assert r.exit_code == 0 and r.stdout.count("  official") == 4 and r.stderr == ""


def test_cli_download_failure_is_one_line(server, files, tmp_path):
    url, _ = server("empty")
    r = run_cli("data", "download", "--data-dir", str(tmp_path / "dl"), "--mirror", url, "--timeout", "5")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith(f"error: {NAMES[0]}: every mirror failed") and r.stderr.count("\n") == 1


def test_train_download_flag_fetches_missing_data(server, files, tmp_path, monkeypatch):
    url, mirror = server("a")
    serve_files(mirror, files)
    spec = d.DATASETS["mnist"]
    monkeypatch.setitem(d.DATASETS, "mnist", replace(spec, mirrors=(url,)))
    r = run_cli(
        "train",
        "--download",
        *TINY_FLAGS,
        "--train-subset",
        "200",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    assert sorted(mirror.requests) == sorted(NAMES)
    assert _leftovers(d.cache_dir("mnist")) == sorted(NAMES)
    assert np.isfinite(float(r.stdout.split("test accuracy ")[1].split("%")[0]))
