"""What a search leaves behind per epoch: arch_history.csv (summary plus every choice's
probability), TensorBoard scalars and the probability heatmap."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nas_kws.nas.space import SearchSpace
from nas_kws.plots import pyplot


def position_names(space: SearchSpace) -> list[str]:
    return [f"pos{p.index}" for p in space.searchable]


SUMMARY_COLUMNS = ["epoch", "phase", "train_loss", "train_acc", "arch_loss", "expected_macs",
                   "derived_macs", "entropy", "valid_acc", "lr", "multiplier", "seconds"]


def history_columns(space: SearchSpace) -> list[str]:
    """The summary, then per position its entropy and the probability of every choice."""
    cols = list(SUMMARY_COLUMNS)
    for name, position in zip(position_names(space), space.searchable):
        cols.append(f"{name}:entropy")
        cols += [f"{name}:{label}" for label in position.labels]
    return cols




def probability_figure(space: SearchSpace, probs: list[torch.Tensor], title: str):
    """Heatmap of op probabilities, one row per searchable position, the argmax op named."""
    plt = pyplot()
    width = max(len(p) for p in probs)
    grid = np.full((len(probs), width), np.nan)
    for i, p in enumerate(probs):
        grid[i, :len(p)] = p.detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(3 + 0.25 * width, 1 + 0.4 * len(probs)))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    names = position_names(space)
    labels = [f"{name}: {position.labels[int(p.argmax())]}"
              for name, position, p in zip(names, space.searchable, probs)]
    ax.set_yticks(range(len(probs)), labels, fontsize=7)
    ax.set_xlabel("choice index (order of the search space YAML)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def log_tensorboard(writer, space: SearchSpace, row: dict[str, Any], probs: list[torch.Tensor],
                    entropies: list[float], ref: float, multiplier: float | None) -> None:
    """One epoch's scalars and the probability heatmap."""
    epoch = row["epoch"]
    for key in ("train_loss", "train_acc", "valid_acc", "lr"):
        writer.add_scalar(key.replace("_", "/", 1), row[key], epoch)
    writer.add_scalar("macs/expected", row["expected_macs"], epoch)
    writer.add_scalar("macs/derived", row["derived_macs"], epoch)
    writer.add_scalar("macs/ref", ref, epoch)
    writer.add_scalar("entropy/mean", row["entropy"], epoch)
    for name, h in zip(position_names(space), entropies):
        writer.add_scalar(f"entropy/{name}", h, epoch)
    if row["phase"] == "search":
        writer.add_scalar("arch/loss", row["arch_loss"], epoch)
    if multiplier is not None:
        writer.add_scalar("arch/multiplier", multiplier, epoch)
    fig = probability_figure(space, probs, f"epoch {epoch}")
    writer.add_figure("arch/probabilities", fig, epoch)
    pyplot().close(fig)
