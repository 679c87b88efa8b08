"""Bounded load test of `mnist-cnn serve` on 127.0.0.1: throughput, latency percentiles, errors, RSS.

Starts the server itself (a subprocess on a free 127.0.0.1 port), warms it up, then runs
``--clients`` concurrent keep-alive clients for ``--seconds``, each posting one MNIST test digit
(PNG, multipart field ``file``) after another. Reports requests/s, p50/p90/p99/max client-side
latency, errors, and the server's resident memory (VmRSS) after warm-up and at the end.

Closed loop (the default): each client sends its next request as soon as its last answer arrives,
so the load is whatever the server can take; latency is measured from the actual send.

Open loop (``--rate R``): requests are due on a fixed timetable of R requests/s in total (Poisson
arrivals with seeded random gaps, ``--seed``; or ``--arrivals even``), dealt round-robin to the
``--clients`` connections, the way a drawing page sends predictions while the user draws. Latency
is measured from the *scheduled* send time, so time spent waiting for a busy connection counts (no
coordinated omission). Reports the offered and achieved rates, how many requests were late (their
connection still busy at the scheduled time) and how many were still unsent when ``--seconds`` ran out.

``--soak`` mixes in bad requests (garbage bytes, wrong content type, oversized body, bad JSON,
blank image, wrong pixel shape: about 30%) and checks that every bad one gets its 4xx and every
good one gets exactly the answer the idle server gave for that image beforehand (0 wrong answers).

``--slow-clients N`` adds N hostile connections for the whole run, cycling through four kinds: an
idle connection, half-sent headers, a half-sent body, and a body dripping one byte a second. Each
waits for the server to close it, then connects again; the report counts how many the server cut
off (408/431/503) and how long each was held. The good clients' figures show what they cost.

``--memory-burst N`` measures memory instead of speed: N concurrent uploads of the worst image the
default limits let through (a 4096x4096 RGBA PNG of about 86 KB), the server's peak RSS (VmHWM)
and its RSS once idle again; with ``--held-uploads M``, then M uploads of a body of the maximum
size that stop one byte short and hang, RSS while they are held and after the server cut them off.

``--server-arg`` passes options to `mnist-cnn serve` (``--server-arg=--workers=1``), and the
report names the CPU (its vector extensions decide ONNX Runtime's and oneDNN's kernels; set
``ONEDNN_MAX_CPU_ISA=AVX2`` to make PyTorch use AVX2 kernels on a newer CPU).

    python benchmarks/serve_load.py --model /tmp/serve-model --data-dir ../shared/data/mnist \
        --clients 32 --seconds 60 --out benchmarks/results/serve-load.json
    python benchmarks/serve_load.py --model /tmp/serve-model --soak --seconds 60
    python benchmarks/serve_load.py --model /tmp/serve-model --data-dir ../shared/data/mnist \
        --clients 32 --rate 100 --seconds 60 --out benchmarks/results/serve-load-open.json
    python benchmarks/serve_load.py --model /tmp/default.onnx --soak --slow-clients 16 --seconds 60
    python benchmarks/serve_load.py --model default --memory-burst 16 --held-uploads 150

Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import synthetic_digits, write_json  # noqa: E402

HOST = "127.0.0.1"


@dataclass
class Request:
    kind: str  # "good" or the name of a bad case
    kwargs: dict[str, Any]
    expect_status: int
    index: int = -1  # which good image (for the reference answer)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, good requests answered 200
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # unexpected outcomes by description
    bad_ok: int = 0  # bad requests that got their expected 4xx
    wrong: int = 0  # good requests whose answer differs from the reference
    max_prob_diff: float = 0.0
    correct_label: int = 0  # good answers equal to the data set's label (the model's accuracy)
    sent: int = 0  # requests sent, good and bad
    late: int = 0  # open loop: sent after their scheduled time (the connection was still busy)
    unsent: int = 0  # open loop: due but not sent when --seconds ran out
    scheduled: int = 0  # open loop: requests on the timetable
    server_cpu_s: float = float("nan")  # CPU time the server used during the timed load

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


# --------------------------------------------------------------------------- payloads


def test_digits(data_dir: str | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 [n,28,28] MNIST test digits and labels (synthetic bars when the data is not found)."""
    from mnist_cnn.errors import MnistCnnError

    try:
        from mnist_cnn.data.datasets import load_dataset

        ds = load_dataset("mnist", data_dir)
        return ds.test_images[:n], ds.test_labels[:n], "MNIST test digits"
    except MnistCnnError:
        x, y = synthetic_digits(n, seed=1)
        return x, y, "synthetic digits (MNIST not found)"


