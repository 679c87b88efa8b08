"""What a study found: trial counts, the completed trials best first, the best config.

:func:`best_config` is the ``best.json`` that ``mnist-cnn train --config`` retrains; with two
objectives the best trial is the most accurate one of the Pareto front. :func:`summary_line` is the
one line the search commands print.
"""

from __future__ import annotations

from typing import Any

from mnist_cnn.errors import ConfigError
from mnist_cnn.search.storage import optuna_module
from mnist_cnn.training.config import TrainConfig


def trial_counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


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
