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
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import ConfigError, Interrupted, MnistCnnError, first_line
from mnist_cnn.models.registry import count_params, create_model
from mnist_cnn.training.config import TrainConfig, cpu_count
from mnist_cnn.training.engine import train

SPACES = ("default", "arch", "recipe")
OBJECTIVES = {"accuracy": (), "accuracy,params": ("params",), "accuracy,time": ("train_seconds",)}
PRUNERS = ("median", "hyperband", "none")
# fields a space searches: giving them as flags too would be silently overridden, so it is an error
SEARCHED_FIELDS = {
    "arch": ("model", "model_kwargs"),
    "recipe": ("optimizer", "lr", "batch_size", "weight_decay", "label_smoothing", "augment", "schedule"),
}
# base-config fields that may differ between the machines of one study
LOCAL_FIELDS = ("data_dir", "threads", "device")


@dataclass(frozen=True)
class SearchSpec:
    """Everything a worker needs (picklable: it is handed to spawned worker processes)."""

    study: str
    storage: str
    trials: int
    base: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields the space does not search
    space: str = "default"
    budget_epochs: int = 3
    objective: str = "accuracy"
    timeout: float | None = None
    pruner: str = "median"
    prune_below: float | None = None
    max_mmacs: float | None = 25.0
    heartbeat: int = 30

    def validate(self) -> SearchSpec:
        checks = [
            (self.trials >= 1, "--trials", "must be >= 1"),
            (self.space in SPACES, "--space", f"must be one of {', '.join(SPACES)}"),
            (self.objective in OBJECTIVES, "--objective", f"must be one of {', '.join(OBJECTIVES)}"),
            (self.pruner in PRUNERS, "--pruner", f"must be one of {', '.join(PRUNERS)}"),
            (self.budget_epochs >= 1, "--budget-epochs", "must be >= 1"),
            (self.heartbeat >= 1, "--heartbeat", "must be >= 1 second"),
            (self.timeout is None or self.timeout > 0, "--timeout", "must be > 0 seconds"),
            (self.base.get("val_size", 1) > 0, "--val-size", "must be > 0: trials are scored on the validation split"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ConfigError(f"search: {name} {why}")
        return self

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * len(OBJECTIVES[self.objective])

    def study_attrs(self) -> dict[str, Any]:
        """What every worker of one study must agree on (stored on the study when it is created)."""
        base = {k: v for k, v in self.base.items() if k not in LOCAL_FIELDS}
        return json.loads(
            json.dumps(
                {
                    "space": self.space,
                    "objective": self.objective,
                    "budget_epochs": self.budget_epochs,
                    "max_mmacs": self.max_mmacs,
                    "base": base,
                }
            )
        )


# --------------------------------------------------------------------------- optuna + storage


def optuna_module():
    try:
        import optuna
    except ModuleNotFoundError:
        raise ConfigError("search needs Optuna: pip install 'mnist-cnn[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # our worker loop records heartbeats itself (see _heartbeat), not through Study.optimize
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


def _safe_url(url: str) -> str:
    """The storage URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url


def _sqlite_path(url: str) -> Path | None:
    rest = url.split(":///", 1)[1] if url.startswith("sqlite:///") else ""
    return Path(rest) if rest and rest != ":memory:" else None


def driver_url(url: str) -> str:
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3; use psycopg2 (our extra) when psycopg is absent."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return f"postgresql+psycopg2://{rest}"
    return url


# what a worker sees when another one created the storage's tables at the same moment
CREATION_RACE = ("alembic_version", "already exists", "UNIQUE constraint failed", "duplicate key")


@contextmanager
def first_use_lock(url: str) -> Iterator[None]:
    """Held while a worker creates or joins the storage and the study. SQLite: the file lock next to
    the database (the one :class:`AskLock` takes), so two workers started at once on a new file do not
    both create its tables (``UNIQUE constraint failed: alembic_version``). Other databases: no lock
    (:func:`open_storage` retries the creation race there, :func:`open_study` takes the advisory lock)."""
    db = _sqlite_path(url)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock"):
        yield


def open_storage(url: str, heartbeat: int | None = 30):
    """An Optuna RDBStorage with heartbeats: trials of dead workers go FAIL and are re-queued."""
    optuna = optuna_module()
    url = driver_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    db = _sqlite_path(url)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 120}}  # wait for the other workers' writes
    attempt = 0
    while True:
        try:
            with first_use_lock(url):
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=None if heartbeat is None else 3 * heartbeat,
                    heartbeat_stale_trial_callback=_retry_callback() if heartbeat else None,
                )
        except ImportError:  # Optuna re-raises the driver's ModuleNotFoundError as a plain ImportError
            raise ConfigError(
                f"--storage {_safe_url(url)}: its database driver is not installed; "
                "pip install 'mnist-cnn[search]' (psycopg2-binary for PostgreSQL)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - sqlalchemy/DB errors of many kinds: one line for the user
            first = first_line(exc)
            if attempt < 3 and any(m in first for m in CREATION_RACE):
                attempt += 1  # another worker created the tables at the same moment: join them
                time.sleep(0.5 * attempt)
                continue
            raise ConfigError(
                f"--storage {_safe_url(url)}: cannot open ({first}); use sqlite:///PATH or "
                "postgresql://USER:PASSWORD@HOST:PORT/DB"
            ) from None


def _retry_callback():
    """Re-queue a trial whose worker died (same params), at most twice."""
    storages = optuna_module().storages
    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return cls(max_retry=2)


def _pruner(spec: SearchSpec):
    optuna = optuna_module()
    base = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.budget_epochs),
        "none": optuna.pruners.NopPruner,
    }[spec.pruner]()
    if spec.prune_below is None:
        return base
    return _AnyPruner([base, optuna.pruners.ThresholdPruner(lower=spec.prune_below)])


class _AnyPruner:
    """Prune when any of several pruners says so (Optuna has no composite pruner)."""

    def __init__(self, pruners: list[Any]):
        self.pruners = pruners

    def prune(self, study, trial) -> bool:
        return any(p.prune(study, trial) for p in self.pruners)


def open_study(spec: SearchSpec, storage=None):
    """Create the study, or join it (``load_if_exists``) after checking it was made with the same
    space/objective/budget/base config; a mismatch would mix incomparable trials."""
    optuna = optuna_module()
    storage = storage or open_storage(spec.storage, spec.heartbeat)
    sampler = optuna.samplers.TPESampler(constant_liar=True)  # liar: parallel workers spread out
    # one worker at a time creates the study and stamps its settings: a worker that joins between the
    # two steps would otherwise see no settings and stamp its own
    with AskLock(spec.storage, spec.study)():
        study = optuna.create_study(
            storage=storage,
            study_name=spec.study,
            directions=spec.directions,
            load_if_exists=True,
            sampler=sampler,
            pruner=_pruner(spec),
        )
        mine, theirs = spec.study_attrs(), study.user_attrs
        if not theirs:
            for k, v in mine.items():
                study.set_user_attr(k, v)
            return study
    diff = [k for k in mine if theirs.get(k) != mine[k]]
    if diff or len(study.directions) != len(spec.directions):
        k = diff[0] if diff else "objective"
        raise ConfigError(
            f"study {spec.study!r} in {_safe_url(spec.storage)} was created with other settings "
            f"({k}: {json.dumps(theirs.get(k))[:120]}); rerun with the same flags or choose another --study"
        )
    return study


def load_study(name: str, storage, **kwargs: Any):
    optuna = optuna_module()
    try:
        return optuna.load_study(study_name=name, storage=storage, **kwargs)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(
            f"study {name!r} not found in the storage; existing studies: {', '.join(names) or 'none'}"
        ) from None


class AskLock:
    """Serialises "count trials, then ask for one" across workers: a file lock (filelock) next to a SQLite
    database, a PostgreSQL advisory lock keyed by the study name; other databases go unlocked."""

    def __init__(self, url: str, study: str):
        self.db = _sqlite_path(url)
        self.engine = None
        self.key = zlib.crc32(f"mnist-cnn-search/{study}".encode())
        if self.db is None and url.startswith("postgres"):
            import sqlalchemy

            self.engine = sqlalchemy.create_engine(driver_url(url), poolclass=sqlalchemy.pool.NullPool)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self.db is not None:
            from filelock import FileLock

            # an OS-level lock (flock on POSIX, LockFileEx on Windows): released when the process dies
            with FileLock(f"{self.db}.lock"):
                yield
        elif self.engine is not None:
            from sqlalchemy import text

            with self.engine.connect() as conn:  # released when the session ends, even on a crash
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        else:
            yield


# --------------------------------------------------------------------------- the search space


def suggest_arch(trial) -> dict[str, Any]:
    """ConvNet keyword arguments: conv blocks (filters, kernel, pool or not: the seed's
    "arrangement" question), padding, BatchNorm, dense head depth/width, dropout."""
    n = trial.suggest_int("blocks", 1, 4)
    padding = trial.suggest_categorical("padding", ["valid", "same"])
    channels = [trial.suggest_categorical(f"channels_{i}", [8, 16, 32, 64, 128]) for i in range(n)]
    kernels = [trial.suggest_categorical(f"kernel_{i}", [3, 5]) for i in range(n)]
    pools = [trial.suggest_categorical(f"pool_{i}", [True, False]) for i in range(n)]
    depth = trial.suggest_int("head_layers", 0, 2)
    head = [trial.suggest_categorical("head_width", [32, 64, 128, 256])] * depth
    return {
        "channels": channels,
        "kernel_size": kernels,
        "pool": pools,
        "padding": padding,
        "batchnorm": trial.suggest_categorical("batchnorm", [True, False]),
        "head": head,
        "dropout": trial.suggest_float("dropout", 0.0, 0.5) if depth else 0.0,
        "conv_dropout": trial.suggest_float("conv_dropout", 0.0, 0.3),
        "global_pool": trial.suggest_categorical("global_pool", [False, True]),
    }


def suggest_recipe(trial, budget_epochs: int) -> dict[str, Any]:
    """TrainConfig recipe fields: optimiser, lr, batch, weight decay, smoothing, augmentation, epochs."""
    return {
        "optimizer": trial.suggest_categorical("optimizer", ["adam", "adamw", "nesterov"]),
        "lr": trial.suggest_float("lr", 1e-4, 0.1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "augment": trial.suggest_categorical("augment", ["none", "light", "medium", "strong"]),
        "schedule": trial.suggest_categorical("schedule", ["constant", "onecycle", "cosine"]),
        "epochs": trial.suggest_int("epochs", 1, budget_epochs),
    }


def trial_config(trial, spec: SearchSpec) -> TrainConfig:
    """The base config with this trial's suggestions applied."""
    over: dict[str, Any] = {"epochs": spec.budget_epochs, "recipe": None}
    if spec.space in ("arch", "default"):
        over.update(model="convnet", model_kwargs=suggest_arch(trial))
    if spec.space in ("recipe", "default"):
        over.update(suggest_recipe(trial, spec.budget_epochs))
    cfg = TrainConfig.from_dict(spec.base, source="search base config").to_dict()
    return TrainConfig.from_dict({**cfg, **over}, source=f"trial {trial.number}")


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one forward pass on a [1, 1, 28, 28] image (conv + linear layers)."""
    import torch
    from torch import nn

    total: int = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):  # each output value: in/groups * kh * kw MACs
            total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total += out.numel() * int(mod.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, 28, 28))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


# --------------------------------------------------------------------------- one trial


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
            _retry_callback()(study, storage.get_trial(trial._trial_id))  # re-queue its params
            raise Interrupted(
                f"search interrupted; trial {trial.number} is re-queued; run the same command to resume"
            ) from None
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
    study.tell(trial, values)
    extra = "".join(f"  {k} {v:,.1f}" for k, v in zip(OBJECTIVES[spec.objective], values[1:]))
    _say(f"trial {trial.number}: val accuracy {100 * values[0]:.2f}%{extra} [{worker}]")


def trial_counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


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


def _worker_main(spec: SearchSpec, worker: str) -> None:
    """Entry point of a spawned worker process: errors as one line, exit code like the CLI."""
    try:
        run_worker(spec, worker)
    except MnistCnnError as exc:
        _say(f"error: [{worker}] {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


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


# --------------------------------------------------------------------------- results


def finished(study) -> list[Any]:
    """Completed trials, best validation accuracy first (ties: fewer parameters first)."""
    optuna = optuna_module()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(done, key=lambda t: (-t.values[0], t.user_attrs.get("params", 0)))


def best_trial(study):
    """Single objective: the best trial. Two objectives: the most accurate trial of the Pareto front."""
    done = finished(study)
    if not done:
        raise ConfigError(f"study {study.study_name!r} has no completed trial yet; run `mnist-cnn search` first")
    if len(study.directions) == 1:
        return done[0]
    return max(study.best_trials, key=lambda t: t.values[0])


def best_config(study) -> dict[str, Any]:
    """``{"train": TrainConfig fields, "search": provenance}`` for ``mnist-cnn train --config``.

    Machine/economy settings of the search (data_dir, threads, train_subset) are reset, so the
    file retrains on the full training split anywhere; ``search.trained_with`` keeps them."""
    t = best_trial(study)
    cfg = dict(t.user_attrs["config"])
    trained_with = {k: cfg.get(k) for k in ("train_subset", "epochs", "threads")}
    cfg.update(data_dir=None, threads=None, train_subset=None, recipe=None)
    TrainConfig.from_dict(cfg, source=f"trial {t.number} config").validate()
    return {
        "train": cfg,
        "search": {
            "study": study.study_name,
            "trial": t.number,
            "val_accuracy": t.values[0],
            "params": t.user_attrs.get("params"),
            "mmacs": t.user_attrs.get("mmacs"),
            "trained_with": trained_with,
            "space": study.user_attrs.get("space"),
            "objective": study.user_attrs.get("objective"),
        },
    }


def summary_line(study) -> str:
    c = trial_counts(study)
    parts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(c.items()))
    line = f"study {study.study_name!r}: {sum(c.values())} trials ({parts})"
    if c.get("COMPLETE"):
        t = best_trial(study)
        line += (
            f"; best trial {t.number}: val accuracy {100 * t.values[0]:.2f}%, {t.user_attrs.get('params', 0):,} params"
        )
    return line
