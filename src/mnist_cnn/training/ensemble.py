"""``train --ensemble N``: train N seeds of one config, then build their ensemble.

Every member gets the same weight and seeds ``seed, seed+1, ...`` fixed in advance: nothing is
selected, so no test (or validation) result feeds back into the ensemble.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from mnist_cnn.artifacts.runs import foreign_files, has_checkpoint, is_finished
from mnist_cnn.data.datasets import Dataset
from mnist_cnn.errors import ConfigError, RunExistsError
from mnist_cnn.inference.ensemble import build_ensemble
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.engine import train


def member_dir(out: Path, k: int) -> Path:
    """The run folder of member ``k`` of the ensemble in ``out``."""
    return out / f"member-{k}"


def train_members(
    cfg: TrainConfig,
    out: str | os.PathLike[str],
    n: int,
    *,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    data: Dataset | None = None,
) -> dict[str, Any] | None:
    """Train ``n`` members (seeds ``cfg.seed + k``) into ``out/member-k``, then build the ensemble in
    ``out``. ``resume`` skips finished members and resumes an interrupted one. Returns the ensemble's
    metrics (None on the non-zero ranks of a multi-process run)."""
    out = Path(out)
    if n < 1:
        raise ConfigError(f"--ensemble {n}: needs at least 1 member")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if out.exists() and any(out.iterdir()) and not resume:
        if not force:
            raise RunExistsError(
                f"{out}: folder already exists; pass --resume to continue the ensemble, "
                "--force to overwrite it, or choose another --out"
            )
        foreign = foreign_files(out)
        if foreign:
            raise RunExistsError(
                f"{out}: --force replaces only an ensemble folder's own files, and this folder "
                f"also holds {', '.join(foreign[:5])}; move them away or choose another --out"
            )
        if main_rank:
            shutil.rmtree(out)
    runs: list[Path] = []
    walls: list[float | None] = []
    for k in range(n):
        run = member_dir(out, k)
        runs.append(run)
        walls.append(None)  # stays None for a member finished before this call (--resume)
        if resume and is_finished(run):
            continue
        member_cfg = cfg.merged({"seed": cfg.seed + k})
        t = time.perf_counter()
        train(member_cfg, run, resume=resume and has_checkpoint(run), force=True, quiet=quiet, data=data)
        walls[-1] = time.perf_counter() - t
    if not main_rank:
        return None
    return build_ensemble(
        runs,
        out,
        force=True,
        data_dir=cfg.data_dir,
        extra={"member_runs": [str(r) for r in runs], "member_wall_seconds": walls},
    )