def png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a, mode="L").save(buf, format="PNG")
    return buf.getvalue()


PAYLOADS = {  # how a good request carries its 28x28 digit
    "multipart": lambda i, im: {"files": {"file": (f"{i}.png", png(im), "image/png")}},
    "raw": lambda i, im: {"content": png(im), "headers": {"content-type": "image/png"}},
    "pixels": lambda i, im: {"json": {"pixels": im.tolist()}},
}


def good_requests(images: np.ndarray, payload: str) -> list[Request]:
    return [Request("good", PAYLOADS[payload](i, im), 200, i) for i, im in enumerate(images)]


def bad_requests(max_body: int) -> list[Request]:
    blank = png(np.zeros((64, 64), dtype=np.uint8))
    return [
        Request("garbage bytes", {"files": {"file": ("x.png", os.urandom(300), "image/png")}}, 422),
        Request("text/plain body", {"content": b"seven", "headers": {"content-type": "text/plain"}}, 415),
        Request("oversized body", {"content": b"\0" * (max_body + 1), "headers": {"content-type": "image/png"}}, 413),
        Request("bad JSON", {"content": b'{"pixels": [', "headers": {"content-type": "application/json"}}, 400),
        Request("blank image", {"files": {"file": ("blank.png", blank, "image/png")}}, 422),
        Request("wrong pixel shape", {"json": {"pixels": [[0] * 28] * 27}}, 400),
    ]


# --------------------------------------------------------------------------- server process


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "mnist_cnn",
        "serve",
        "--model",
        model,
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"http://{HOST}:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become healthy in 120 s")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- load


def raw_request(host: str, port: int, path: str, kwargs: dict[str, Any]) -> bytes:
    """The exact bytes of one HTTP/1.1 keep-alive request (built once by httpx, replayed many times)."""
    import httpx

    req = httpx.Request("POST", f"http://{host}:{port}{path}", **kwargs)
    body = req.read()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
    head += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() not in ("host", "transfer-encoding")]
    if "content-length" not in req.headers:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: a load generator that spends far less
    CPU per request than a full client library, so the machine's cores go to the server under test."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:  # asyncio sets TCP_NODELAY on TCP connections
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return status, body
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            raise

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def reference_answers(conn: Connection, raws: list[bytes]) -> list[dict[str, Any]]:
    """The idle server's answer for every good image, one at a time: what it must say under load."""
    out = []
    for raw in raws:
        status, body = await conn.send(raw)
        if status != 200:
            raise SystemExit(f"reference request failed: HTTP {status} {body[:200]!r}")
        out.append(json.loads(body))
    return out


@dataclass
class Work:
    """What every client shares: the requests to send, the reference answers and the tally."""

    goods: list[bytes]
    bads: list[tuple[Request, bytes]]
    refs: list[dict[str, Any]] | None
    labels: np.ndarray
    bad_share: float
    tally: Tally = field(default_factory=Tally)


def pick(work: Work, rng: random.Random) -> tuple[Request, bytes]:
    if work.bads and rng.random() < work.bad_share:
        return rng.choice(work.bads)
    i = rng.randrange(len(work.goods))
    return Request("good", {}, 200, i), work.goods[i]


def record(work: Work, req: Request, status: int, body: bytes, dt: float) -> None:
    tally = work.tally
    if status != req.expect_status:
        tally.error(f"{req.kind}: HTTP {status} (expected {req.expect_status})")
        return
    answer = json.loads(body)
    if req.kind != "good":
        tally.bad_ok += 1
        if "error" not in answer:
            tally.error(f"{req.kind}: 4xx without a JSON error")
        return
    tally.ok += 1
    tally.latencies.append(dt)
    tally.correct_label += int(answer["digit"] == int(work.labels[req.index]))
    if work.refs is not None:
        ref = work.refs[req.index]
        diff = float(np.abs(np.subtract(answer["probabilities"], ref["probabilities"])).max())
        tally.max_prob_diff = max(tally.max_prob_diff, diff)
        if answer["digit"] != ref["digit"] or diff > 1e-4:
            tally.wrong += 1


