"""The two-worker search test against a throwaway PostgreSQL server started on 127.0.0.1.

Needs Debian's `postgresql` package (scripts/system-deps.sh installs it) and psycopg2; skipped
with the reason when the server binaries are missing or the server cannot be started.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import check_two_workers_exact, load_trials

pytestmark = pytest.mark.slow  # starts a PostgreSQL server and two spawned search workers

pytest.importorskip("optuna", reason="search needs optuna (pip install 'mnist-cnn[search]')")
pytest.importorskip("psycopg2", reason="PostgreSQL storage needs psycopg2 (pip install psycopg2-binary)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user() -> tuple[list[str], str | None]:
    """PostgreSQL refuses to run as root: run its commands as `postgres` (or `nobody`) then."""
    if os.geteuid() != 0:
        return [], None
    if not shutil.which("runuser"):
        pytest.skip("running as root and `runuser` is missing: cannot start PostgreSQL as another user")
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
            return ["runuser", "-u", user, "--"], user
        except KeyError:
            continue
    pytest.skip("running as root and there is no `postgres` or `nobody` user to run PostgreSQL as")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        pytest.skip(
            "PostgreSQL server not installed (/usr/lib/postgresql/*/bin/initdb); "
            "apt-get install postgresql or run scripts/system-deps.sh"
        )
    bindir = Path(initdbs[-1]).parent
    prefix, user = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="mnist-cnn-pg-"))  # under /tmp: reachable by the server user
    if user:
        shutil.chown(root, user)
    data, port = root / "data", _free_port()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], check=False, capture_output=True, text=True, timeout=120)

    init = run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    started = (
        init.returncode == 0
        and run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ).returncode
        == 0
    )
    if not started:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else init.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL server: {(log.strip().splitlines() or ['?'])[-1]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study_and_finish_exactly_n(postgres_url: str, tiny_data: Path) -> None:
    trials = check_two_workers_exact(postgres_url, tiny_data, n=6)
    assert len(load_trials(postgres_url)) == len(trials)
