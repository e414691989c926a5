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

from nas_kws.cli import build_parser
from nas_kws.cliflags import add_debug_flag, run_main
from nas_kws.config import EXPERIMENTS_DIR
from nas_kws.runs import RunDir

RECIPE = EXPERIMENTS_DIR / "mbconv_peter.yaml"


def train_args(run: RunDir, config: str, epochs: int | None) -> list[str]:
    if run.retrain.config_path.is_file():
        return ["train", "--resume", str(run.retrain.path)]
    if not run.genotype_path.is_file():
        raise FileNotFoundError(f"{run.genotype_path}: no genotype to retrain (run a search first)")
    argv = ["train", "--genotype", str(run.genotype_path), "--config", config,
            "--run_dir", str(run.retrain.path)]
    data = (run.read_config() or {}).get("data") if run.config_path.is_file() else None
    if data:
        argv += ["--set", *(f"data.{key}={'null' if value is None else value}"
                            for key, value in data.items())]
    return argv + (["--epochs", str(epochs)] if epochs else [])


def quantize_args(run: RunDir, n_bits: str, per_tensor: bool, asymmetric: bool) -> list[str]:
    target = run.retrain if run.retrain.finished else run
    return (["quantize", "ptq", str(target.path), "--bits", n_bits]
            + (["--per_tensor"] if per_tensor else []) + (["--asymmetric"] if asymmetric else []))


def run_exp(args: argparse.Namespace) -> int:
    """The `nas-kws` command these flags stand for, run in this process."""
    run = RunDir(args.path)
    argv = (train_args(run, args.config, args.epochs) if args.train
            else quantize_args(run, args.n_bits, args.per_tensor, args.asymmetric))
    command = build_parser().parse_args(argv)
    return command.func(command)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="run_exp.py", description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--path", required=True,
                   help="a search run (with genotype.yaml) or a trained run")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--train", action="store_true", help="retrain RUN/genotype.yaml")
    mode.add_argument("--quantize", action="store_true", help="post-training rounding")
    p.add_argument("--n_bits", default="1,2,3,4,5,6,7,8", help="bit widths for --quantize")
    p.add_argument("--per_tensor", action="store_true", help="one scale per tensor")
    p.add_argument("--asymmetric", action="store_true", help="min/max grid, as Peter et al.")
    p.add_argument("--config", default=str(RECIPE),
                   help="retraining recipe (default: Peter et al.)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    add_debug_flag(p)
    p.set_defaults(func=run_exp)
    return run_main(p, argv)


if __name__ == "__main__":
    sys.exit(main())