async def exchange(conn: Connection, work: Work, rng: random.Random, t_from: float) -> None:
    """Send one request and record its outcome; its latency runs from ``t_from`` (perf_counter)."""
    req, raw = pick(work, rng)
    work.tally.sent += 1
    try:
        status, body = await conn.send(raw)
    except Exception as exc:  # noqa: BLE001 - any transport failure is an error to count
        work.tally.error(f"{req.kind}: {type(exc).__name__}")
        return
    record(work, req, status, body, time.perf_counter() - t_from)


async def closed_loop(conn: Connection, work: Work, rng: random.Random, stop_at: float) -> None:
    while time.perf_counter() < stop_at:
        await exchange(conn, work, rng, time.perf_counter())


async def open_loop(conn: Connection, work: Work, rng: random.Random, due: list[float], stop_at: float) -> None:
    """Send at the due times (perf_counter); one whose time has passed goes at once and counts as late."""
    for k, t in enumerate(due):
        now = time.perf_counter()
        if now >= stop_at:  # behind schedule when time ran out: the rest are never sent
            work.tally.unsent += len(due) - k
            return
        if now > t:
            work.tally.late += 1
        else:
            await asyncio.sleep(t - now)
        await exchange(conn, work, rng, t)


def timetable(rate: float, seconds: float, arrivals: str, seed: int) -> list[float]:
    """Offsets (s) from the start at which requests are due: ``rate`` per second, Poisson or evenly spaced."""
    rng = random.Random(f"arrivals:{seed}")
    gap = (lambda: rng.expovariate(rate)) if arrivals == "poisson" else (lambda: 1.0 / rate)
    due, t = [], gap()
    while t < seconds:  # bounded: about rate * seconds entries
        due.append(t)
        t += gap()
    return due


SLOW_REQUEST = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
SLOW_KINDS = {  # what a slow client sends before it stops (drip: then one more body byte a second)
    "idle": b"",
    "half-sent headers": SLOW_REQUEST,
    "half-sent body": SLOW_REQUEST + b"Content-Length: 1000000\r\n\r\n" + b"\0" * 4096,
    "dripping body": SLOW_REQUEST + b"Content-Length: 1000000\r\n\r\n",
}


@dataclass
class SlowTally:
    opened: int = 0
    cut_off: dict[str, int] = field(default_factory=dict)  # "kind: status" -> count
    held_s: list[float] = field(default_factory=list)  # how long the server kept each one
    still_open: int = 0  # open when the run ended


async def slow_client(host: str, port: int, kind: str, stop_at: float, tally: SlowTally) -> None:
    """Open a connection, send part of a request and stall (or drip), until the server closes it; again."""
    while time.perf_counter() < stop_at:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        tally.opened += 1
        t0 = time.perf_counter()
        writer.write(SLOW_KINDS[kind])
        answer = asyncio.ensure_future(reader.read())  # until the server closes
        try:
            while not answer.done() and time.perf_counter() < stop_at:
                await asyncio.wait([answer], timeout=1.0)
                if kind == "dripping body" and not answer.done():
                    writer.write(b"\0")
        except OSError:
            pass
        if not answer.done():
            answer.cancel()
            tally.still_open += 1
        else:
            try:
                data = answer.result()
                status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
            except (OSError, IndexError):
                status = "reset"
            key = f"{kind}: {status}"
            tally.cut_off[key] = tally.cut_off.get(key, 0) + 1
            tally.held_s.append(time.perf_counter() - t0)
        writer.close()


