"""Training configuration: one dataclass, saved in full with every run (nanoGPT style).

A config can come from defaults (the seed's recipe), a named recipe, a JSON file
(``train --config``) and command-line flags, in that order of precedence (flags win).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from mnist_cnn.artifacts.files import read_json
from mnist_cnn.cpu import usable_cpus
from mnist_cnn.errors import ConfigError
from mnist_cnn.models.registry import model_entry
from mnist_cnn.training.augment import parse_augment

# bounds that keep a typo from reaching torch as a crash or a silent 12x slowdown
MAX_EPOCHS = 100_000
MAX_BATCH = 1_000_000
MAX_LR = 10.0
MAX_SEED = 2**62  # seed + 7919 * (rank + 1) must stay inside torch's 64-bit generator seed


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(usable_cpus())


@dataclass
class TrainConfig:
    # model
    model: str = "model1"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # data
    dataset: str = "mnist"
    data_dir: str | None = None
    val_size: int = 5000
    split_seed: int | None = None  # seed of the train/validation split (None: `seed`); fix it to vary only the training
    train_subset: int | None = None  # use only the first N training images (after the split)
    # optimisation (defaults: the seed's recipe)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd | nesterov
    optimizer_impl: str = "auto"  # auto (fused on CPU and CUDA, else torch's choice) | fused | foreach | loop
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | onecycle | cosine | linear
    warmup: float = 0.0  # fraction of all steps spent warming up (onecycle default 0.25)
    label_smoothing: float = 0.0
    augment: Any = "none"  # preset name or dict of AugmentConfig fields
    ema: float = 0.0  # EMA decay of weights (0 = off), e.g. 0.999
    # the final validation and test figures average the image and four 1-pixel shifts (test-time
    # augmentation, evaluation/metrics.py); per-epoch validation and calibration stay single-view
    tta: bool = False
    # knowledge distillation (training/distill.py): a teacher's softened probabilities as extra targets
    teacher: str | None = None  # run folder, model file or ensemble folder (or several, comma-separated)
    distill_alpha: float = 0.5  # weight of the teacher term; 1 - alpha stays on the labels
    distill_temperature: float = 4.0
    # control
    seed: int = 0
    early_stopping_patience: int | None = None
    early_stopping_monitor: str = "val_loss"  # val_loss | val_accuracy
    device: str = "auto"  # auto (the accelerator PyTorch finds, else cpu) | cpu | cuda[:N] | mps | xpu[:N]
    threads: int | None = None  # CPU threads (default: the cores free of other work, re-checked each epoch)
    compile: bool = False
    precision: str = "auto"  # auto (bf16 autocast on CUDA and on CPUs with native bf16) | fp32 | bf16
    channels_last: bool = True
    eval_batch_size: int = 2000
    recipe: str | None = None
    tensorboard: str | None = None  # log per-epoch scalars to this folder (needs the tensorboard package)

    # ------------------------------------------------------------------ validation

    def validate(self) -> TrainConfig:
        checks = [
            (1 <= self.epochs <= MAX_EPOCHS, "epochs", f"must be between 1 and {MAX_EPOCHS:,}"),
            (1 <= self.batch_size <= MAX_BATCH, "batch_size", f"must be between 1 and {MAX_BATCH:,}"),
            (0 < self.lr <= MAX_LR, "lr", f"must be a number in (0, {MAX_LR:g}]"),
            (0 <= self.seed < MAX_SEED, "seed", f"must be between 0 and 2**62 - 1 ({MAX_SEED - 1:,})"),
            (
                self.split_seed is None or 0 <= self.split_seed < MAX_SEED,
                "split_seed",
                f"must be between 0 and 2**62 - 1 ({MAX_SEED - 1:,})",
            ),
            (0 < self.distill_alpha <= 1, "distill_alpha", "must be in (0, 1]"),
            (0 < self.distill_temperature <= 100, "distill_temperature", "must be in (0, 100]"),
            (self.teacher is None or self.teacher.strip() != "", "teacher", "must name a run, model file or ensemble"),
            (all(0 <= b < 1 for b in self.betas), "betas", "must be two numbers in [0, 1)"),
            (0 <= self.momentum < 1, "momentum", "must be in [0, 1)"),
            (math.isfinite(self.weight_decay) and self.weight_decay <= 1, "weight_decay", "must be a number <= 1"),
            (
                self.threads is None or 1 <= self.threads <= cpu_count(),
                "threads",
                f"must be between 1 and {cpu_count()} (the CPUs this process may use)",
            ),
            (1 <= self.eval_batch_size <= MAX_BATCH, "eval_batch_size", f"must be between 1 and {MAX_BATCH:,}"),
            (self.val_size >= 0, "val_size", "must be >= 0"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)"),
            (0 <= self.ema < 1, "ema", "must be in [0, 1)"),
            (0 <= self.warmup < 1, "warmup", "must be in [0, 1)"),
            (
                self.optimizer in ("adam", "adamw", "sgd", "nesterov"),
                "optimizer",
                "must be adam, adamw, sgd or nesterov",
            ),
            (
                self.optimizer_impl in ("auto", "fused", "foreach", "loop"),
                "optimizer_impl",
                "must be auto, fused, foreach or loop",
            ),
            (
                self.schedule in ("constant", "onecycle", "cosine", "linear"),
                "schedule",
                "must be constant, onecycle, cosine or linear",
            ),
            (
                self.early_stopping_monitor in ("val_loss", "val_accuracy"),
                "early_stopping_monitor",
                "must be val_loss or val_accuracy",
            ),
            (
                self.early_stopping_patience is None or self.early_stopping_patience >= 1,
                "early_stopping_patience",
                "must be >= 1",
            ),
            (
                self.early_stopping_patience is None or self.val_size > 0,
                "early_stopping_patience",
                "needs a validation split (val_size > 0)",
            ),
            (
                self.device in ("auto", "cpu", "cuda", "mps", "xpu") or self.device.startswith(("cuda:", "xpu:")),
                "device",
                "must be auto, cpu, cuda[:N], mps or xpu[:N]",
            ),
            (self.precision in ("auto", "fp32", "bf16"), "precision", "must be auto, fp32 or bf16"),
            (self.train_subset is None or self.train_subset >= 1, "train_subset", "must be >= 1"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} {why}")

        model_entry(self.model)
        parse_augment(self.augment)
        return self

    @property
    def val_seed(self) -> int:
        """The seed of the train/validation split: ``split_seed``, else the run's ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object of training options")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
        hints = get_type_hints(cls)
        values = {k: _coerce(k, v, hints[k], source) for k, v in d.items()}
        return cls(**values)

    def merged(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with ``overrides`` (None values ignored) applied and type-checked."""
        base = self.to_dict()
        base.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.from_dict(base)


_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "an object"}


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """Check ``value`` against the field's type hint; accept ints for floats and lists for tuples."""
    if key == "augment":
        return value
    args = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) in (Union, UnionType) else [hint]
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise ConfigError(f"{source}: {key} must not be null")
    base = get_origin(args[0]) or args[0]
    if base is tuple:
        if (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            return (float(value[0]), float(value[1]))
        raise ConfigError(f"{source}: {key} must be a list of two numbers")
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: {key} must be {_TYPES.get(base, base.__name__)}, got {json.dumps(value)}")


def load_config_file(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a ``train --config`` JSON file: a TrainConfig object, or a run's config.json."""

    p = Path(path)
    data = read_json(p, "config file")
    if isinstance(data, dict) and "train" in data and isinstance(data["train"], dict):
        data = data["train"]  # a run's config.json or a search's best.json
    return TrainConfig.from_dict(data, source=str(p))
