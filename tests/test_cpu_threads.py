"""CPU threads that fit the free cores: the choice from (fake) load readings, the readings
themselves, the progress line, and the choice made again between epochs. No timings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mnist_cnn.cpu as cpu
from mnist_cnn.cpu import CpuLoad, LoadMeter, Snapshot, ThreadChoice, choose_threads
from mnist_cnn.errors import ConfigError
from mnist_cnn.training.device import use_bf16
from tests.helpers import tiny_run

HINT = "--threads to override"


@pytest.fixture(autouse=True)
def _keep_torch_threads(monkeypatch):
    """The tests apply their choices to torch: put the suite's count back, and ignore a pinned count."""
    monkeypatch.delenv(cpu.ENV_THREADS, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class FakeMeter:
    """Stands in for the process's load meter: one reading per call, the last one repeated."""

    def __init__(self, *loads: CpuLoad):
        self.loads = list(loads)
        self.reads = 0

    def read(self) -> CpuLoad:
        self.reads += 1
        return self.loads.pop(0) if len(self.loads) > 1 else self.loads[0]


# --------------------------------------------------------------------------- the choice


@pytest.mark.parametrize(
    "busy, threads, reason",
    [
        (0.0, 2, f"all cores free; {HINT}"),
        (0.3, 2, f"all cores free; {HINT}"),  # a shell now and then takes no core
        (0.6, 1, f"1 core busy elsewhere; {HINT}"),
        (1.0, 1, f"1 core busy elsewhere; {HINT}"),
        (2.0, 1, f"2 cores busy elsewhere; {HINT}"),  # never fewer than one
        (3.5, 1, f"4 cores busy elsewhere; {HINT}"),
    ],
)
def test_threads_are_the_cores_others_leave_free(busy: float, threads: int, reason: str):
    choice = choose_threads(CpuLoad(usable=2, busy_elsewhere=busy))
    assert (choice.threads, choice.usable, choice.reason) == (threads, 2, reason)


def test_the_line_says_what_was_chosen_and_why():
    choice = choose_threads(CpuLoad(usable=2, busy_elsewhere=1.0))
    assert choice.line == "threads: 1 of 2 (1 core busy elsewhere; --threads to override)"


def test_the_affinity_mask_bounds_the_count():
    """usable is the affinity mask: a process pinned to one core of many uses one thread."""
    assert choose_threads(CpuLoad(usable=1, busy_elsewhere=0.0)).threads == 1
    assert choose_threads(CpuLoad(usable=8, busy_elsewhere=3.0)).threads == 5


def test_a_cpu_quota_caps_the_count():
    choice = choose_threads(CpuLoad(usable=8, quota=2.5, busy_elsewhere=0.0))
    assert choice.threads == 2 and choice.reason == f"CPU quota 2.5 cores; {HINT}"
    assert choose_threads(CpuLoad(usable=8, quota=0.5, busy_elsewhere=0.0)).threads == 1
    # a quota above the cores changes nothing; busy cores beyond what the quota leaves are not named
    assert choose_threads(CpuLoad(usable=2, quota=4.0, busy_elsewhere=0.0)).reason == f"all cores free; {HINT}"
    busy = choose_threads(CpuLoad(usable=8, quota=2.0, busy_elsewhere=3.0))
    assert busy.threads == 2 and "busy" not in busy.reason


def test_an_override_wins_whatever_the_load():
    choice = choose_threads(CpuLoad(usable=2, busy_elsewhere=2.0), 2)
    assert (choice.threads, choice.reason) == (2, "--threads 2")
    env = choose_threads(CpuLoad(usable=2, busy_elsewhere=0.0), 1, source="MNIST_CNN_THREADS=1")
    assert env.line == "threads: 1 of 2 (MNIST_CNN_THREADS=1)"


def test_local_processes_split_the_cores_and_an_unknown_load_is_said():
    shared = choose_threads(CpuLoad(usable=4), processes=2)
    assert (shared.threads, shared.reason) == (2, f"2 processes share the cores; {HINT}")
    unknown = choose_threads(CpuLoad(usable=4))
    assert (unknown.threads, unknown.reason) == (4, f"load unknown; {HINT}")


def test_the_env_variable_pins_the_count_and_a_bad_value_is_one_clear_line(monkeypatch):
    assert cpu.requested_threads(3, 4) == (3, "--threads 3")
    assert cpu.requested_threads(None, 4) == (None, None)
    monkeypatch.setenv(cpu.ENV_THREADS, "2")
    assert cpu.requested_threads(None, 4) == (2, "MNIST_CNN_THREADS=2")
    assert cpu.requested_threads(1, 4) == (1, "--threads 1")  # the flag wins
    for bad in ("0", "five", "9"):
        monkeypatch.setenv(cpu.ENV_THREADS, bad)
        with pytest.raises(ConfigError, match=f"MNIST_CNN_THREADS={bad}: must be a whole number between 1 and 4"):
            cpu.requested_threads(None, 4)


# --------------------------------------------------------------------------- the readings


STAT = """cpu  500 0 100 9000 0 0 0 0 0 0
cpu0 100 10 20 4000 30 4 5 6 0 0
cpu1 300 0 40 4000 0 0 0 0 0 0
cpu2 7 0 0 4000 0 0 0 0 0 0
intr 123 4 5
ctxt 999
"""


def test_busy_time_is_read_per_usable_core():
    # user + nice + system + irq + softirq + steal; idle and iowait are not busy
    assert cpu.busy_seconds(STAT, {0}, 0.01) == pytest.approx((100 + 10 + 20 + 4 + 5 + 6) * 0.01)
    assert cpu.busy_seconds(STAT, {0, 1}, 0.01) == pytest.approx((145 + 340) * 0.01)
    assert cpu.busy_seconds(STAT, {2, 7}, 1.0) == 7  # a core outside the mask is not read


def test_the_meter_counts_only_other_processes(monkeypatch):
    """30 busy CPU-seconds on the usable cores in 10 s, 12 of them this process's own: 1.8 cores."""
    now = time.monotonic()
    shots = iter([Snapshot(now - 10, 100.0, 5.0), Snapshot(now, 130.0, 17.0)])
    monkeypatch.setattr(cpu, "snapshot", lambda cpus: next(shots))
    monkeypatch.setattr(cpu, "cpu_quota", lambda: None)
    meter = LoadMeter()
    assert meter.read().busy_elsewhere == pytest.approx(1.8, abs=0.01)
    unknown = iter([Snapshot(now - 1, None, 0.0), Snapshot(now, None, 0.5)])
    monkeypatch.setattr(cpu, "snapshot", lambda cpus: next(unknown))
    assert LoadMeter().read().busy_elsewhere is None


def test_this_machine_gives_a_reading():
    load = LoadMeter().read()
    assert load.usable == len(cpu.usable_cpus()) >= 1
    if Path("/proc/stat").exists():
        assert load.busy_elsewhere is not None and load.busy_elsewhere >= 0


@pytest.mark.parametrize(
    "text, cores", [("max 100000", None), ("150000 100000", 1.5), ("200000 100000\n", 2.0), ("", None)]
)
def test_cgroup_v2_cpu_max(text: str, cores: float | None):
    assert cpu.parse_cpu_max(text) == cores


def test_the_tightest_cgroup_quota_on_the_path_counts(tmp_path: Path):
    root, own = tmp_path / "cg", tmp_path / "cgroup"
    (root / "box" / "job").mkdir(parents=True)
    own.write_text("0::/box/job\n")
    (root / "cpu.max").write_text("max 100000\n")
    (root / "box" / "cpu.max").write_text("150000 100000\n")
    (root / "box" / "job" / "cpu.max").write_text("max 100000\n")
    assert cpu.cpu_quota(root, own) == 1.5
    (root / "box" / "cpu.max").write_text("max 100000\n")
    assert cpu.cpu_quota(root, own) is None
    # cgroup v1: the CFS quota
    v1, none = tmp_path / "v1", tmp_path / "none"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    none.write_text("1:cpu:/\n")
    assert cpu.cpu_quota(v1, none) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu.cpu_quota(v1, none) is None
    assert cpu.cpu_quota(tmp_path / "absent", tmp_path / "absent") is None


def test_cpu_kind_names_the_model_and_native_bf16(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512_bf16\n")
    kind = cpu.cpu_kind(info)
    assert kind["model"] == "Test CPU 9000" and kind["avx512_bf16"] and not kind["amx_bf16"]


# --------------------------------------------------------------------------- waiting and applying


def test_openmp_waiting_is_left_alone(monkeypatch):
    """Passive waiting cost 1.65x per epoch on the idle machine: start_cpu_work only starts the meter."""
    for key in cpu.WAIT_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(cpu, "_meter", None)
    assert cpu.start_cpu_work() is False  # torch is loaded in this process
    assert not any(key in os.environ for key in cpu.WAIT_VARS)
    assert cpu._meter is not None


def test_the_choice_is_applied_to_torch(monkeypatch):
    monkeypatch.setattr(cpu, "process_meter", lambda: FakeMeter(CpuLoad(usable=2, busy_elsewhere=1.0)))
    torch.set_num_threads(2)
    choice = cpu.use_free_cores()
    assert choice.threads == 1 and torch.get_num_threads() == 1
    assert cpu.use_free_cores(2).threads == 2 and torch.get_num_threads() == 2


TRAIN_PROBE = """
import sys
import mnist_cnn.cpu as cpu
seen = []
real = cpu.start_cpu_work
cpu.start_cpu_work = lambda: seen.append("torch" in sys.modules) or real()
from mnist_cnn.cli import main
try:
    main(["train", "--data-dir", sys.argv[1], "--threads", "1"])
except SystemExit:
    pass
import os
print(seen, os.environ.get("OMP_WAIT_POLICY"))
"""


def test_train_starts_the_load_reading_before_torch_loads(tmp_path: Path):
    """`train` starts the meter first (its first choice then needs no pause) and leaves OpenMP's waiting alone."""
    env = {k: v for k, v in os.environ.items() if k not in cpu.WAIT_VARS}
    out = subprocess.run(
        [sys.executable, "-c", TRAIN_PROBE, str(tmp_path / "no-data")], capture_output=True, text=True, env=env
    )
    assert out.stdout.strip().splitlines()[-1] == "[False] None", out.stderr


def test_serve_uses_one_model_thread_unless_asked(monkeypatch):
    from mnist_cnn.cli.serving import model_threads

    usable = len(cpu.usable_cpus())
    assert model_threads(None) == ThreadChoice(1, usable, f"the other cores preprocess; {HINT}")
    assert model_threads(1).reason == "--threads 1"
    monkeypatch.setenv(cpu.ENV_THREADS, "1")
    assert model_threads(None).reason == "MNIST_CNN_THREADS=1"


# --------------------------------------------------------------------------- training


def test_the_progress_line_says_the_threads_and_precision(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cpu, "process_meter", lambda: FakeMeter(CpuLoad(usable=2, busy_elsewhere=1.0)))
    from mnist_cnn.training.config import TrainConfig
    from mnist_cnn.training.engine import train

    cfg = TrainConfig(data_dir=str(tiny_data), epochs=1, batch_size=64, val_size=100)
    res = train(cfg, tmp_path / "run")
    precision = "bf16" if use_bf16(cfg.precision, torch.device("cpu")) else "fp32"
    line = f"threads: 1 of 2 (1 core busy elsewhere; --threads to override) · precision {precision}"
    assert line in capsys.readouterr().err.splitlines()
    assert res.metrics["threads"] == {"threads": 1, "usable": 2, "reason": f"1 core busy elsewhere; {HINT}"}
    assert res.history[0]["threads"] == 1


def test_the_count_is_chosen_again_before_each_epoch(tiny_data, tmp_path, monkeypatch, capsys):
    """A neighbour starts after epoch 1 and stops after epoch 2: 2, 1, then 2 threads again."""
    meter = FakeMeter(
        CpuLoad(usable=2, busy_elsewhere=0.0),
        CpuLoad(usable=2, busy_elsewhere=1.0),
        CpuLoad(usable=2, busy_elsewhere=0.1),
    )
    monkeypatch.setattr(cpu, "process_meter", lambda: meter)
    calls = []
    real = cpu.choose_threads

    def spy(load: CpuLoad, *a, **k) -> ThreadChoice:
        calls.append(load.busy_elsewhere)
        return real(load, *a, **k)

    monkeypatch.setattr(cpu, "choose_threads", spy)
    res = tiny_run(tmp_path, tiny_data, epochs=3)
    assert calls == [0.0, 1.0, 0.1]  # at the start, then before epochs 2 and 3
    assert [row["threads"] for row in res.history] == [2, 1, 2]
    assert res.metrics["threads"]["threads"] == 2
    # a count that was asked for is never changed (nor measured)
    calls.clear()
    fixed = tiny_run(tmp_path, tiny_data, "fixed", epochs=3, threads=1)
    assert [row["threads"] for row in fixed.history] == [1, 1, 1] and len(calls) == 1 and meter.reads == 3


def test_a_change_is_reported_on_its_epoch(tiny_data, tmp_path, monkeypatch, capsys):
    meter = FakeMeter(CpuLoad(usable=2, busy_elsewhere=0.0), CpuLoad(usable=2, busy_elsewhere=2.0))
    monkeypatch.setattr(cpu, "process_meter", lambda: meter)
    from mnist_cnn.training.config import TrainConfig
    from mnist_cnn.training.engine import train

    train(TrainConfig(data_dir=str(tiny_data), epochs=2, batch_size=64, val_size=100), tmp_path / "run")
    err = capsys.readouterr().err
    assert "epoch 2: threads: 1 of 2 (2 cores busy elsewhere; --threads to override)" in err