def cpu_kind() -> str:
    """The CPU model and the vector extensions that decide which kernels the runtimes use."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} cores, {' '.join(isa) or 'no AVX2'}"


async def run_load(
    host: str,
    port: int,
    args: argparse.Namespace,
    goods: list[Request],
    labels: np.ndarray,
    bads: list[Request],
    pid: int | None,
    slow: SlowTally,
) -> tuple[Tally, float, float]:
    """Warm up, then the timed load; returns the tally, elapsed seconds and the server's RSS after warm-up."""
    good_raw = [raw_request(host, port, "/api/predict", r.kwargs) for r in goods]
    bad_raw = [(r, raw_request(host, port, "/api/predict", r.kwargs)) for r in bads]
    conns = [Connection(host, port) for _ in range(args.clients)]
    refs = await reference_answers(conns[0], good_raw) if args.soak else None
    for raw in good_raw[:50]:  # warm-up: the first requests pay lazy initialisation
        await conns[0].send(raw)
    rss_warm = rss_mib(pid) if pid else float("nan")
    cpu_start = cpu_seconds(pid) if pid else float("nan")
    work = Work(good_raw, bad_raw, refs, labels, args.bad_share if args.soak else 0.0)
    due = timetable(args.rate, args.seconds, args.arrivals, args.seed) if args.rate else []
    t0 = time.perf_counter()
    stop_at = t0 + args.seconds
    rngs = [random.Random(args.seed * 100_003 + i) for i in range(args.clients)]
    loops = [
        open_loop(c, work, rngs[i], [t0 + t for t in due[i :: args.clients]], stop_at)
        if args.rate
        else closed_loop(c, work, rngs[i], stop_at)
        for i, c in enumerate(conns)
    ]
    kinds = list(SLOW_KINDS)
    loops += [slow_client(host, port, kinds[i % len(kinds)], stop_at, slow) for i in range(args.slow_clients)]
    try:  # a hung request must not hang the benchmark
        await asyncio.wait_for(asyncio.gather(*loops), args.seconds + 60)
    except asyncio.TimeoutError:
        raise SystemExit(f"requests still unanswered {args.seconds + 60:.0f} s after the start") from None
    elapsed = time.perf_counter() - t0
    work.tally.server_cpu_s = (cpu_seconds(pid) if pid else float("nan")) - cpu_start
    for c in conns:
        await c.close()
    work.tally.scheduled = len(due)
    return work.tally, elapsed, rss_warm


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def header(args: argparse.Namespace) -> str:
    loop = (
        f"open loop, {args.rate:g} requests/s offered ({args.arrivals}, seed {args.seed})"
        if args.rate
        else "closed loop"
    )
    return (
        f"serve_load: {'soak' if args.soak else 'load'}, {loop}, {args.clients} clients, "
        f"{args.seconds:g} s, model {args.url or args.model}"
        + (f", {args.slow_clients} slow clients" if args.slow_clients else "")
    )


def open_loop_figures(args: argparse.Namespace, tally: Tally, elapsed: float) -> dict[str, Any]:
    return {
        "arrivals": args.arrivals,
        "seed": args.seed,
        "offered_rps": args.rate,
        "achieved_rps": round(tally.sent / elapsed, 1),
        "scheduled": tally.scheduled,
        "sent": tally.sent,
        "late": tally.late,
        "late_pct": round(100 * tally.late / tally.scheduled, 2) if tally.scheduled else None,
        "unsent": tally.unsent,
    }


