"""How far post-training W8A8 moves a trained net's accuracy, over seeds and calibrations.

The all-integer W8A8 reference (nas_kws.quant.integer, the graph `nas-kws export --int8 --tflite`
writes) of each given run is calibrated on all of its training clips and on `--subsets` seeded
random subsets of `--subset_clips`, and scored on the run's test split beside its float model.
One calibration of one net says little: the drop moves by a point between calibrations, so the
deployment target (W8A8 within 0.5 point of fp32) is judged on the mean over nets and
calibrations.

    python benchmarks/ptq_spread.py zoo/bcresnet1/seed0 zoo/bcresnet1/seed1 zoo/bcresnet1/seed2 \
        --csv benchmarks/results/ptq_spread_bcresnet1.csv
"""
from __future__ import annotations

import argparse
import statistics

import torch

from nas_kws.device import set_threads
from nas_kws.fileio import write_csv
from nas_kws.quant.integer import integer_logits, integer_net
from nas_kws.quant.precomputed import accuracy, split_features
from nas_kws.rebuild import load_model, open_run_data


def percent_correct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy in % of the integer reference's logits (an exported graph: no eval mode, so not
    through precomputed.accuracy)."""
    return 100 * float((logits.argmax(1) == labels).float().mean())


def run_rows(run: str, subsets: int, subset_clips: int) -> list[dict]:
    """One row per calibration of `run`: fp32 and W8A8 test accuracy in percent."""
    model, features, classes = load_model(run)
    store = open_run_data(run, classes)
    test, labels = split_features(store, features, "test")
    fp32 = 100 * accuracy(model, test, labels)
    rows = []
    for name, limit, seed in [("all", None, 0)] + [(f"subset{s}", subset_clips, s)
                                                   for s in range(subsets)]:
        calib, _ = split_features(store, features, "train", limit=limit, seed=seed)
        w8a8 = percent_correct(integer_logits(integer_net(model, calib.split(100)), test), labels)
        rows.append({"run": run, "calibration": name, "calib_clips": len(calib),
                     "fp32_acc": round(fp32, 2), "w8a8_acc": round(w8a8, 2),
                     "drop": round(w8a8 - fp32, 2)})
        print(", ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="trained float run directories")
    parser.add_argument("--subsets", type=int, default=3, help="seeded calibration subsets")
    parser.add_argument("--subset_clips", type=int, default=1000)
    parser.add_argument("--csv", help="write the rows here")
    args = parser.parse_args()
    set_threads()
    rows = [row for run in args.runs for row in run_rows(run, args.subsets, args.subset_clips)]
    full = [r["drop"] for r in rows if r["calibration"] == "all"]
    drops = [r["drop"] for r in rows]
    spread = statistics.stdev(drops) if len(drops) > 1 else 0.0
    print(f"W8A8 - fp32, all training clips: mean {statistics.mean(full):+.2f} over "
          f"{len(full)} nets; every calibration: {statistics.mean(drops):+.2f} +- {spread:.2f} "
          f"({len(drops)} calibrations, {min(drops):+.2f} to {max(drops):+.2f})")
    if args.csv:
        write_csv(args.csv, list(rows[0]), rows)


if __name__ == "__main__":
    main()
