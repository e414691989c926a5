"""The compiled activation fake quantization computes what Brevitas computes: forward and input
gradients bit for bit, scale and zero-point gradients up to summation order, and a QAT run
through the command gives the same twin either way."""
import argparse

import pytest
import torch
import torch.nn.functional as F
from brevitas.core.quant.int_base import IntQuant
from quant_helpers import (  # noqa: F401
    pattern_features,
    single_thread,
    tiny_genotype,
    train_tone_run,
)
from torch import nn

from nas_kws.models import create_model
from nas_kws.models.genotype import build_from_genotype
from nas_kws.quant import commands
from nas_kws.quant.fused_quant import FusedIntQuant, fuse_activation_quant
from nas_kws.quant.qat import QuantSpec, calibrate, quant_twin
from nas_kws.rebuild import load_model


@pytest.mark.parametrize("signed, narrow_range, bits", [(False, False, 8), (True, True, 4),
                                                       (False, False, 2)])
def test_fused_int_quant_matches_brevitas(signed, narrow_range, bits):
    g = torch.Generator().manual_seed(bits)
    scale, zero_point = 0.05, (0.0 if signed else 2.0 ** (bits - 1) - 1)
    ties = (torch.arange(-40, 40) + 0.5) * scale      # exact half steps: round half to even
    x0 = torch.cat([torch.randn(5000, generator=g) * 3, ties])
    upstream = torch.randn(len(x0), generator=g)
    results = []
    for cls in (IntQuant, FusedIntQuant):
        quant = cls(narrow_range=narrow_range, signed=signed, input_view_impl=nn.Identity())
        x = x0.clone().requires_grad_()
        s = torch.tensor(scale, requires_grad=True)
        z = torch.tensor(zero_point, requires_grad=True)
        y = quant(s, z, torch.tensor(float(bits)), x)
        results.append((y.detach(), *torch.autograd.grad((y * upstream).sum(), [x, s, z])))
    (y0, gx0, gs0, gz0), (y1, gx1, gs1, gz1) = results
    assert torch.equal(y0, y1) and torch.equal(gx0, gx1)
    assert (gx0 == 0).any() and (gx0 != 0).any()        # the clamp was exercised
    torch.testing.assert_close(gs1, gs0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gz1, gz0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["bcresnet1", "genotype"])
def test_fused_twin_has_brevitas_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = (build_from_genotype(tiny_genotype(4)) if name == "genotype"
             else create_model(name, num_classes=4))
    feats, labels = pattern_features(32, model.feature_config.shape)
    twin = quant_twin(model, QuantSpec(4, 8))
    calibrate(twin, feats.split(16))
    twin.train()
    results = []
    for fused in (False, True):
        if fused:
            keys = list(twin.state_dict())
            assert fuse_activation_quant(twin) > 0
            assert list(twin.state_dict()) == keys
        torch.manual_seed(1)                         # the same dropout masks
        twin.zero_grad()
        out = twin(feats)
        F.cross_entropy(out, labels).backward()
        results.append((out.detach(), {k: p.grad.clone() for k, p in twin.named_parameters()}))
    (out0, grads0), (out1, grads1) = results
    assert torch.equal(out0, out1)
    # scales and zero points: sums of many terms, in another order; their rounding error scales
    # with the largest such gradient, not with a small one that is mostly cancellation
    scale = max(g.abs().max().item() for k, g in grads0.items() if "_quant." in k)
    for key, grad in grads0.items():
        if "_quant." in key:
            torch.testing.assert_close(grads1[key], grad, rtol=1e-3, atol=1e-5 * scale, msg=key)
        else:                                        # weights and biases: bit for bit
            assert torch.equal(grads1[key], grad), key


def test_qat_command_gives_the_same_twin_with_either_fake_quant(tone_root, tmp_path):
    run = tmp_path / "run"
    train_tone_run(tone_root, run, "bcresnet1")
    parser = argparse.ArgumentParser()
    commands.add_commands(parser.add_subparsers(dest="command", required=True))
    twins = {}
    for choice in ("brevitas", "fused"):
        out = tmp_path / choice
        args = parser.parse_args(["quantize", "qat", str(run), "--epochs", "1", "--quiet",
                                  "--calib_clips", "40", "--fake_quant", choice, "--out", str(out),
                                  "--set", "train.max_steps_per_epoch=3"])
        assert args.func(args) == 0
        twins[choice] = load_model(out, "last")[0].state_dict()
    for key, value in twins["brevitas"].items():
        torch.testing.assert_close(twins["fused"][key], value, rtol=1e-4, atol=1e-6, msg=key)
