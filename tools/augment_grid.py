"""Save a grid of augmented training digits, one row per augmentation preset, to check by eye that
digits stay upright and legible (no flips) at every strength::

    python tools/augment_grid.py --data-dir ../shared/data/mnist --out results/augment-grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=Path("results/augment-grid.png"))
    ap.add_argument("--presets", default="none,light,medium,strong", help="Comma-separated presets or key=value sets.")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--draws", type=int, default=3, help="Random draws per image.")
    args = ap.parse_args(argv)

    import torch

    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.evaluation.metrics import normalise
    from mnist_cnn.reports.figures import pyplot, save_figure
    from mnist_cnn.training.augment import augment_batch, parse_augment

    ds = load_dataset("mnist", args.data_dir)
    x = normalise(torch.from_numpy(ds.train_images[: args.images].copy()), 0.1307, 0.3081)  # [n,1,28,28]
    presets = args.presets.split(";") if "=" in args.presets else args.presets.split(",")
    plt = pyplot()
    cols = args.images * args.draws
    fig, axes = plt.subplots(len(presets), cols, figsize=(cols, 1.15 * len(presets)), squeeze=False)
    for r, name in enumerate(presets):
        gen = torch.Generator().manual_seed(0)
        for d in range(args.draws):
            out = augment_batch(x, parse_augment(name), gen)
            for i in range(args.images):
                ax = axes[r, d * args.images + i]
                ax.imshow(out[i, 0], cmap="gray", vmin=float(x.min()), vmax=float(x.max()))
                ax.axis("off")
        axes[r, 0].set_title(name, fontsize=9, loc="left")
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
