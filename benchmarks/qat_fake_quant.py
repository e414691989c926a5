"""QAT training step with Brevitas's activation fake quantization against the fused kernels
(nas_kws.quant.fused_quant), as ratios measured in one process, and how far apart they are.

For each model: the W8A8 (or --weight_bits) twin, calibrated on a random batch, trained by the
trainer's own `train_step` with `quantize qat`'s optimizer settings; two copies of one twin, one
fused, stepped in interleaved rounds on the same batch (after one untimed warm-up step each,
which for the fused copy includes compiling). Before timing it checks the claim the fused path
rests on: with the same dropout masks, the same outputs and weight gradients (bit for bit) and
scale / zero-point gradients up to summation order.

    python benchmarks/qat_fake_quant.py [--models bcresnet1,bcresnet3,dscnn_s] [--rounds 7]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from reference_step import interleaved, ratio, train_step_fn  # noqa: E402

from nas_kws.config import ExperimentConfig, load_config  # noqa: E402
from nas_kws.device import set_threads  # noqa: E402
from nas_kws.models import create_model  # noqa: E402
from nas_kws.quant.commands import QAT_TRAIN  # noqa: E402
from nas_kws.quant.fused_quant import fuse_activation_quant  # noqa: E402
from nas_kws.quant.qat import QuantSpec, calibrate, quant_twin  # noqa: E402


def gradient_gap(plain: torch.nn.Module, fused: torch.nn.Module, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[bool, float, float]:
    """(outputs equal, largest weight-gradient difference, relative L2 difference of the
    quantizer-parameter gradients) for one backward pass of each twin."""
    grads = []
    for net in (plain, fused):
        torch.manual_seed(0)                               # the same dropout masks
        net.train().zero_grad()
        out = net(x)
        F.cross_entropy(out, y).backward()
        grads.append((out.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}))
    (out0, g0), (out1, g1) = grads
    weights = max((g0[k] - g1[k]).abs().max().item() for k in g0 if "_quant." not in k)
    q0 = torch.cat([g0[k].flatten() for k in g0 if "_quant." in k])
    q1 = torch.cat([g1[k].flatten() for k in g0 if "_quant." in k])
    return torch.equal(out0, out1), weights, ((q0 - q1).norm() / q0.norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bcresnet1,bcresnet3,dscnn_s")
    parser.add_argument("--weight_bits", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    set_threads()
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, W{args.weight_bits}A8")
    print("model        outputs equal  weight-grad diff  qparam-grad rel diff  brevitas s  "
          "fused s  speed-up  check s (compiles)")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name, num_classes=12)
        x = torch.randn(args.batch, 1, *model.feature_config.shape)
        y = torch.randint(0, 12, (args.batch,))
        plain = quant_twin(model, QuantSpec(weight_bits=args.weight_bits))
        calibrate(plain, [x])
        fused = copy.deepcopy(plain)
        fuse_activation_quant(fused)
        start = time.perf_counter()
        equal, weights, qparams = gradient_gap(plain, fused, x, y)
        first = time.perf_counter() - start
        cfg = load_config(ExperimentConfig, ROOT / "experiments" / "demo.yaml", QAT_TRAIN)
        fns = {"brevitas": train_step_fn(plain, x, y, cfg),
               "fused": train_step_fn(fused, x, y, cfg)}
        times = interleaved(fns, args.rounds, {})
        median = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name:12s} {str(equal):>13s} {weights:17.2e} {qparams:21.2e} "
              f"{median['brevitas']:11.3f} {median['fused']:8.3f} "
              f"{ratio(times, 'brevitas', 'fused'):8.2f}x {first:19.1f}")


if __name__ == "__main__":
    main()