def status_mib(pid: int, key: str) -> float:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM: the peak RSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worst_png(side: int = 4096) -> bytes:
    """A digit drawn on a transparent side x side RGBA page: ~86 KB as PNG, 64 MiB decoded."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    d = ImageDraw.Draw(img)
    pts = [(side * 0.3, side * 0.2), (side * 0.7, side * 0.2), (side * 0.45, side * 0.8)]
    d.line(pts, fill=(0, 0, 0, 255), width=side // 30)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


async def upload_burst(host: str, port: int, raw: bytes, n: int) -> dict[str, int]:
    """``n`` concurrent requests of ``raw`` on their own connections -> count per status."""

    async def one() -> str:
        conn = Connection(host, port)
        try:
            status, _ = await conn.send(raw)
            return str(status)
        except Exception as exc:  # noqa: BLE001 - count it
            return type(exc).__name__
        finally:
            await conn.close()

    out: dict[str, int] = {}
    for status in await asyncio.gather(*(one() for _ in range(n))):
        out[status] = out.get(status, 0) + 1
    return out


async def held_uploads(host: str, port: int, n: int, size: int, pid: int) -> dict[str, Any]:
    """``n`` uploads of a ``size``-byte body that stop one byte short; RSS while held, and what the server did."""
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\nContent-Length: {size}\r\n\r\n"
    ).encode()

    async def one() -> str:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            return type(exc).__name__
        try:
            writer.write(head + b"\0" * (size - 1))
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 120)  # until the server answers and closes
            return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
        except (OSError, asyncio.TimeoutError) as exc:
            return type(exc).__name__
        finally:
            writer.close()

    t0, peak = time.perf_counter(), 0.0
    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    while not all(t.done() for t in tasks):
        peak = max(peak, status_mib(pid, "VmRSS"))
        await asyncio.sleep(0.2)
    statuses: dict[str, int] = {}
    for t in tasks:
        statuses[t.result()] = statuses.get(t.result(), 0) + 1
    await asyncio.sleep(1.5)  # the server hands memory back once idle
    return {
        "uploads": n,
        "body_bytes": size,
        "answers": statuses,
        "seconds_until_all_answered": round(time.perf_counter() - t0, 1),
        "rss_max_while_held_mib": round(peak, 1),
        "rss_after_mib": round(status_mib(pid, "VmRSS"), 1),
    }


def memory_burst(host: str, port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    png = worst_png()
    raw = raw_request(host, port, "/api/predict", {"files": {"file": ("big.png", png, "image/png")}})
    before = status_mib(pid, "VmRSS")
    statuses = asyncio.run(upload_burst(host, port, raw, args.memory_burst))
    time.sleep(1.5)  # the server hands memory back once idle
    result: dict[str, Any] = {
        "mode": "memory",
        "model": args.model,
        "burst": {
            "uploads": args.memory_burst,
            "image": f"4096x4096 RGBA PNG, {len(png):,} bytes",
            "answers": statuses,
            "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(status_mib(pid, "VmHWM"), 1),
            "rss_after_mib": round(status_mib(pid, "VmRSS"), 1),
        },
        "server_args": args.server_arg,
        "cpu": cpu_kind(),
    }
    if args.held_uploads:
        size = int(args.max_upload_mb * 1024 * 1024)
        result["held_uploads"] = asyncio.run(held_uploads(host, port, args.held_uploads, size, pid))
    return result


def report(result: dict[str, Any], out: str | None) -> None:
    """Print the figures as JSON and, with ``--out``, write them there atomically."""
    print(json.dumps(result, indent=2))
    write_json(out, result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="what `serve --model` gets (run folder, .onnx, default)")
    ap.add_argument("--data-dir", help="MNIST folder for the test digits (synthetic digits if absent)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument(
        "--rate",
        type=float,
        help="open loop: requests/s in total across all clients "
        "(default: closed loop, each client sends again as soon as it is answered)",
    )
    ap.add_argument(
        "--arrivals",
        choices=["poisson", "even"],
        default="poisson",
        help="with --rate: Poisson arrivals (seeded random gaps) or evenly spaced",
    )
    ap.add_argument("--seed", type=int, default=0, help="seeds the arrival gaps and the choice of requests")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--images", type=int, default=500, help="distinct test digits cycled through")
    ap.add_argument(
        "--payload",
        choices=list(PAYLOADS),
        default="multipart",
        help="multipart PNG upload (what the page sends), raw image/png body, or JSON pixels",
    )
    ap.add_argument("--soak", action="store_true", help="mix in bad requests; check every good answer")
    ap.add_argument("--bad-share", type=float, default=0.3, help="fraction of bad requests in --soak")
    ap.add_argument("--slow-clients", type=int, default=0, help="hostile slow connections mixed in (see above)")
    ap.add_argument("--memory-burst", type=int, default=0, help="measure memory: N concurrent worst-case uploads")
    ap.add_argument("--held-uploads", type=int, default=0, help="with --memory-burst: then M held-back full uploads")
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="an option for `mnist-cnn serve` (repeat; --server-arg=--workers=1)",
    )
    ap.add_argument("--max-upload-mb", type=float, default=5.0)
    ap.add_argument("--url", help="use a server already running at http://127.0.0.1:PORT instead of starting one")
    ap.add_argument("--pid", type=int, help="with --url: the server's process id, for its RSS")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    if args.url and urlsplit(args.url).hostname not in (HOST, "localhost"):
        ap.error("--url must point at 127.0.0.1: this load test never leaves the machine")
    if args.clients < 1 or args.seconds <= 0 or (args.rate is not None and args.rate <= 0):
        ap.error("--clients, --seconds and --rate must be positive")
    print(header(args), file=sys.stderr, flush=True)

    images, labels, source = test_digits(args.data_dir, args.images)
    goods = good_requests(images, args.payload)
    max_body = int(args.max_upload_mb * 1024 * 1024)
    bads = bad_requests(max_body) if args.soak else []
    proc = None
    if args.url:
        host, port, pid = HOST, urlsplit(args.url).port or 80, args.pid
    else:
        host, port = HOST, free_port()
        proc = start_server(args.model, port, ["--max-upload-mb", str(args.max_upload_mb), *args.server_arg])
        pid = proc.pid
    if args.memory_burst:
        try:
            if not pid:
                raise SystemExit("--memory-burst needs the server's process id (--pid with --url)")
            result = memory_burst(host, port, pid, args)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:  # still waiting on connections it never closes
                    proc.kill()
        report(result, args.out)
        return
    try:
        model_info = __import__("httpx").get(f"http://{host}:{port}/api/model").json()
        slow = SlowTally()
        tally, elapsed, rss_start = asyncio.run(run_load(host, port, args, goods, labels, bads, pid, slow))
        rss_end = rss_mib(pid) if pid else float("nan")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat_ms = [1000 * x for x in tally.latencies]
    result = {
        "mode": "soak" if args.soak else "load",
        "loop": "open" if args.rate else "closed",
        "rate_rps": args.rate,
        "model": args.url or args.model,
        "model_id": model_info.get("model_id"),
        "backend": model_info.get("backend"),
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "payload": f"{args.payload}, {len(goods)} {source}",
        "latency_from": "scheduled send time" if args.rate else "send time",
        "good_requests_ok": tally.ok,
        "throughput_rps": round(tally.ok / elapsed, 1),
        "server_cpu_ms_per_request": round(1000 * tally.server_cpu_s / max(tally.sent, 1), 3),
        "server_cpu_cores_busy": round(tally.server_cpu_s / elapsed, 2),
        "latency_ms": {
            "p50": round(percentile(lat_ms, 50), 2),
            "p90": round(percentile(lat_ms, 90), 2),
            "p99": round(percentile(lat_ms, 99), 2),
            "max": round(max(lat_ms, default=float("nan")), 2),
            "mean": round(statistics.fmean(lat_ms), 2) if lat_ms else None,
        },
        "errors": sum(tally.errors.values()),
        "error_kinds": tally.errors,
        "served_accuracy_vs_labels": round(tally.correct_label / tally.ok, 4) if tally.ok else None,
        "rss_mib": {"after_warmup": round(rss_start, 1), "end": round(rss_end, 1)},
        "cpu_cores": os.cpu_count(),
        "cpu": cpu_kind(),
        "server_args": args.server_arg,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("ONEDNN_", "OMP_", "MKL_"))},
    }
    if args.slow_clients:
        held = sorted(slow.held_s)
        result["slow_clients"] = {
            "clients": args.slow_clients,
            "connections_opened": slow.opened,
            "cut_off_by_server": slow.cut_off,
            "held_s": {"median": round(held[len(held) // 2], 2), "max": round(held[-1], 2)} if held else None,
            "still_open_at_end": slow.still_open,
        }
    if args.soak:
        result.update(
            bad_requests_answered_4xx=tally.bad_ok, wrong_answers=tally.wrong, max_prob_diff_vs_idle=tally.max_prob_diff
        )
    if args.rate:
        result["open_loop"] = open_loop_figures(args, tally, elapsed)
    report(result, args.out)
    if result["errors"] or (args.soak and tally.wrong):
        sys.exit(1)


if __name__ == "__main__":
    main()
