"""Accuracy, per-class accuracy and the confusion matrix of a model on one split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_kws.plots import pyplot, save_figure


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    per_class: list[float]     # recall per class; nan for a class absent from the split
    confusion: np.ndarray      # rows: true class, columns: predicted class

    def summary(self, classes: list[str]) -> dict:
        return {"accuracy": self.accuracy, "loss": self.loss,
                "per_class": dict(zip(classes, self.per_class)),
                "confusion": self.confusion.tolist()}


@torch.no_grad()
def evaluate(model: nn.Module, frontend: nn.Module, loader, device: torch.device,
             num_classes: int | None = None) -> EvalResult:
    model.eval()
    num_classes = num_classes or model.num_classes
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    total_loss, count = 0.0, 0
    for waves, labels in loader:
        waves, labels = waves.to(device), labels.to(device)
        logits = model(frontend(waves)).float()
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        count += len(labels)
        pairs = labels.cpu() * num_classes + logits.argmax(1).cpu()
        counts = torch.bincount(pairs, minlength=num_classes ** 2)
        confusion += counts.view(num_classes, num_classes)
    cm = confusion.numpy()
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(cm) / support, np.nan)
    return EvalResult(accuracy=float(np.trace(cm) / max(count, 1)), loss=total_loss / max(count, 1),
                      per_class=[float(x) for x in per_class], confusion=cm)


def format_confusion(confusion: np.ndarray, classes: list[str]) -> str:
    width = max(5, max(len(c) for c in classes))
    head = " " * (width + 1) + " ".join(f"{c[:6]:>6}" for c in classes)
    rows = [f"{name:>{width}} " + " ".join(f"{v:>6d}" for v in row)
            for name, row in zip(classes, confusion)]
    return "\n".join([head, *rows])


def confusion_figure(confusion: np.ndarray, classes: list[str], title: str = ""):
    """A matplotlib figure of the row-normalised confusion matrix (for PNG and TensorBoard)."""
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    size = 2 + 0.45 * len(classes)
    fig, ax = pyplot().subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 40:
        for i, row in enumerate(confusion):
            for j, value in enumerate(row):
                if value:
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_confusion_png(path: str | Path, confusion: np.ndarray, classes: list[str],
                       title: str = "") -> Path:
    return save_figure(confusion_figure(confusion, classes, title), path)
