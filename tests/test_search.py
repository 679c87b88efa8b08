"""`mnist-cnn search` / `search report` on tiny synthetic data with SQLite studies.

Two worker processes share one study and finish exactly the trial count; a killed worker's trial
is failed by its stale heartbeat and re-run with the same parameters on resume; Ctrl-C re-queues
the running trial; pruning stops trials early; the report's best.json retrains via train --config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO, write_dataset
from tests.helpers import STUDY, check_two_workers_exact, default_sigint, load_trials, run_cli, search_args

optuna = pytest.importorskip("optuna", reason="search needs optuna (pip install 'mnist-cnn[search]')")


# slow: the tests of one two-worker search (spawned processes), and the ones that kill or interrupt a search
@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One two-worker search shared by the tests that read its study."""
    tmp = tmp_path_factory.mktemp("search")
    data = write_dataset(tmp / "data")
    storage = f"sqlite:///{tmp / 'search.db'}"
    check_two_workers_exact(storage, data)
    return storage, data


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_and_finish_exactly_n(searched: tuple[str, Path]) -> None:
    storage, _ = searched
    trials = load_trials(storage)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert done, "at least one trial should complete"
    for t in done:  # the objective is the validation accuracy the engine measured
        assert t.values[0] == t.user_attrs["val_accuracy"]
        assert 0.0 <= t.values[0] <= 1.0
        assert "test_accuracy" not in t.user_attrs


@pytest.mark.slow
def test_report_writes_figures_and_a_best_config_that_retrains(searched: tuple[str, Path], tmp_path: Path) -> None:
    from mnist_cnn.models.files import load_model
    from mnist_cnn.training.config import load_config_file

    storage, data = searched
    out = tmp_path / "report"
    r = run_cli("search", "report", "--study", STUDY, "--storage", storage, "--out", str(out))
    assert r.exit_code == 0, r.stderr
    for name in (
        "best.json",
        "trials.csv",
        "summary.md",
        "report.html",
        "history.png",
        "parallel.png",
        "importances.png",
    ):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and 'src="history.png"' not in html  # self-contained

    best = json.loads((out / "best.json").read_text())
    trials = {t.number: t for t in load_trials(storage)}
    chosen = trials[best["search"]["trial"]]
    assert chosen.values[0] == max(t.values[0] for t in trials.values() if t.state.name == "COMPLETE")
    cfg = load_config_file(out / "best.json")
    assert cfg.model == "convnet" and cfg.model_kwargs == chosen.user_attrs["config"]["model_kwargs"]
    assert cfg.train_subset is None and cfg.data_dir is None  # retrains on the full split anywhere

    run = tmp_path / "retrained"
    r = run_cli(
        "train", "--config", str(out / "best.json"), "--data-dir", str(data), "--epochs", "1", "--out", str(run), "-q"
    )
    assert r.exit_code == 0, r.stderr
    _, meta = load_model(run)
    assert meta["arch"] == {"name": "convnet", "kwargs": cfg.model_kwargs}
    assert "test accuracy" in r.stdout


