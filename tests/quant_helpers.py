"""Small trained nets for the quantization, export and report tests: a learnable task on
generated features (no audio), so accuracy is far above chance within seconds."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_kws.config import ExperimentConfig, load_config
from nas_kws.features import FeatureConfig
from nas_kws.train import train_experiment


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These nets are tiny: one thread beats two (5x on a busy 2-core machine, where two
    threads mostly wait on each other); restored for the modules that follow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pattern_features(n: int, shape: tuple[int, int], classes: int = 4,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with a brighter frequency band per class, in the middle of the clip."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    feats = torch.randn(n, 1, *shape, generator=g)
    bins, frames = shape
    band = bins // classes
    for k in range(classes):
        feats[labels == k, :, k * band:(k + 1) * band, frames // 4: 3 * frames // 4] += 1.5
    return feats, labels


def train_on(model: nn.Module, feats: torch.Tensor, labels: torch.Tensor, steps: int = 60,
             batch: int = 16, lr: float = 3e-3, seed: int = 0) -> nn.Module:
    """A few Adam steps: enough for the pattern task, returned in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(feats), (batch,), generator=g)
        loss = F.cross_entropy(model(feats[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def tiny_genotype(classes: int = 4) -> dict:
    """A hybrid searched-style net: MBConv cells, a skipped cell and a BC-Res block on MFCC."""
    return {
        "name": "tiny_hybrid",
        "features": FeatureConfig.mfcc(10).to_dict(),
        "num_classes": classes,
        "stem": {"out_channels": 16, "kernel": [5, 11], "stride": [1, 2], "act": "relu6"},
        "blocks": [{"op": "mbconv", "out_channels": 16, "kernel": 3, "expand": 3, "stride": 2},
                   {"op": "mbconv", "out_channels": 16, "kernel": 5, "expand": 2},
                   {"op": "zero"},
                   {"op": "bcres", "out_channels": 16, "ssn_groups": 5}],
        "head": {"type": "pool_linear", "channels": 32},
    }


def accuracy(model: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(feats).argmax(1) == labels).float().mean().item()


def train_tone_run(tone_root, run_dir, model: str) -> None:
    """A one-epoch run of `model` on the tone folders: the input the quantize / export
    commands are tested on."""
    cfg = load_config(ExperimentConfig, None, {
        "model": model, "data.dataset": "folders", "data.root": str(tone_root),
        "train.epochs": 1, "train.batch_size": 20, "train.warmup_epochs": 0,
        "augment.noise_prob": 0.0})
    train_experiment(cfg, run_dir, progress=False)
