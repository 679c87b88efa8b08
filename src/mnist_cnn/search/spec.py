"""What one search is: :class:`SearchSpec`, the settings every worker of a study shares.

The spec names the study and its storage, the search space (``default``: architecture and recipe,
``arch``, ``recipe``), the objective (validation accuracy, alone or against parameters or training
time), the pruner and the trial budget. :meth:`SearchSpec.study_attrs` is what every worker of one
study must agree on; the fields in :data:`LOCAL_FIELDS` may differ from machine to machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mnist_cnn.errors import ConfigError

SPACES = ("default", "arch", "recipe")
OBJECTIVES = {"accuracy": (), "accuracy,params": ("params",), "accuracy,time": ("train_seconds",)}
PRUNERS = ("median", "hyperband", "none")
# fields a space searches: giving them as flags too would be silently overridden, so it is an error
SEARCHED_FIELDS = {
    "arch": ("model", "model_kwargs"),
    "recipe": ("optimizer", "lr", "batch_size", "weight_decay", "label_smoothing", "augment", "schedule"),
}
# base-config fields that may differ between the machines of one study
LOCAL_FIELDS = ("data_dir", "threads", "device")


@dataclass(frozen=True)
class SearchSpec:
    """Everything a worker needs (picklable: it is handed to spawned worker processes)."""

    study: str
    storage: str
    trials: int
    base: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields the space does not search
    space: str = "default"
    budget_epochs: int = 3
    objective: str = "accuracy"
    timeout: float | None = None
    pruner: str = "median"
    prune_below: float | None = None
    max_mmacs: float | None = 25.0
    heartbeat: int = 30

    def validate(self) -> SearchSpec:
        checks = [
            (self.trials >= 1, "--trials", "must be >= 1"),
            (self.space in SPACES, "--space", f"must be one of {', '.join(SPACES)}"),
            (self.objective in OBJECTIVES, "--objective", f"must be one of {', '.join(OBJECTIVES)}"),
            (self.pruner in PRUNERS, "--pruner", f"must be one of {', '.join(PRUNERS)}"),
            (self.budget_epochs >= 1, "--budget-epochs", "must be >= 1"),
            (self.heartbeat >= 1, "--heartbeat", "must be >= 1 second"),
            (self.timeout is None or self.timeout > 0, "--timeout", "must be > 0 seconds"),
            (self.base.get("val_size", 1) > 0, "--val-size", "must be > 0: trials are scored on the validation split"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ConfigError(f"search: {name} {why}")
        return self

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * len(OBJECTIVES[self.objective])

    def study_attrs(self) -> dict[str, Any]:
        """What every worker of one study must agree on (stored on the study when it is created)."""
        base = {k: v for k, v in self.base.items() if k not in LOCAL_FIELDS}
        return json.loads(
            json.dumps(
                {
                    "space": self.space,
                    "objective": self.objective,
                    "budget_epochs": self.budget_epochs,
                    "max_mmacs": self.max_mmacs,
                    "base": base,
                }
            )
        )
