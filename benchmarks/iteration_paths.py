"""The whole training iteration of a float net and of its QAT twin with either feature path and
with or without the prefetch thread, against the bare step, as ratios measured in one process.

Candidates, each `train.train_epoch` as `fit` runs it (a float run, or `quantize qat`'s
fine-tuning of the W8A8 Brevitas twin with its optimizer settings), on the default synthetic set:
- `torchaudio`: log-mels from torchaudio's MelSpectrogram (power 2), each batch prepared in the
  step's own thread (the feature path before issue 13);
- `serial`: nas_kws.features.MelPower (chunked STFT, re^2 + im^2, one filterbank product), each
  batch prepared in the step's own thread (`train.prefetch: false`, the default);
- `prefetch`: MelPower, the next batch prepared in a helper thread (`train.prefetch: true`).
It also times batch preparation alone (store -> augment -> features -> SpecAugment) with either
feature path and the bare step on a fixed batch. Rounds interleave the candidates; ratios are
medians of per-round ratios (> 1: the second is faster).

    python benchmarks/iteration_paths.py [--model bcresnet1] [--steps 3] [--rounds 5] [--no_qat]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
import torchaudio
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from reference_step import interleaved, iteration_fn, ratio, train_step_fn  # noqa: E402

from nas_kws.config import ExperimentConfig, load_config  # noqa: E402
from nas_kws.data.loader import open_dataset  # noqa: E402
from nas_kws.data.pipeline import Pipeline  # noqa: E402
from nas_kws.device import set_threads  # noqa: E402
from nas_kws.features import FeatureConfig, Frontend  # noqa: E402
from nas_kws.models import create_model  # noqa: E402
from nas_kws.quant.commands import QAT_TRAIN  # noqa: E402

PATHS = ("torchaudio", "serial", "prefetch")


def torchaudio_frontend(features: FeatureConfig) -> Frontend:
    """The frontend with torchaudio's own MelSpectrogram (power 2) in place of MelPower."""
    frontend = Frontend(features)
    frontend.mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=features.sample_rate, n_fft=features.n_fft, win_length=features.win_length,
        hop_length=features.hop_length, n_mels=features.n_mels, center=features.center)
    if features.kind == "mfcc":
        frontend.mfcc.MelSpectrogram = frontend.mel
    return frontend


def path_fns(net: nn.Module, tag: str, overrides: dict, store, steps: int,
             feats: torch.Tensor, labels: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The iteration candidates and the bare step of `net`, named `tag`_..."""
    def cfg(prefetch: bool) -> ExperimentConfig:
        return load_config(ExperimentConfig, ROOT / "experiments" / "bcresnet1.yaml",
                           {**overrides, "train.prefetch": prefetch})

    old = torchaudio_frontend(net.feature_config)
    return {f"{tag}_torchaudio": iteration_fn(copy.deepcopy(net), cfg(False), store, steps, old),
            f"{tag}_serial": iteration_fn(copy.deepcopy(net), cfg(False), store, steps),
            f"{tag}_prefetch": iteration_fn(copy.deepcopy(net), cfg(True), store, steps),
            f"{tag}_step": train_step_fn(copy.deepcopy(net), feats, labels, cfg(False))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bcresnet1")
    parser.add_argument("--steps", type=int, default=3, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no_qat", action="store_true", help="the float net only")
    args = parser.parse_args()
    threads = set_threads()
    overrides = {"model": args.model}
    cfg = load_config(ExperimentConfig, ROOT / "experiments" / "bcresnet1.yaml", overrides)
    store = open_dataset(cfg.data, progress=False)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=len(store.classes))
    features = model.feature_config
    pipe = Pipeline(store, cfg, features, torch.device("cpu"))
    waves, labels = next(iter(pipe.train_loader))
    feats = pipe.frontend(waves)

    def prepare(frontend: Frontend) -> Callable[[], None]:
        def run() -> None:
            pipe.frontend = frontend
            pipe.train_batch(waves, labels, pipe.generator(0))
        return run

    fns = {"prep_torchaudio": prepare(torchaudio_frontend(features)),
           "prep_melpower": prepare(Frontend(features))}
    fns.update(path_fns(model, "float", overrides, store, args.steps, feats, labels))
    tags = ["float"]
    if not args.no_qat:
        from nas_kws.quant.qat import QuantSpec, calibrate, quant_twin  # Brevitas: slow import

        twin = quant_twin(model, QuantSpec())
        calibrate(twin, [feats])
        qat = {**overrides, **QAT_TRAIN, "train.lr": 1e-4}
        fns.update(path_fns(twin, "qat", qat, store, args.steps, feats, labels))
        tags.append("qat")
    times = interleaved(fns, args.rounds, {"prep_torchaudio": 5, "prep_melpower": 5})
    for name in [f"{tag}_{path}" for tag in tags for path in PATHS]:
        times[name] = [s / args.steps for s in times[name]]
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"{args.model}, batch {cfg.train.batch_size}, {threads} threads, {args.rounds} "
          f"interleaved rounds; ms are medians, ratios medians of per-round ratios\n")
    speedup = ratio(times, "prep_torchaudio", "prep_melpower")
    print(f"batch preparation: torchaudio {ms['prep_torchaudio']:.1f} ms, MelPower "
          f"{ms['prep_melpower']:.1f} ms: {speedup:.2f}x\n")
    print("| net | bare step ms | torchaudio ms | serial ms | prefetch ms | torchaudio / serial "
          "| prefetch / serial | iteration / bare step: torchaudio, serial, prefetch |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for tag in tags:
        row = [f"{ms[f'{tag}_{p}']:.0f}" for p in ("step", *PATHS)]
        row += [f"{ratio(times, f'{tag}_torchaudio', f'{tag}_serial'):.2f}",
                f"{ratio(times, f'{tag}_prefetch', f'{tag}_serial'):.2f}",
                ", ".join(f"{ratio(times, f'{tag}_{p}', f'{tag}_step'):.2f}" for p in PATHS)]
        print(f"| {tag} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
