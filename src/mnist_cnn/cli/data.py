"""``mnist-cnn data info|verify|download``."""

from __future__ import annotations

from pathlib import Path

import click

from mnist_cnn.cli.options import data_dir_option, dataset_option, echo_json, json_option


@click.group("data")
def data_group() -> None:
    """Inspect, verify or download a data set."""


@data_group.command("info")
@dataset_option()
@data_dir_option()
@json_option()
def data_info(dataset: str, data_dir: Path | None, as_json: bool) -> None:
    """Where the data set is and what it holds."""
    import numpy as np

    from mnist_cnn.data.datasets import load_dataset, resolve_data_dir

    folder = resolve_data_dir(dataset, data_dir)
    ds = load_dataset(dataset, folder)
    splits = {}
    for split in ("train", "test"):
        x, y = ds.split(split)
        splits[split] = {
            "images": len(x),
            "shape": list(x.shape[1:]),
            "per_class": np.bincount(y, minlength=len(ds.classes)).tolist(),
        }
    if as_json:
        echo_json({"dataset": dataset, "folder": str(folder), "classes": list(ds.classes), "splits": splits})
        return
    click.echo(f"dataset   {dataset}\nfolder    {folder}\nclasses   {', '.join(ds.classes)}")
    for split, s in splits.items():
        counts = " ".join(map(str, s["per_class"]))
        click.echo(f"{split:<9} {s['images']:,} images {s['shape'][0]}x{s['shape'][1]} uint8; per class: {counts}")


@data_group.command("verify")
@dataset_option()
@data_dir_option()
@json_option()
def data_verify(dataset: str, data_dir: Path | None, as_json: bool) -> None:
    """Check every file's format and compare its checksum with the official one."""
    from mnist_cnn.data.datasets import verify

    rows = verify(dataset, data_dir)
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        mark = "official" if row["official"] else "differs from official (format OK)"
        click.echo(f"ok  {row['file']}  {row['count']:,} {row['kind']}  sha256 {str(row['sha256'])[:16]}…  {mark}")


@data_group.command("download")
@dataset_option()
@data_dir_option("Where to put the files (default: the user cache; env: MNIST_CNN_DATA_DIR).")
@click.option("--mirror", "mirrors", multiple=True, help="Mirror base URL to try (repeatable; default: official).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@json_option()
def data_download(dataset: str, data_dir: Path | None, mirrors: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Download the official files (verified by sha256; idempotent)."""
    from mnist_cnn.data.download import download

    folder = download(dataset, data_dir, mirrors or None, timeout=timeout, progress=not as_json)
    if as_json:
        echo_json({"dataset": dataset, "folder": str(folder)})
    else:
        click.echo(f"{dataset} ready in {folder}")
