"""CPU threads that fit the cores actually free: for training, ``predict`` and ``serve``.

Why: PyTorch's CPU kernels run on OpenMP threads that meet at a barrier after every parallel
region. When another process holds one of the cores, the thread sharing it is descheduled and the
others spin at the barrier until it comes back. With two busy processes beside it on a 2-core box,
one model1 epoch took 60 s with 2 threads, 24 s with 1, and 13 s on the idle machine. So a CPU job:

1. starts reading the load when the command starts (:func:`start_cpu_work`), so the first choice
   needs no pause;
2. counts the cores other processes keep busy (``/proc/stat``, less this process's own CPU time)
   and uses the rest, at least one, within its affinity mask and cgroup CPU quota
   (:func:`choose_threads`, a pure function of those readings);
3. chooses again between epochs (:class:`AdaptiveThreads`).

OpenMP's own waiting (spin, then sleep) is left as it is: with threads matched to the free cores no
thread waits for a descheduled sibling, and passive waiting measured 1.65x slower per model1 epoch on
the idle machine (benchmarks/contention.py). ``--threads N`` (or ``MNIST_CNN_THREADS=N``) wins. The
thread count changes the order of a run's floating-point sums, so pin it for bit-for-bit reproducible
training.

Only the standard library here: this module is imported before torch.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_cnn.errors import ConfigError

ENV_THREADS = "MNIST_CNN_THREADS"  # like --threads N, for every command (CI, reproducible runs)
MIN_SAMPLE_S = 0.2  # the shortest load reading: 20 clock ticks per core at the usual 100 Hz
MAX_WINDOW_S = 120.0  # a reading that started longer ago says little about now: measure afresh
HINT = "--threads to override"

# How OpenMP threads wait, set before OpenMP loads. GNU libgomp (PyTorch's Linux wheels) and LLVM's
# libomp read OMP_WAIT_POLICY (unset, libgomp spins ~300,000 times, a few ms, before it sleeps);
# Intel's libiomp sleeps after KMP_BLOCKTIME ms (default 200).
WAIT_VARS = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")  # how OpenMP threads wait: the user's, untouched


@dataclass(frozen=True)
class CpuLoad:
    """What the thread choice depends on: a reading of this machine."""

    usable: int  # cores this process may run on (its affinity mask)
    quota: float | None = None  # the cgroup's CPU limit, in cores (None: no limit)
    busy_elsewhere: float | None = None  # cores' worth of work by other processes (None: unknown)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    usable: int
    reason: str

    @property
    def line(self) -> str:
        """``threads: 1 of 2 (1 core busy elsewhere; --threads to override)``."""
        return f"threads: {self.threads} of {self.usable} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "usable": self.usable, "reason": self.reason}


def choose_threads(
    load: CpuLoad, override: int | None = None, *, processes: int = 1, source: str | None = None
) -> ThreadChoice:
    """Threads for this process: ``override`` as given; else the cores other processes leave free
    (at least one), within the CPU quota and, when ``processes`` local processes split the cores
    (multi-process training), this process's share. ``source`` names where an override came from."""
    if override is not None:
        return ThreadChoice(override, load.usable, source or f"--threads {override}")
    cap, why = load.usable, []
    if load.quota is not None and math.floor(load.quota) < cap:
        cap = max(1, math.floor(load.quota))  # a thread beyond the quota is only throttled
        why.append(f"CPU quota {load.quota:g} cores")
    if processes > 1:
        cap = max(1, cap // processes)
        why.append(f"{processes} processes share the cores")
    threads = cap
    if load.busy_elsewhere is not None:
        taken = math.floor(load.busy_elsewhere + 0.5)  # a core is taken when others use half of it or more
        if load.usable - taken < threads:
            threads = max(1, load.usable - taken)
            why.append(f"{taken} core{'' if taken == 1 else 's'} busy elsewhere")
    elif processes == 1:
        why.append("load unknown")
    return ThreadChoice(threads, load.usable, "; ".join([*(why or ["all cores free"]), HINT]))


# --------------------------------------------------------------------------- readings


def usable_cpus() -> set[int]:
    """The CPU ids this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` (``"150000 100000"`` or ``"max 100000"``) in cores; None: no limit."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return int(parts[0]) / int(parts[1])


def _cpu_max(path: Path) -> float | None:
    try:
        return parse_cpu_max(path.read_text())
    except (OSError, ValueError):
        return None


def cpu_quota(root: Path = Path("/sys/fs/cgroup"), cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU limit of this process's cgroup, in cores: the tightest v2 ``cpu.max`` from its cgroup
    up to the root, else the v1 CFS quota; None where there is none (or no cgroups)."""
    try:
        lines = cgroup.read_text().splitlines()
    except OSError:
        lines = []
    v2 = next((line[3:] for line in lines if line.startswith("0::")), None)
    if v2 is not None:
        folder, limits = root / v2.strip("/"), []
        while True:
            limits.append(_cpu_max(folder / "cpu.max"))
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
        found = [q for q in limits if q is not None]
        if found:
            return min(found)
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def busy_seconds(stat: str, cpus: set[int], tick: float) -> float:
    """CPU-seconds spent busy so far on ``cpus``, from ``/proc/stat``'s per-core lines (user, nice,
    system, irq, softirq and steal: time another guest of the host took counts as busy)."""
    total = 0
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        v = [int(x) for x in rest.split()[:8]] + [0] * 8
        total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return total * tick


@dataclass(frozen=True)
class Snapshot:
    wall: float  # time.monotonic()
    busy: float | None  # busy CPU-seconds of every process on the usable cores (None: no /proc/stat)
    own: float  # this process's CPU-seconds, all its threads


def snapshot(cpus: set[int]) -> Snapshot:
    try:
        busy: float | None = busy_seconds(Path("/proc/stat").read_text(), cpus, 1 / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):  # not Linux, or no /proc
        busy = None
    return Snapshot(time.monotonic(), busy, time.process_time())


class LoadMeter:
    """How many cores other processes kept busy since the previous reading (at least
    ``MIN_SAMPLE_S`` ago; it waits for the rest). This process's own CPU time is taken out, so a
    reading across its own busy epoch still counts only the others."""

    def __init__(self) -> None:
        self.cpus = usable_cpus()
        self.last = snapshot(self.cpus)

    def read(self) -> CpuLoad:
        if time.monotonic() - self.last.wall > MAX_WINDOW_S:
            self.last = snapshot(self.cpus)
        wait = MIN_SAMPLE_S - (time.monotonic() - self.last.wall)
        if wait > 0:
            time.sleep(wait)
        now, before = snapshot(self.cpus), self.last
        self.last = now
        busy = None
        if now.busy is not None and before.busy is not None:
            others = (now.busy - before.busy) - (now.own - before.own)
            busy = max(0.0, others) / max(now.wall - before.wall, 1e-9)
        return CpuLoad(len(self.cpus), cpu_quota(), busy)


_meter: LoadMeter | None = None


def process_meter() -> LoadMeter:
    """The process's one load meter (started by :func:`start_cpu_work`, or on first use)."""
    global _meter
    if _meter is None:
        _meter = LoadMeter()
    return _meter


# --------------------------------------------------------------------------- choosing and applying


def start_cpu_work() -> bool:
    """Call first in a CPU-heavy command: the load reading starts, so the first choice (a command's
    start-up later) needs no pause. Returns whether torch was still unloaded."""
    process_meter()
    return "torch" not in sys.modules


def requested_threads(threads: int | None, usable: int) -> tuple[int | None, str | None]:
    """``--threads`` when given, else ``MNIST_CNN_THREADS`` when set (checked), with its label."""
    if threads is not None:
        return threads, f"--threads {threads}"
    raw = os.environ.get(ENV_THREADS, "").strip()
    if not raw:
        return None, None
    if not raw.isdigit() or not 1 <= int(raw) <= usable:
        raise ConfigError(f"{ENV_THREADS}={raw}: must be a whole number between 1 and {usable} (the CPUs here)")
    return int(raw), f"{ENV_THREADS}={raw}"


def apply_threads(choice: ThreadChoice) -> None:
    """PyTorch's intra-op threads, when torch is loaded (an ONNX-only ``predict`` never loads it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)


class AdaptiveThreads:
    """The thread count of a CPU job: chosen (and applied) when made, chosen again by
    :meth:`recheck` between the job's phases (training: before each epoch). A count that was asked
    for, or a multi-process run's share, stays fixed."""

    def __init__(self, threads: int | None = None, *, processes: int = 1) -> None:
        self.override, self.source = requested_threads(threads, len(usable_cpus()))
        self.processes = processes
        self.choice = self._choose()

    @property
    def fixed(self) -> bool:
        # the local processes of a multi-process run start and step together: each would read
        # the others as load, so they split the cores evenly instead
        return self.override is not None or self.processes > 1

    def _choose(self) -> ThreadChoice:
        load = CpuLoad(len(usable_cpus()), cpu_quota()) if self.fixed else process_meter().read()
        choice = choose_threads(load, self.override, processes=self.processes, source=self.source)
        apply_threads(choice)
        return choice

    def recheck(self) -> ThreadChoice | None:
        """Choose again from the load since the last choice; the new choice when the count changed."""
        if self.fixed:
            return None
        before, self.choice = self.choice.threads, self._choose()
        return self.choice if self.choice.threads != before else None


def use_free_cores(threads: int | None = None) -> ThreadChoice:
    """One choice for a short job (``predict``, ``serve``'s model): chosen, applied, returned
    (``.line`` for the progress line, ``.threads`` for ONNX Runtime or a worker pool)."""
    return AdaptiveThreads(threads).choice


def cpu_kind(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU's model name and whether it has native bf16 (AVX512-BF16 or AMX), for result files."""
    name, flags = "", set[str]()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "model": name or platform.processor() or platform.machine(),
        "cores": len(usable_cpus()),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
    }
