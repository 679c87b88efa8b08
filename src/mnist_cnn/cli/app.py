"""The ``mnist-cnn`` command group, every command added explicitly, and the entry point ``main``."""

from __future__ import annotations

import sys

import click

from mnist_cnn.cli.data import data_group
from mnist_cnn.cli.inference import calibrate_cmd, predict_cmd
from mnist_cnn.cli.reports import compare_cmd, explain_cmd, explore_cmd
from mnist_cnn.cli.search import search_cmd
from mnist_cnn.cli.serving import export_cmd, serve_cmd
from mnist_cnn.cli.train import ensemble_cmd, evaluate_cmd, models_cmd, recipes_cmd, train_cmd
from mnist_cnn.errors import MnistCnnError, first_line


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mnist-cnn")
def cli() -> None:
    """Train, evaluate, compare, explain, export and serve CNNs for MNIST-like digits."""


# in the order `mnist-cnn --help` lists them: the data path from data set to served answer
COMMANDS = [
    data_group,
    models_cmd,
    recipes_cmd,
    train_cmd,
    evaluate_cmd,
    ensemble_cmd,
    calibrate_cmd,
    explore_cmd,
    compare_cmd,
    explain_cmd,
    predict_cmd,
    export_cmd,
    serve_cmd,
    search_cmd,
]
for command in COMMANDS:
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every error a user can cause is one line on stderr and a non-zero exit code."""
    try:
        cli.main(args=argv, prog_name="mnist-cnn", standalone_mode=False)
    except MnistCnnError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # bad flag or value: one line, like every other error
        where = exc.ctx.command_path if exc.ctx is not None else "mnist-cnn"
        click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except (OSError, ValueError, RuntimeError) as exc:  # last line of defence: no traceback
        click.echo(f"error: {type(exc).__name__}: {first_line(exc)}", err=True)
        sys.exit(1)
