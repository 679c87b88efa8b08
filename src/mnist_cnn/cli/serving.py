"""CLI commands for the serving stage: `export` (ONNX) and `serve` (web app + REST API).

Heavy modules (torch, onnx, fastapi, uvicorn) are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import click

from mnist_cnn.cli.options import data_dir_option, echo_json, json_option
from mnist_cnn.cpu import ThreadChoice, apply_threads, requested_threads, start_cpu_work, usable_cpus
from mnist_cnn.errors import ConfigError, MnistCnnError


@click.command("export")
@click.argument("model")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The .onnx file to write.")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check ONNX Runtime against PyTorch (max |logit diff| <= 1e-4) on the test split.",
)
@click.option("--verify-images", type=click.IntRange(min=1), help="Compare on only the first N test images.")
@data_dir_option()
@json_option("Print what was written (file, size, parity) as JSON.")
def export_cmd(
    model: str, out: Path, verify: bool, verify_images: int | None, data_dir: Path | None, as_json: bool
) -> None:
    """Export MODEL (run folder, .safetensors or `default`) to ONNX with normalisation inside.

    The graph takes float32 [N,1,28,28] in 0..1 (uint8 pixels / 255) as 'images' and returns
    'logits' [N,C]; metadata_props['mnist_cnn'] holds classes, source and accuracy."""
    from mnist_cnn.inference.export import export_onnx

    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out}: the file name must end in .onnx")
    r = export_onnx(model, out, verify=verify, data_dir=data_dir, max_images=verify_images)
    if as_json:
        echo_json(
            {
                "file": str(out),
                "size_bytes": r.size_bytes,
                "source": str(r.source),
                "metadata": r.metadata,
                "parity": None if r.parity is None else vars(r.parity),
            }
        )
        return
    acc = r.metadata.get("accuracy")
    click.echo(
        f"wrote {out} ({r.size_bytes / 1024:.0f} KiB) from {r.source}"
        + (f"; test accuracy {100 * acc:.2f}%" if isinstance(acc, (int, float)) else "")
    )
    if r.parity is not None:
        p = r.parity
        click.echo(
            f"parity on {p.images}: max |logit diff| {p.max_abs_logit_diff:.2e}, "
            f"max |prob diff| {p.max_abs_prob_diff:.2e}, same prediction {100 * p.same_argmax:.2f}%"
        )


@click.command("serve")
@click.option(
    "--model",
    "model_spec",
    default="default",
    show_default=True,
    help="Run folder, .safetensors, .onnx (ONNX Runtime, no torch) or `default`.",
)
@click.option(
    "--reader",
    "reader_spec",
    default="default",
    show_default=True,
    help="The number reader of /api/read (rows of handwritten digits in a photo): a reader .safetensors, "
    "`default` (the bundled one; while it is not installed /api/read answers 503) or `none`. It runs on PyTorch.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port (0: any free).")
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0.001),
    default=5.0,
    show_default=True,
    help="Largest request body accepted (413 above).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=4096 * 4096,
    show_default=True,
    help="Largest image (width*height, from its header) accepted: guards against decompression bombs (422 above).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Most images in one /api/predict/batch request (413 above).",
)
@click.option(
    "--max-request-pixels",
    type=click.IntRange(min=1),
    help="Most pixels (width*height) of all images of one request together; a batch's images beyond "
    "get 413 in their slots.  [default: 4 x --max-pixels]",
)
@click.option(
    "--max-decoded-pixels",
    type=click.IntRange(min=28 * 28),
    default=2048 * 2048,
    show_default=True,
    help="Images with more pixels are decoded at reduced size, in greyscale (JPEG straight from the file).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Threads decoding and preprocessing images: the most images decoded at once (0: one per core but one).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="The model's own threads (PyTorch intra-op, ONNX Runtime intra-op; env: MNIST_CNN_THREADS). "
    "Default 1: the model uses one core and never spins, the others preprocess.",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Prediction requests in progress at once; more are answered 503 with Retry-After.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Open connections; more are answered 503 and closed.",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds for a request's headers to arrive, and the longest pause within its body (408).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds for a whole request body to arrive after its headers (408).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option("--open", "open_page", is_flag=True, help="Open the drawing page in your web browser once serving.")
def serve_cmd(
    model_spec: str,
    reader_spec: str,
    host: str,
    port: int,
    max_upload_mb: float,
    max_pixels: int,
    max_batch: int,
    max_request_pixels: int | None,
    max_decoded_pixels: int,
    workers: int,
    threads: int | None,
    max_concurrent: int,
    max_connections: int,
    read_timeout: float,
    body_timeout: float,
    log_level: str,
    open_page: bool,
) -> None:
    """Serve the drawing web app (/) and the REST API (/api/..., docs at /docs)."""
    start_cpu_work()  # the load reading starts now
    import uvicorn

    from mnist_cnn.serving.server import Limits, load_app, tune_malloc, uvicorn_config

    if max_request_pixels is not None and max_request_pixels < max_pixels:
        raise ConfigError(f"--max-request-pixels {max_request_pixels:,} must be at least --max-pixels {max_pixels:,}")
    limits = Limits(
        max_body_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        max_batch=max_batch,
        max_request_pixels=max_request_pixels or 4 * max_pixels,
        max_decoded_pixels=max_decoded_pixels,
        workers=workers,
        max_concurrent=max_concurrent,
        max_connections=max_connections,
        read_timeout=read_timeout,
        body_timeout=body_timeout,
    )
    tune_malloc()  # freed image buffers go back to the OS instead of staying in the heap
    raise_fd_limit(max_connections + 256)
    choice = model_threads(threads)
    # the model and the number reader load once, before the port opens
    app = load_app(model_spec, limits, threads=choice.threads, reader=reader_spec)
    apply_threads(choice)  # PyTorch's intra-op threads, when the model runs on PyTorch
    sock = bind_socket(host, port)
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"serving {app.state.service.model_id} on http://{shown}:{sock.getsockname()[1]}/ "
        f"(API docs at /docs; Ctrl-C stops)"
    )
    click.echo(f"model {choice.line}", err=True)
    service = app.state.service
    click.echo(f"number reader {service.reader_id}" if service.reader else f"note: {service.no_reader}", err=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("note: listening beyond this machine; there is no authentication", err=True)
    server = uvicorn.Server(uvicorn_config(app, limits, log_level=log_level, timeout_graceful_shutdown=5))
    if open_page:
        open_when_started(server, f"http://{_browsable(host, shown)}:{sock.getsockname()[1]}/")
    server.run(sockets=[sock])


def _browsable(host: str, shown: str) -> str:
    """A host a browser on this machine can reach: 0.0.0.0 / :: listen everywhere, localhost among them."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else shown


