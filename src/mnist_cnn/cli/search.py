"""CLI of the search stage: ``mnist-cnn search`` (run/join a study) and ``mnist-cnn search report``.

Heavy modules (torch, optuna) are imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mnist_cnn.cli.options import build_config, config_flags, echo_json, json_option, train_options
from mnist_cnn.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///runs/search.db"


def _storage_option(f):
    return click.option(
        "--storage",
        default=DEFAULT_STORAGE,
        show_default=True,
        envvar="MNIST_CNN_SEARCH_STORAGE",
        help="Optuna storage URL: sqlite:///FILE or postgresql://USER:PW@HOST/DB (env: MNIST_CNN_SEARCH_STORAGE).",
    )(f)


@click.group("search", invoke_without_command=True)
@click.option("--study", help="Study name; the same name and storage joins an existing study.")
@_storage_option
@click.option(
    "--trials",
    type=int,
    default=20,
    show_default=True,
    help="Finished trials the study should hold (all workers together).",
)
@click.option("--timeout", type=float, help="Stop starting new trials after S seconds (per worker).")
@click.option(
    "--space",
    type=click.Choice(["default", "arch", "recipe"]),
    default="default",
    show_default=True,
    help="arch: conv blocks/pooling/BN/head; recipe: optimiser/lr/batch/...; default: both.",
)
@click.option(
    "--budget-epochs", type=int, default=3, show_default=True, help="Epochs per trial (the recipe space searches 1..E)."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Local worker processes sharing the study.",
)
@click.option(
    "--objective",
    type=click.Choice(["accuracy", "accuracy,params", "accuracy,time"]),
    default="accuracy",
    show_default=True,
    help="Maximise validation accuracy; with a second objective, find the Pareto front.",
)
@click.option(
    "--pruner",
    type=click.Choice(["median", "hyperband", "none"]),
    default="median",
    show_default=True,
    help="Stop weak trials early from their per-epoch validation accuracy.",
)
@click.option("--prune-below", type=float, help="Also prune any trial whose validation accuracy is below this.")
@click.option(
    "--max-mmacs",
    type=float,
    default=25.0,
    show_default=True,
    help="Skip (prune) architectures over this many million multiply-adds per image.",
)
@click.option(
    "--heartbeat",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Seconds between trial heartbeats; a trial silent for 3x this is failed and re-queued.",
)
@train_options
@json_option("Print the study's summary and best configuration as JSON.")
@click.pass_context
def search_cmd(
    ctx: click.Context,
    study: str | None,
    storage: str,
    trials: int,
    timeout: float | None,
    space: str,
    budget_epochs: int,
    workers: int,
    objective: str,
    pruner: str,
    prune_below: float | None,
    max_mmacs: float,
    heartbeat: int,
    recipe: str | None,
    config_file: Path | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Search architectures/recipes with Optuna on a shared study (resumable; joinable elsewhere).

    Flags of `train` fix what the space does not search (e.g. --train-subset, --threads, --lr for
    --space arch). Trials are scored on the validation split only.
    """
    if ctx.invoked_subcommand is not None:
        return
    from mnist_cnn.search.results import summary_line
    from mnist_cnn.search.spec import SearchSpec
    from mnist_cnn.search.study import run_search

    if not study:
        raise ConfigError("search: --study NAME is required (the same name and --storage resumes or joins it)")
    _check_flags(space, flags)
    base = build_config(recipe, config_file, flags).to_dict()
    spec = SearchSpec(
        study=study,
        storage=storage,
        trials=trials,
        base=base,
        space=space,
        budget_epochs=budget_epochs,
        objective=objective,
        timeout=timeout,
        pruner=pruner,
        prune_below=prune_below,
        max_mmacs=max_mmacs,
        heartbeat=heartbeat,
    ).validate()
    result = run_search(spec, workers)
    if as_json:
        echo_json(_study_json(result))
        return
    click.echo(summary_line(result))
    click.echo(f"report: mnist-cnn search report --study {study} --storage {storage} --out runs/search-{study}")


def _check_flags(space: str, flags: dict[str, Any]) -> None:
    """Flags the space searches would be overridden silently: refuse them instead."""
    if flags.get("epochs") is not None:
        raise ConfigError("search: use --budget-epochs E instead of --epochs")
    from mnist_cnn.search.spec import SEARCHED_FIELDS

    given_fields = config_flags(flags)
    for s in [space] if space != "default" else ["arch", "recipe"]:
        given = [name for name in given_fields if name in SEARCHED_FIELDS[s]]
        if given:
            raise ConfigError(
                f"search: --{given[0].replace('_', '-')} is searched by --space {space}; drop it "
                "or choose a space that does not search it"
            )


@search_cmd.command("report")
@click.option("--study", required=True, help="Study name.")
@_storage_option
@click.option("--out", type=click.Path(path_type=Path), help="Report folder (default: runs/search-<study>).")
@json_option("Print the study's summary, best configuration and the report's files as JSON.")
def search_report_cmd(study: str, storage: str, out: Path | None, as_json: bool) -> None:
    """Best trials, history, importances, parallel coordinates, and best.json for `train --config`."""
    from mnist_cnn.search.report import write_report
    from mnist_cnn.search.results import summary_line
    from mnist_cnn.search.storage import load_study, open_storage

    st = load_study(study, open_storage(storage, heartbeat=None))
    out = out or Path("runs") / f"search-{study}"
    files = write_report(st, out)
    if as_json:
        echo_json({**_study_json(st), "files": {k: str(v) for k, v in files.items()}})
        return
    click.echo(summary_line(st))
    click.echo(f"report: {files['html']}  summary: {files['summary']}  best config: {files['best']}")
    click.echo(f"retrain: mnist-cnn train --config {files['best']} --out runs/{study}-best")


def _study_json(study: Any) -> dict[str, Any]:
    """A study as JSON: its summary line and, once a trial completed, the best configuration."""
    from mnist_cnn.search.results import best_config, finished, summary_line

    return {
        "study": study.study_name,
        "summary": summary_line(study),
        "completed": len(finished(study)),
        "best": best_config(study) if finished(study) else None,
    }
