"""Evaluation: batched inference, loss/accuracy, per-class metrics, confusion matrix, calibration fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_cnn.evaluation.calibration import calibration_metrics, calibration_record, log_probs, not_fitted


def normalise(x_uint8: torch.Tensor, mean: float, std: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[B, 28, 28]`` or ``[B, 1, 28, 28]`` -> normalised float ``[B, 1, 28, 28]``."""
    x = x_uint8.to(dtype)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.mul_(1.0 / (255.0 * std)).sub_(mean / std)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    mean: float,
    std: float,
    batch_size: int = 2000,
    device: torch.device | str | None = None,
    tta: bool = False,
) -> torch.Tensor:
    """Logits ``[N, classes]`` (float32, on CPU) for uint8 images ``[N, 28, 28]``."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images if images.flags.writeable else images.copy())
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = normalise(images[i : i + batch_size].to(device), mean, std)
        x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).float()
        if tta:
            logits = _tta_logits(model, x, logits)
        out.append(logits.cpu())
    if not out:  # no images: an empty batch still gives the model's output width
        out.append(model(torch.zeros(0, 1, 28, 28, device=device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def predict_probs(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    normalisation: dict[str, float],
    temperature: float = 1.0,
    batch_size: int = 2000,
    tta: bool = False,
) -> np.ndarray:
    """``softmax(logits / temperature)`` ``[N, classes]`` (float32) for uint8 images ``[N, 28, 28]``,
    normalised as the model file says (``meta["normalisation"]``: mean, std)."""
    n = normalisation
    logits = predict_logits(model, images, n["mean"], n["std"], batch_size, tta=tta)
    return (logits / temperature).softmax(1).numpy().astype(np.float32)


def _tta_logits(model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: average log-probabilities over the image and 4 one-pixel shifts."""
    bg = x.amin()
    views = [logits.log_softmax(1)]
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        shifted = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        # rolled-in border rows/columns become background
        if dy:
            shifted[:, :, 0 if dy > 0 else -1, :] = bg
        if dx:
            shifted[:, :, :, 0 if dx > 0 else -1] = bg
        views.append(model(shifted).float().log_softmax(1))
    return torch.stack(views).mean(0)


@dataclass
class EvalResult:
    probs: np.ndarray  # [N, C] softmax probabilities
    preds: np.ndarray  # [N]
    labels: np.ndarray  # [N]
    loss: float
    accuracy: float
    scores: np.ndarray | None = None  # [N, C] logits (or log-probabilities), when known: for calibration

    def log_scores(self) -> np.ndarray:
        """Scores for calibration: the logits when known, else the log of the probabilities."""
        return self.scores if self.scores is not None else log_probs(self.probs)

    def calibration(self, temperature: float) -> dict[str, float]:
        """NLL and ECE before and after dividing the scores by ``temperature`` (accuracy is unchanged)."""
        return {"temperature": temperature, **calibration_metrics(self.log_scores(), self.labels, temperature)}

    def per_class(self, classes: list[str] | tuple[str, ...]) -> dict[str, dict[str, float]]:
        from sklearn.metrics import precision_recall_fscore_support

        p, r, f, s = precision_recall_fscore_support(
            self.labels, self.preds, labels=list(range(len(classes))), zero_division=0
        )
        return {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        }

    def report(self, classes: list[str] | tuple[str, ...]) -> str:
        from sklearn.metrics import classification_report

        return classification_report(
            self.labels,
            self.preds,
            labels=list(range(len(classes))),
            target_names=list(classes),
            digits=4,
            zero_division=0,
        )

    def confusion(self, n_classes: int) -> np.ndarray:
        from sklearn.metrics import confusion_matrix

        return confusion_matrix(self.labels, self.preds, labels=list(range(n_classes)))


def result_from_logits(logits: torch.Tensor, labels: np.ndarray | torch.Tensor) -> EvalResult:
    y = torch.tensor(np.asarray(labels), dtype=torch.long)
    loss = float(F.cross_entropy(logits, y)) if len(y) else float("nan")
    result = result_from_probs(logits.softmax(1).numpy(), np.asarray(labels), loss)
    result.scores = logits.numpy()
    return result


def result_from_probs(probs: np.ndarray, labels: np.ndarray, loss: float | None = None) -> EvalResult:
    labels = np.asarray(labels).astype(np.int64)
    preds = probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)
    if loss is None:
        loss = (
            float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())
            if len(labels)
            else float("nan")
        )
    acc = float((preds == labels).mean()) if len(labels) else float("nan")
    return EvalResult(probs=probs, preds=preds, labels=labels, loss=loss, accuracy=acc)


def evaluate_model(
    model: nn.Module,
    images: Any,
    labels: Any,
    normalisation: dict[str, float],
    batch_size: int = 2000,
    tta: bool = False,
) -> EvalResult:
    logits = predict_logits(model, images, normalisation["mean"], normalisation["std"], batch_size, tta=tta)
    return result_from_logits(logits, labels)


def fit_calibration(
    model: nn.Module, images: Any, labels: Any, normalisation: dict[str, float], batch_size: int = 2000
) -> dict[str, Any]:
    """The ``calibration`` metadata of ``model``: a temperature fitted on ``images``/``labels`` (the
    validation split), or T = 1 and the reason when there are none."""
    if len(labels) == 0:
        return not_fitted("no validation split (val_size 0): probabilities are the raw softmax")
    logits = predict_logits(model, images, normalisation["mean"], normalisation["std"], batch_size)
    return calibration_record(logits.numpy(), np.asarray(labels))
