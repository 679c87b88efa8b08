"""Search for the best CNN (architecture and/or recipe) with Optuna, on a shared study database.

A *study* lives in an Optuna RDB storage (SQLite file by default, PostgreSQL for many machines).
Every worker — a ``--workers K`` child process, or the same command started on another machine —
runs this loop against the shared study:

    fail stale trials (heartbeat lost: the worker died) -> they are re-queued with the same params
    [lock] count COMPLETE + PRUNED + RUNNING trials; below N -> ask for a trial   [unlock]
    train the trial's TrainConfig (the normal engine), report val accuracy per epoch, prune
    tell the result

Counting and asking under one lock (a file lock next to a SQLite file, a PostgreSQL advisory
lock) is what makes the study end with exactly N finished trials even when workers finish at the
same moment; a worker that reaches N waits for the running trials of others, so a trial whose
worker died is retried instead of lost. Candidates are built through the model registry
(``create_model("convnet", ...)``) and trained by :func:`mnist_cnn.training.engine.train`; the objective
is validation accuracy (the test set is never looked at here).

This module runs that loop (:func:`run_search`, :func:`run_worker`, :func:`objective`); beside it,
``spec.py`` holds :class:`~mnist_cnn.search.spec.SearchSpec`, ``storage.py`` the storage, the
studies and the ask lock, ``space.py`` the search space, and ``results.py`` the best trials and config.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import ConfigError, Interrupted, MnistCnnError
from mnist_cnn.models.registry import count_params, create_model
from mnist_cnn.search.results import trial_counts
from mnist_cnn.search.space import count_macs, trial_config
from mnist_cnn.search.spec import OBJECTIVES, SearchSpec
from mnist_cnn.search.storage import AskLock, open_storage, open_study, optuna_module, retry_callback
from mnist_cnn.training.config import TrainConfig, cpu_count
from mnist_cnn.training.engine import train


def run_search(spec: SearchSpec, workers: int = 1):
    """Create/join the study, run ``workers`` local worker processes (spawned) on it; return it."""
    spec.validate()
    storage = open_storage(spec.storage, spec.heartbeat)
    study = open_study(spec, storage)  # create once here, so the workers only join
    host = socket.gethostname()
    if workers == 1:
        try:
            run_worker(spec, f"{host}:{os.getpid()}")
        except KeyboardInterrupt:  # between two trials (within one, _run_trial re-queues it)
            raise Interrupted("search interrupted between trials; run the same command to resume") from None
        return study
    import multiprocessing as mp

    if spec.base.get("threads") is None:  # share the cores instead of oversubscribing them
        cores = cpu_count()
        spec = replace(spec, base={**spec.base, "threads": max(1, cores // workers)})
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(spec, f"{host}:w{i}"), daemon=False) for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        _stop_workers(procs)
        raise Interrupted("search interrupted; running trials are re-queued; run the same command to resume") from None
    bad = [f"worker {i} (exit code {p.exitcode})" for i, p in enumerate(procs) if p.exitcode]
    if bad:
        raise MnistCnnError(f"search: {', '.join(bad)} failed; see the error above; rerun the command to resume")
    return study


def _stop_workers(procs: list[Any]) -> None:
    import signal

    for p in procs:  # a terminal's Ctrl-C reached them too: let them re-queue their trials
        p.join(10)
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGINT)  # each worker re-queues its trial and exits
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.terminate()


def _worker_main(spec: SearchSpec, worker: str) -> None:
    """Entry point of a spawned worker process: errors as one line, exit code like the CLI."""
    try:
        run_worker(spec, worker)
    except MnistCnnError as exc:
        _say(f"error: [{worker}] {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def run_worker(spec: SearchSpec, worker: str | None = None) -> int:
    """One worker: run trials until the study holds ``spec.trials`` finished trials (or timeout).

    Returns the number of trials this worker ran."""
    optuna = optuna_module()

    worker = worker or f"{socket.gethostname()}:{os.getpid()}"
    storage = open_storage(spec.storage, spec.heartbeat)
    study = open_study(spec, storage)
    base = TrainConfig.from_dict(spec.base, source="search base config")
    data = load_dataset(base.dataset, base.data_dir)  # once per worker, shared by its trials
    lock, start, ran = AskLock(spec.storage, spec.study), time.monotonic(), 0
    while spec.timeout is None or time.monotonic() - start < spec.timeout:
        optuna.storages.fail_stale_trials(study)  # dead workers' trials -> FAIL + re-queued
        with lock():
            c = trial_counts(study)
            busy = c.get("COMPLETE", 0) + c.get("PRUNED", 0) + c.get("RUNNING", 0)
            trial = study.ask() if busy < spec.trials else None
        if trial is None:
            if not c.get("RUNNING"):
                break
            time.sleep(min(spec.heartbeat, 2.0))  # others' trials may still fail and be re-queued
            continue
        _run_trial(study, storage, trial, spec, data, worker)
        ran += 1
    return ran


def _run_trial(study, storage, trial, spec: SearchSpec, data, worker: str) -> None:
    optuna = optuna_module()
    trial.set_user_attr("worker", worker)
    with _heartbeat(storage, trial._trial_id, spec.heartbeat):  # _trial_id: Optuna's storage key
        try:
            values = objective(trial, spec, data)
        except optuna.TrialPruned as exc:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            why = storage.get_trial(trial._trial_id).user_attrs.get("invalid") or str(exc)
            _say(f"trial {trial.number} pruned: {why.rsplit(': ', 1)[-1]} [{worker}]")  # full reason: trials.csv
            return
        except (KeyboardInterrupt, Interrupted):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            retry_callback()(study, storage.get_trial(trial._trial_id))  # re-queue its params
            raise Interrupted(
                f"search interrupted; trial {trial.number} is re-queued; run the same command to resume"
            ) from None
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
    study.tell(trial, values)
    extra = "".join(f"  {k} {v:,.1f}" for k, v in zip(OBJECTIVES[spec.objective], values[1:]))
    _say(f"trial {trial.number}: val accuracy {100 * values[0]:.2f}%{extra} [{worker}]")


@contextmanager
def _heartbeat(storage, trial_id: int, interval: int) -> Iterator[None]:
    """Record the trial's heartbeat every ``interval`` s while it runs (as Optuna's optimize does)."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with suppress(Exception):  # a missed beat (database busy) is retried next interval
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def objective(trial, spec: SearchSpec, data=None) -> list[float]:
    """Train the trial's config; return [val accuracy, (params | train seconds)].

    Invalid architectures (the stack shrinks 28x28 to nothing) and ones over ``max_mmacs`` are
    pruned before training, with the reason in the trial's ``invalid`` attribute."""
    optuna = optuna_module()

    cfg = trial_config(trial, spec)
    trial.set_user_attr("config", cfg.to_dict())
    try:
        model = create_model(cfg.model, **cfg.model_kwargs)
    except ConfigError as exc:
        trial.set_user_attr("invalid", str(exc))
        raise optuna.TrialPruned("invalid architecture") from None
    params, mmacs = count_params(model), count_macs(model) / 1e6
    trial.set_user_attr("params", params)
    trial.set_user_attr("mmacs", round(mmacs, 3))
    if spec.max_mmacs is not None and mmacs > spec.max_mmacs:
        trial.set_user_attr("invalid", f"{mmacs:.1f} MMAC per image is over --max-mmacs {spec.max_mmacs:g}")
        raise optuna.TrialPruned("over the compute budget")
    single = len(spec.directions) == 1  # Optuna prunes single-objective studies only

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        trial.set_user_attr("val_accuracy", row["val_accuracy"])
        if single:
            trial.report(row["val_accuracy"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    m = train(cfg, None, quiet=True, data=data, on_epoch=on_epoch, evaluate_test=False).metrics
    for k in ("val_accuracy", "train_seconds", "epochs_run"):
        trial.set_user_attr(k, m[k])
    return [m["val_accuracy"]] + [
        {"params": params, "train_seconds": m["train_seconds"]}[k] for k in OBJECTIVES[spec.objective]
    ]
