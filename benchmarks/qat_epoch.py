"""QAT fine-tuning iterations before and after the trainer's fast path, and batch preparation
with torchaudio's power spectrum against nas-kws's, as ratios measured in one process.

"before" is the loop as it ran before issue 13: each batch augmented and featurized in the
step's own thread, with torchaudio's power spectrogram (complex abs, squared); "after" is
`train.train_epoch` as `fit` runs it for `quantize qat` now (the next batch prepared in a helper
thread, the power spectrum as re^2 + im^2, loss and accuracy sums on the device). The net is
BC-ResNet-1's W8A8 Brevitas twin (seeded initial weights, calibrated on one training batch)
with `quantize qat`'s optimizer settings, on the default synthetic set; the bare twin step on a
fixed batch shows how much of an iteration the batch preparation can be at most. Rounds
interleave the candidates; ratios are medians of per-round ratios (> 1: "after" is faster).

    python benchmarks/qat_epoch.py [--model bcresnet1] [--steps 4] [--rounds 3]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
import torchaudio

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


def torchaudio_frontend(features: FeatureConfig) -> Frontend:
    """The frontend as it was before: torchaudio's own power spectrogram inside its mel
    transform."""
    frontend = Frontend(features)
    mel = frontend.transform if features.kind == "logmel" else frontend.transform.MelSpectrogram
    mel.spectrogram = torchaudio.transforms.Spectrogram(
        n_fft=features.n_fft, win_length=features.win_length, hop_length=features.hop_length,
        center=features.center, power=2.0)
    return frontend


def main() -> None:
    from nas_kws.quant.qat import QuantSpec, calibrate, quant_twin  # Brevitas: slow to import

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bcresnet1")
    parser.add_argument("--steps", type=int, default=4, help="QAT iterations per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    threads = set_threads()
    overrides = {**QAT_TRAIN, "train.lr": 1e-4, "model": args.model}
    cfg = load_config(ExperimentConfig, ROOT / "experiments" / "bcresnet1.yaml", overrides)
    before_cfg = load_config(ExperimentConfig, ROOT / "experiments" / "bcresnet1.yaml",
                             {**overrides, "train.prefetch": False})
    store = open_dataset(cfg.data, progress=False)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=len(store.classes))
    features = model.feature_config
    pipe = Pipeline(store, cfg, features, torch.device("cpu"))
    waves, labels = next(iter(pipe.train_loader))
    feats = pipe.frontend(waves)
    twin = quant_twin(model, QuantSpec())
    calibrate(twin, [feats])
    old_frontend = torchaudio_frontend(features)

    def prepare(frontend: Frontend):
        def run() -> None:
            pipe.frontend = frontend
            pipe.train_batch(waves, labels, pipe.generator(0))
        return run

    fns = {"prep_before": prepare(old_frontend), "prep_after": prepare(Frontend(features)),
           "qat_before": iteration_fn(copy.deepcopy(twin), before_cfg, store, args.steps,
                                      old_frontend),
           "qat_after": iteration_fn(copy.deepcopy(twin), cfg, store, args.steps),
           "twin_step": train_step_fn(copy.deepcopy(twin), feats, labels, cfg)}
    times = interleaved(fns, args.rounds, {"prep_before": 5, "prep_after": 5})
    for name in ("qat_before", "qat_after"):
        times[name] = [s / args.steps for s in times[name]]
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"{args.model}, batch {cfg.train.batch_size}, {threads} threads, {args.rounds} "
          f"interleaved rounds\n")
    print("| | before ms | after ms | before / after |\n|---|---:|---:|---:|")
    print(f"| batch preparation (store -> augment -> {features.kind} -> SpecAugment) "
          f"| {ms['prep_before']:.1f} | {ms['prep_after']:.1f} "
          f"| {ratio(times, 'prep_before', 'prep_after'):.2f} |")
    print(f"| QAT iteration (W8A8 twin, `train_epoch`) | {ms['qat_before']:.0f} "
          f"| {ms['qat_after']:.0f} | {ratio(times, 'qat_before', 'qat_after'):.2f} |")
    print(f"\nbare twin step {ms['twin_step']:.0f} ms; QAT iteration after / bare step "
          f"{ratio(times, 'qat_after', 'twin_step'):.2f}")


if __name__ == "__main__":
    main()
