"""The search report: best trials, history, importances, best.json for ``train --config``.

Written by the same report engine as every other report (:class:`mnist_cnn.reports.html.Report`).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_cnn.artifacts.files import atomic_write_json, atomic_write_text
from mnist_cnn.reports.figures import PALETTE, pyplot, save_figure
from mnist_cnn.reports.html import Report
from mnist_cnn.search.results import best_config, finished, trial_counts
from mnist_cnn.search.spec import OBJECTIVES
from mnist_cnn.search.storage import optuna_module

# --------------------------------------------------------------------------- report


def describe(cfg: dict[str, Any]) -> str:
    """A short text for a trial's config, e.g. ``convnet same bn: 32k3P-64k5P | head 128x1 | adam lr 0.001``."""
    kw = cfg.get("model_kwargs") or {}
    text = cfg["model"]
    if "channels" in kw:
        n = len(kw["channels"])
        ks = kw.get("kernel_size", 3)
        ps = kw.get("pool", True)
        ks, ps = (ks if isinstance(ks, list) else [ks] * n), (ps if isinstance(ps, list) else [ps] * n)
        blocks = "-".join(f"{c}k{k}{'P' if p else ''}" for c, k, p in zip(kw["channels"], ks, ps))
        flags = " ".join(f for f, on in (("bn", kw.get("batchnorm")), ("gap", kw.get("global_pool"))) if on)
        head = kw.get("head") or []
        head_text = f"head {head[0]}x{len(head)} drop {kw.get('dropout', 0):.2f}" if head else "no hidden head"
        text += f" {kw.get('padding', 'valid')}{' ' + flags if flags else ''}: {blocks} | {head_text}"
    elif kw:
        text += " " + json.dumps(kw, separators=(",", ":"))
    return (
        text + f" | {cfg['optimizer']} lr {cfg['lr']:.3g} batch {cfg['batch_size']} {cfg['schedule']}"
        f" wd {cfg['weight_decay']:.2g} ls {cfg['label_smoothing']:.2f} aug {cfg['augment']} ep {cfg['epochs']}"
    )


def trial_rows(study: Any, top: int | None = None) -> list[dict[str, Any]]:
    """One row per completed trial, best validation accuracy first."""
    rows = [
        {
            "trial": t.number,
            "val_accuracy": t.values[0],
            "params": t.user_attrs.get("params"),
            "mmacs": t.user_attrs.get("mmacs"),
            "train_seconds": t.user_attrs.get("train_seconds"),
            "worker": t.user_attrs.get("worker"),
            "config": describe(t.user_attrs["config"]),
        }
        for t in finished(study)
    ]
    return rows[:top] if top else rows


NO_IMPORTANCES = (
    "Parameter importances need completed trials whose parameters and accuracies vary; "
    "this study has too few of them so far."
)


def param_importances(study: Any) -> dict[str, float]:
    """fANOVA importances of the parameters for validation accuracy ({} with too few trials)."""
    optuna = optuna_module()
    # fANOVA (variance decomposition) is direction-agnostic, unlike Optuna 5's default PED-ANOVA
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "few trials" notes: the table says how many
            return optuna.importance.get_param_importances(study, evaluator=evaluator, target=lambda t: t.values[0])
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def write_report(study: Any, out: Path) -> dict[str, Path]:
    """best.json, trials.csv, figures and summary.md / report.html (self-contained) in ``out``."""
    best = best_config(study)  # raises when nothing completed yet
    out.mkdir(parents=True, exist_ok=True)
    files = {"best": out / "best.json", "trials": out / "trials.csv"}
    atomic_write_json(files["best"], best)
    atomic_write_text(files["trials"], _trials_csv(study))
    importances = param_importances(study)
    files.update(_figures(study, importances, out))
    html = _report(study, best, importances, files).write(out, "report.html", "summary.md")
    return {**files, "summary": out / "summary.md", "html": html}


