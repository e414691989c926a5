"""Features computed once on the CPU, for the many quick evaluations and calibrations of
rounded, quantized and compressed nets (the frontend then costs nothing per net)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nas_kws.data.loader import BatchLoader
from nas_kws.evaluation import evaluate
from nas_kws.features import FeatureConfig, Frontend


@torch.no_grad()
def split_features(store, features: FeatureConfig, split: str, limit: int | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, 1, bins, frames), labels) of a split; `limit` takes a seeded random subset."""
    arrays = store.split(split)
    indices = np.arange(len(arrays.labels))
    if limit is not None and limit < len(indices):
        indices = np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))
    frontend = Frontend(features)
    feats, labels = [], []
    for waves, y in BatchLoader(arrays.audio, arrays.labels, 250, indices=indices,
                                  split=split):
        feats.append(frontend(waves))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def batches(feats: torch.Tensor, labels: torch.Tensor,
            size: int = 250) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(feats[i:i + size], labels[i:i + size]) for i in range(0, len(feats), size)]


def accuracy(model: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy on precomputed features, through the trainer's evaluate (identity frontend)."""
    num_classes = getattr(model, "num_classes", int(labels.max()) + 1)
    return evaluate(model, nn.Identity(), batches(feats, labels), torch.device("cpu"),
                    num_classes).accuracy


def calibrated_twin(model: nn.Module, spec, store, clips: int, seed: int = 0) -> nn.Module:
    """The Brevitas twin with activation ranges calibrated on `clips` clean training clips."""
    from nas_kws.quant.qat import calibrate, quant_twin  # Brevitas: slow to import

    twin = quant_twin(model, spec)
    calib, _ = split_features(store, model.feature_config, "train", limit=clips, seed=seed)
    calibrate(twin, calib.split(100))
    return twin