@pytest.mark.slow
def test_report_without_importances_still_has_the_figure_and_says_why(
    searched: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too few varied completed trials (two racing workers may prune most of a tiny study): fANOVA
    has nothing to rank, and the report says so instead of dropping the figure."""
    from mnist_cnn.search import report as search
    from mnist_cnn.search.storage import driver_url, load_study

    monkeypatch.setattr(search, "param_importances", lambda study: {})
    storage, _ = searched
    files = search.write_report(load_study(STUDY, driver_url(storage)), tmp_path / "r")
    assert files["importances"].stat().st_size > 0
    assert search.NO_IMPORTANCES in (tmp_path / "r" / "summary.md").read_text()
    assert search.NO_IMPORTANCES in (tmp_path / "r" / "report.html").read_text()


class _Exited(Exception):
    """The search finished before the moment a test waited for (its trials ran between two polls)."""


def _wait_for(pred, proc: subprocess.Popen, what: str, limit: float = 120.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            raise _Exited(f"the search exited (code {proc.returncode}) before {what}")
        value = pred()
        if value is not None:
            return value
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _running_after_one_done(storage: str, total: int | None = None):
    """The number of a trial running after one finished; with ``total`` (the study's trials), never its last one:
    a signal that loses the race with the last trial lands in the process's exit instead."""
    try:
        trials = load_trials(storage)
    except KeyError:  # the study is not created yet
        return None
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    running = [t for t in trials if t.state.name == "RUNNING" and "config" in t.user_attrs]
    running = [t for t in running if total is None or t.number < total - 1]
    return running[0].number if done and running else None


def _interrupt_mid_trial(storage: str, data: Path, sig: int, trials: int) -> tuple[list[str], int, str]:
    """Start a one-worker search in a subprocess, send ``sig`` once a trial is running after one
    finished; return (its arguments, the interrupted trial's number, its stderr)."""
    args = search_args(
        storage, data, "--trials", str(trials), "--budget-epochs", "2", "--pruner", "none", "--max-mmacs", "1000"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_cnn", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    for _ in range(3):
        number = _wait_for(lambda: _running_after_one_done(storage, trials), proc, "a trial was running")
        proc.send_signal(sig)
        try:
            proc.wait(timeout=8)
            break
        except subprocess.TimeoutExpired:
            # a SIGINT that lands inside a garbage-collection callback is ignored by Python
            # ("Exception ignored in ..."), as a person's first Ctrl-C can be: press it again
            continue
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else -sig), err
    return args, number, err


@pytest.mark.slow
def test_killed_worker_trial_is_retried_on_resume(tiny_data: Path, tmp_path: Path) -> None:
    for attempt in range(3):
        storage = f"sqlite:///{tmp_path / f'kill{attempt}.db'}"
        # SIGKILL: no chance to clean up, the trial stays RUNNING until its heartbeat goes stale
        try:
            args, killed, _ = _interrupt_mid_trial(storage, tiny_data, signal.SIGKILL, trials=4)
        except _Exited:  # a busy machine's poll missed every running trial: again
            continue
        # the trial seen running may have finished before the signal landed (between trials): again
        if load_trials(storage)[killed].state.name == "RUNNING":
            break
    else:
        pytest.fail("three SIGKILLs in a row landed between trials or after the search")

    r = run_cli(*args)  # the same command resumes
    assert r.exit_code == 0, r.stderr
    trials = load_trials(storage)
    states = Counter(t.state.name for t in trials)
    assert states["COMPLETE"] + states["PRUNED"] == 4 and states["FAIL"] == 1 and states["RUNNING"] == 0, states
    assert trials[killed].state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == trials[killed].params
    assert retries[0].state.name in ("COMPLETE", "PRUNED")


@pytest.mark.slow
def test_ctrl_c_requeues_the_running_trial_and_the_study_resumes(tiny_data: Path, tmp_path: Path) -> None:
    for attempt in range(3):
        storage = f"sqlite:///{tmp_path / f'int{attempt}.db'}"
        try:
            args, stopped, err = _interrupt_mid_trial(storage, tiny_data, signal.SIGINT, trials=5)
        except _Exited:  # a busy machine's poll missed every running trial: again
            continue
        assert "run the same command to resume" in err and "Traceback" not in err
        # "between trials": the trial seen running finished before the signal landed; try again
        if "between trials" not in err:
            break
    else:
        pytest.fail("three Ctrl-Cs in a row landed between trials or after the search")
    trials = load_trials(storage)
    assert trials[stopped].state.name == "FAIL"
    assert any(t.state.name == "WAITING" and t.params == trials[stopped].params for t in trials)

    r = run_cli(*args)
    assert r.exit_code == 0, r.stderr
    states = Counter(t.state.name for t in load_trials(storage))
    assert states["COMPLETE"] + states["PRUNED"] == 5 and states["WAITING"] == 0 and states["RUNNING"] == 0


def test_threshold_pruning_stops_trials_after_their_first_epoch(tiny_data: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    # no accuracy reaches 1.01, so every trained trial is pruned at its first report (epoch 1 of 3)
    r = run_cli(
        *search_args(
            storage,
            tiny_data,
            "--trials",
            "4",
            "--budget-epochs",
            "3",
            "--pruner",
            "none",
            "--prune-below",
            "1.01",
            "--max-mmacs",
            "1000",
        )
    )
    assert r.exit_code == 0, r.stderr
    trials = load_trials(storage)
    assert all(t.state.name == "PRUNED" for t in trials)
    trained = [t for t in trials if "invalid" not in t.user_attrs]
    assert trained, "expected at least one valid architecture among 4 trials"
    assert all(list(t.intermediate_values) == [1] for t in trained)


def test_median_pruner_prunes_below_median_trials(tiny_data: Path, tmp_path: Path) -> None:
    """Five trials through the real objective, then a deliberately bad one (lr far too high)."""
    from mnist_cnn.search.spec import SearchSpec
    from mnist_cnn.search.storage import open_study
    from mnist_cnn.search.study import run_worker
    from mnist_cnn.training.config import TrainConfig

    base = TrainConfig(model="fastnet", data_dir=str(tiny_data), val_size=100, batch_size=64, threads=1).to_dict()
    spec = SearchSpec(
        study="med",
        storage=f"sqlite:///{tmp_path / 'med.db'}",
        trials=6,
        base=base,
        space="recipe",
        budget_epochs=2,
        heartbeat=2,
        pruner="median",
    )
    good = {
        "optimizer": "adam",
        "lr": 0.003,
        "batch_size": 64,
        "weight_decay": 1e-6,
        "label_smoothing": 0.0,
        "augment": "none",
        "schedule": "constant",
        "epochs": 2,
    }
    study = open_study(spec)
    for _ in range(5):
        study.enqueue_trial(good, skip_if_exists=False)
    study.enqueue_trial({**good, "optimizer": "nesterov", "lr": 1e-4, "batch_size": 256}, skip_if_exists=False)
    run_worker(spec)
    trials = study.get_trials()
    assert [t.state.name for t in trials[:5]] == ["COMPLETE"] * 5
    assert trials[5].state.name == "PRUNED" and list(trials[5].intermediate_values) == [1]


def test_invalid_architecture_is_pruned_without_training(tiny_data: Path, tmp_path: Path) -> None:
    from mnist_cnn.search.spec import SearchSpec
    from mnist_cnn.search.storage import open_study
    from mnist_cnn.search.study import run_worker
    from mnist_cnn.training.config import TrainConfig

    base = TrainConfig(data_dir=str(tiny_data), val_size=100, threads=1).to_dict()
    spec = SearchSpec(
        study="inv",
        storage=f"sqlite:///{tmp_path / 'inv.db'}",
        trials=1,
        base=base,
        space="arch",
        budget_epochs=1,
        heartbeat=2,
    )
    # four valid-padded 5x5 blocks, each pooled: 28 -> 24 -> 12 -> 8 -> 4 -> 0
    params = {
        "blocks": 4,
        "padding": "valid",
        "head_layers": 0,
        "batchnorm": False,
        "conv_dropout": 0.0,
        "global_pool": False,
    }
    params |= {f"{k}_{i}": v for i in range(4) for k, v in (("channels", 8), ("kernel", 5), ("pool", True))}
    open_study(spec).enqueue_trial(params)
    run_worker(spec)
    (t,) = load_trials(spec.storage, "inv")
    assert t.state.name == "PRUNED"
    assert "shrinks a 28x28 image to nothing" in t.user_attrs["invalid"]
    assert "val_accuracy" not in t.user_attrs and not t.intermediate_values


def test_two_objectives_give_a_pareto_front(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a seeded sampler (one worker: the search runs in this process), so the same three architectures
    # are tried on every run; with this seed all three are valid (an invalid one is pruned, not COMPLETE)
    seed, made = 0, []
    seeded_tpe = optuna.samplers.TPESampler

    def tpe_sampler(**kwargs):
        made.append(kwargs)
        return seeded_tpe(seed=seed, **kwargs)

    monkeypatch.setattr(optuna.samplers, "TPESampler", tpe_sampler)
    storage = f"sqlite:///{tmp_path / 'mo.db'}"
    r = run_cli(
        *search_args(
            storage,
            tiny_data,
            "--trials",
            "3",
            "--budget-epochs",
            "1",
            "--objective",
            "accuracy,params",
            "--max-mmacs",
            "1000",
        )
    )
    assert r.exit_code == 0, r.stderr
    assert made, "the search did not make its sampler through optuna.samplers.TPESampler: the seed was not used"
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert len(study.directions) == 2
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert done, f"no trial completed (sampler seed {seed}): {[t.user_attrs for t in study.get_trials()]}"
    assert all(t.values[1] == t.user_attrs["params"] for t in done)
    out = tmp_path / "rep"
    r = run_cli("search", "report", "--study", STUDY, "--storage", storage, "--out", str(out))
    assert r.exit_code == 0, r.stderr
    assert (out / "pareto.png").stat().st_size > 0
    best = json.loads((out / "best.json").read_text())
    front = {t.number: t.values[0] for t in study.best_trials}
    assert best["search"]["trial"] in front and best["search"]["val_accuracy"] == max(front.values())


def test_count_macs_matches_model1_by_hand() -> None:
    from mnist_cnn.models.registry import create_model
    from mnist_cnn.search.space import count_macs

    # conv outputs 32x26x26, 64x11x11, 128x3x3 (3x3 kernels), then dense 128->128->10
    by_hand = 32 * 26 * 26 * 1 * 9 + 64 * 11 * 11 * 32 * 9 + 128 * 3 * 3 * 64 * 9 + 128 * 128 + 128 * 10
    assert count_macs(create_model("model1")) == by_hand


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "3"], "--budget-epochs"),
        (["--model", "model2"], "--model is searched by --space arch"),
        (["--val-size", "0"], "--val-size must be > 0"),
        (["--trials", "0"], "--trials must be >= 1"),
    ],
)
def test_bad_flags_are_one_line_errors(tiny_data: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    r = run_cli(*search_args(f"sqlite:///{tmp_path / 'x.db'}", tiny_data, *extra))
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_joining_with_other_settings_or_a_missing_study_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'j.db'}"
    assert run_cli(*search_args(storage, tiny_data, "--trials", "1", "--budget-epochs", "1")).exit_code == 0
    r = run_cli(*search_args(storage, tiny_data, "--trials", "2", "--budget-epochs", "2"))
    assert r.exit_code == 2 and "was created with other settings (budget_epochs" in r.stderr, r.stderr
    r = run_cli("search", "report", "--study", "nope", "--storage", storage)
    assert r.exit_code == 2 and "study 'nope' not found" in r.stderr and "existing studies: s" in r.stderr
    r = run_cli("search", "report", "--study", STUDY, "--storage", "nosuchdb://x")
    assert r.exit_code == 2 and "cannot open" in r.stderr and "Traceback" not in r.stderr