def open_when_started(server, url: str) -> None:
    """Open ``url`` in the user's browser once ``server`` accepts connections (a daemon thread waits for it)."""
    import threading
    import time
    import webbrowser

    def wait_then_open() -> None:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.started and not webbrowser.open(url):
            click.echo(f"no web browser found here; open {url} yourself", err=True)

    threading.Thread(target=wait_then_open, name="open-browser", daemon=True).start()


def model_threads(threads: int | None) -> ThreadChoice:
    """The served model's threads: as asked (--threads, MNIST_CNN_THREADS), else one. A server lives
    through any load, so it does not count the free cores at start: one model thread never waits on
    another, and the other cores decode and preprocess requests."""
    usable = len(usable_cpus())
    asked, source = requested_threads(threads, usable)
    if asked is not None:
        return ThreadChoice(asked, usable, source or f"--threads {asked}")
    return ThreadChoice(1, usable, "the other cores preprocess; --threads to override")


def raise_fd_limit(wanted: int) -> None:
    """Raise this process's open-file limit towards ``wanted`` (within the hard limit), so that
    --max-connections, not the descriptor limit, is what refuses connections."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: keep the limit
        pass


def bind_socket(host: str, port: int):
    """A listening socket, so a busy port or bad host is a one-line error, not a uvicorn traceback."""
    import socket

    sock = None
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets, and without it
        # every keep-alive response waits ~40 ms for the client's delayed ACK (Nagle)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise MnistCnnError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host"
        ) from None
    sock.set_inheritable(True)
    return sock
