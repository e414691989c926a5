"""Peter et al.'s `run_exp.py`: retrain a searched net, or round its weights after training.

    python run_exp.py --path RUN --train [--epochs N] [--config experiments/mbconv_peter.yaml]
    python run_exp.py --path RUN --quantize --n_bits 1,2,3,4,5,6,7,8 [--per_tensor] [--asymmetric]

--train trains RUN/genotype.yaml (a search's result) into RUN/retrain with Peter et al.'s recipe
on the search's data (resuming when RUN/retrain exists); --quantize folds batch norm, rounds
every conv and linear weight of RUN/retrain (or of RUN itself when it is a trained run) and
prints test accuracy per bit width. Both are thin wrappers around `nas-kws train` and
`nas-kws quantize ptq`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from nas_kws.cli import main as nas_kws

RECIPE = Path(__file__).resolve().parent / "experiments" / "mbconv_peter.yaml"


def train_args(run: Path, config: str, epochs: int | None) -> list[str]:
    retrain = run / "retrain"
    if (retrain / "config.yaml").is_file():
        return ["train", "--resume", str(retrain)]
    genotype = run / "genotype.yaml"
    if not genotype.is_file():
        raise FileNotFoundError(f"{genotype}: no genotype to retrain (run a search first)")
    argv = ["train", "--genotype", str(genotype), "--config", config, "--run_dir", str(retrain)]
    search_config = run / "config.yaml"
    data = (yaml.safe_load(search_config.read_text()) or {}).get("data") if search_config.is_file() else None
    if data:
        argv += ["--set", *(f"data.{key}={'null' if value is None else value}"
                            for key, value in data.items())]
    return argv + (["--epochs", str(epochs)] if epochs else [])


def quantize_args(run: Path, n_bits: str, per_tensor: bool, asymmetric: bool) -> list[str]:
    target = run / "retrain" if (run / "retrain" / "metrics.json").is_file() else run
    return (["quantize", "ptq", str(target), "--bits", n_bits]
            + (["--per_tensor"] if per_tensor else []) + (["--asymmetric"] if asymmetric else []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--path", required=True, help="a search run (with genotype.yaml) or a trained run")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--train", action="store_true", help="retrain RUN/genotype.yaml")
    mode.add_argument("--quantize", action="store_true", help="post-training rounding")
    p.add_argument("--n_bits", default="1,2,3,4,5,6,7,8", help="bit widths for --quantize")
    p.add_argument("--per_tensor", action="store_true", help="one scale per tensor")
    p.add_argument("--asymmetric", action="store_true", help="min/max grid, as Peter et al.")
    p.add_argument("--config", default=str(RECIPE), help="retraining recipe (default: Peter et al.)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    args = p.parse_args(argv)
    run = Path(args.path)
    try:
        cmd = (train_args(run, args.config, args.epochs) if args.train
               else quantize_args(run, args.n_bits, args.per_tensor, args.asymmetric))
    except FileNotFoundError as err:
        print(f"run_exp.py: error: {err}", file=sys.stderr)
        return 2
    return nas_kws(cmd)


if __name__ == "__main__":
    sys.exit(main())