def _open_at_once(urls: list[str], barrier, results) -> None:
    """A worker's first steps (open the storage, create or join the study) on each of ``urls`` in turn,
    each started at the same moment as the other process's (spawned: see the test below)."""
    from mnist_cnn.search.spec import SearchSpec
    from mnist_cnn.search.storage import open_storage, open_study, optuna_module

    optuna_module()  # imported before the barrier, so both processes reach the database together
    for url in urls:
        barrier.wait(timeout=120)
        try:
            open_study(SearchSpec(study=STUDY, storage=url, trials=1), open_storage(url, None))
            results.put("ok")
        except Exception as exc:  # noqa: BLE001 - reported to the test, which shows it
            results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_two_first_time_workers_on_a_new_sqlite_file_both_start(tmp_path: Path) -> None:
    """Two workers started at once on a new SQLite file used to race to create its tables: one died
    with `UNIQUE constraint failed: alembic_version` (or `table studies already exists`), in about half
    of the tries. Now the first creation is serialised by the file lock next to the database."""
    import multiprocessing as mp

    urls = [f"sqlite:///{tmp_path / f'fresh{i}.db'}" for i in range(6)]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(urls, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in range(2 * len(urls))]
    for p in procs:
        p.join(60)
    assert got == ["ok"] * len(got), [g for g in got if g != "ok"]
    assert all(p.exitcode == 0 for p in procs)
    for url in urls:  # one study per file, stamped with its settings once
        assert optuna.get_all_study_names(url) == [STUDY]
        assert optuna.load_study(study_name=STUDY, storage=url).user_attrs["space"] == "default"
