"""Figures for files and TensorBoard: matplotlib on its headless Agg backend, PNGs written
atomically."""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from nas_kws.fileio import atomic_write


def pyplot() -> ModuleType:
    """matplotlib.pyplot on Agg: jobs run without a display and figures only go to files.
    Imported on first use, as most commands draw nothing."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG (atomically) and close it."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    pyplot().close(fig)
    return Path(path)