def _trials_csv(study: Any) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "state", "val_accuracy", "params", "mmacs", "train_seconds", "worker", "note", "config"])
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        w.writerow(
            [
                t.number,
                t.state.name,
                a.get("val_accuracy", ""),
                a.get("params", ""),
                a.get("mmacs", ""),
                a.get("train_seconds", ""),
                a.get("worker", ""),
                a.get("invalid", ""),
                describe(a["config"]) if "config" in a else "",
            ]
        )
    return buf.getvalue()


def _figures(study: Any, importances: dict[str, float], out: Path) -> dict[str, Path]:
    """history.png, importances.png, parallel.png (+ pareto.png for two objectives)."""
    from optuna.visualization import matplotlib as vm

    plt = pyplot()  # Agg backend before Optuna's plots create figures
    # one objective: Optuna's own value (its history plot then draws the best-so-far line)
    acc: dict[str, Any] = {"target_name": "validation accuracy"}
    if len(study.directions) > 1:
        acc["target"] = lambda t: t.values[0]
    plots: dict[str, Callable[[], Any]] = {
        "history": lambda: vm.plot_optimization_history(study, **acc).figure,
        "parallel": lambda: vm.plot_parallel_coordinate(study, params=list(importances)[:8] or None, **acc).figure,
    }
    if len(study.directions) > 1:
        names = ["validation accuracy", OBJECTIVES[study.user_attrs.get("objective", "accuracy,params")][0]]
        plots["pareto"] = lambda: vm.plot_pareto_front(study, target_names=names).figure

    def bars() -> Any:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(importances) + 1))
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color=PALETTE[0])
        ax.set_xlabel("importance for validation accuracy (fANOVA)")
        if not importances:  # the figure still exists, and says why it is empty
            ax.set_axis_off()
            ax.text(0.5, 0.5, NO_IMPORTANCES, ha="center", va="center", wrap=True, transform=ax.transAxes)
        return fig

    plots["importances"] = bars
    files = {}
    for name, make in plots.items():
        fig: Any = make()
        width = 13 if name == "parallel" else 9  # parallel coordinates: room for 9 axes' tick labels
        fig.set_size_inches(max(fig.get_size_inches()[0], width), max(fig.get_size_inches()[1], 4.5))
        save_figure(fig, out / f"{name}.png")
        files[name] = out / f"{name}.png"
    return files


def _report(study: Any, best: dict[str, Any], importances: dict[str, float], files: dict[str, Path]) -> Report:
    """The report, through the one report engine (HTML with its CSP, and the same as Markdown)."""
    c = trial_counts(study)
    s = best["search"]
    rep = Report(
        f"Search report: study {study.study_name}",
        f"Space `{study.user_attrs.get('space')}`, objective `{study.user_attrs.get('objective')}`, "
        f"epoch budget {study.user_attrs.get('budget_epochs')}; trials: "
        + ", ".join(f"{v} {k.lower()}" for k, v in sorted(c.items()))
        + ".",
    )
    rep.text(
        f"Best trial **{s['trial']}**: validation accuracy **{100 * s['val_accuracy']:.2f}%**, "
        f"{s['params'] or 0:,} parameters, {s['mmacs']} MMAC/image. Chosen on the validation split; "
        "the test set was not used. Retrain it with `mnist-cnn train --config best.json` "
        "(its test accuracy is that run's, reported separately)."
    )
    cols = ["rank", "trial", "val acc", "params", "MMAC", "train s", "configuration"]
    rows = [
        [
            str(i + 1),
            str(r["trial"]),
            f"{100 * r['val_accuracy']:.2f}%",
            f"{r['params'] or 0:,}",
            f"{r['mmacs']}",
            f"{r['train_seconds'] or 0:.1f}",
            r["config"],
        ]
        for i, r in enumerate(trial_rows(study, 10))
    ]
    rep.section("Best trials").table(cols, rows)
    rep.section("Parameter importances")
    if importances:
        rep.table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in importances.items()])
    else:
        rep.text(NO_IMPORTANCES)
    rep.section("Figures")
    for name, path in files.items():
        if path.suffix == ".png":
            rep.figure(path, name)
    rep.section("best.json").pre(json.dumps(best, indent=2), "json")
    return rep
