"""The shared study database: Optuna storages on SQLite or PostgreSQL, studies and the ask lock.

:func:`open_storage` opens (or, for the first worker, creates) an Optuna RDB storage with
heartbeats, so that the trials of a worker that died are failed and re-queued
(:func:`retry_callback`). :func:`open_study` creates a study or joins it after checking it was made
with the same settings. :class:`AskLock` serialises "count trials, then ask for one" across the
workers: a file lock next to a SQLite file, a PostgreSQL advisory lock.
"""

from __future__ import annotations

import json
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnist_cnn.errors import ConfigError, first_line
from mnist_cnn.search.spec import SearchSpec


def optuna_module():
    try:
        import optuna
    except ModuleNotFoundError:
        raise ConfigError("search needs Optuna: pip install 'mnist-cnn[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # our worker loop records heartbeats itself (see _heartbeat in study.py), not through Study.optimize
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


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
                    heartbeat_stale_trial_callback=retry_callback() if heartbeat else None,
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


def retry_callback():
    """Re-queue a trial whose worker died (same params), at most twice."""
    storages = optuna_module().storages
    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return cls(max_retry=2)


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
