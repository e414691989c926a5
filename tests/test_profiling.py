import argparse
import json

import pytest
import torch
from torch import nn

from nas_kws.features import FeatureConfig
from nas_kws.models import create_model
from nas_kws.profiling import Profile, format_profile, profile_model
from nas_kws.profiling_commands import add_commands

BCRESNET_MACS = {"bcresnet1": 2_482_156, "bcresnet1.5": 4_607_994, "bcresnet2": 7_323_672,
                 "bcresnet3": 14_524_548, "bcresnet6": 50_283_336, "bcresnet8": 85_919_328}
DSCNN_MACS = {"dscnn_s": 2.7e6, "dscnn_m": 9.9e6, "dscnn_l": 28.45e6}


@pytest.mark.parametrize("name,macs", BCRESNET_MACS.items())
def test_bcresnet_macs_exact(name, macs):
    assert profile_model(create_model(name)).macs == macs


@pytest.mark.parametrize("name,macs", DSCNN_MACS.items())
def test_dscnn_macs_match_hello_edge(name, macs):
    profile = profile_model(create_model(name))
    assert profile.feature_shape == (10, 49)
    assert abs(profile.macs - macs) / macs < 0.03


def test_bcresnet8_paper_mults():
    profile = profile_model(create_model("bcresnet8"))
    assert profile.macs < profile.mults_paper
    assert abs(profile.mults_paper - 89.1e6) / 89.1e6 < 0.02


def test_hand_counted_macs_and_mults():
    features = FeatureConfig(n_mels=6, hop_length=1600)
    assert features.shape == (6, 11)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),                                # 8*6*11 = 528 out x 9
        nn.BatchNorm2d(8),                                            # 528 mults
        nn.ReLU(),
        nn.Conv2d(8, 12, (3, 5), stride=(2, 1), padding=(1, 2), groups=4),  # 12*3*11 out x 2*15
        nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False),       # 396 out x 9
        nn.AdaptiveAvgPool2d(1),                                      # 12 mults
        nn.Flatten(),
        nn.Linear(12, 5),                                             # 5 x 12
    )
    macs = 528 * 9 + 396 * 30 + 396 * 9 + 5 * 12
    profile = profile_model(model, features)
    assert profile.macs == macs
    assert profile.mults_paper == macs + 528 + 12
    assert profile.params == sum(p.numel() for p in model.parameters())
    assert model.training  # mode restored


def test_figures_are_per_clip():
    model = create_model("dscnn_s")
    one, three = profile_model(model), profile_model(model, batch=3)
    assert (one.macs, one.mults_paper, one.peak_activation_bytes, one.peak_sram_bytes) == \
           (three.macs, three.mults_paper, three.peak_activation_bytes, three.peak_sram_bytes)


def test_peak_activation_and_size():
    model = nn.Conv2d(1, 2, 3, padding=1)
    profile = profile_model(model, FeatureConfig(n_mels=4, hop_length=3200))
    assert profile.feature_shape == (4, 6)
    assert profile.peak_activation_bytes == (1 + 2) * 4 * 6 * 4  # input + output, float32
    assert profile.size_bytes(32) == 20 * 4
    assert profile.size_bytes(3) == 8  # 60 bits -> 8 bytes
    with pytest.raises(ValueError, match="bits"):
        profile.size_bytes(0)


def test_format_profile():
    text = format_profile(Profile(params=1000, macs=2_000_000, mults_paper=2_100_000,
                                  peak_activation_bytes=4096, feature_shape=(40, 101)), bits=4)
    assert "40 x 101" in text and "2,000,000" in text and "size 4-bit" in text


def _run_cli(argv, capsys):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)
    return capsys.readouterr().out


def test_cli_json(capsys):
    out = json.loads(_run_cli(["profile", "dscnn_s", "--json", "--bits", "4"], capsys))
    assert out["feature_shape"] == [10, 49]
    assert out["size_bytes"] == (out["params"] * 4 + 7) // 8
    assert {"params", "macs", "mults_paper", "peak_activation_bytes"} <= set(out)


def test_cli_text_with_mfcc(capsys):
    out = _run_cli(["profile", "dscnn_m", "--n_mfcc", "20"], capsys)
    assert "20 x 51" in out and "MACs" in out


class _Residual(nn.Module):
    """conv+BN+ReLU, a conv whose input is held for a residual add, a norm that cannot fold."""

    def __init__(self):
        super().__init__()
        self.feature_config = FeatureConfig(n_mels=4, hop_length=4000)  # 4 x 5
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(2)                # folds into conv1: its bias
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)  # own bias
        self.bn2 = nn.BatchNorm2d(2)                # after an add: a per-channel multiply-add
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        z = torch.relu(self.bn2(h + self.conv2(h)))
        return self.fc(z.mean((2, 3)))


def test_hand_counted_mcu_memory():
    model = _Residual()
    assert model.feature_config.shape == (4, 5)
    profile = profile_model(model)
    # flash: conv1 18 weights + 2 scales + 2 folded biases (x4 bytes), conv2 36 + 8 + 8,
    # fc 6 + 12 + 12, bn2 2 channels x (1 + 4 + 4)
    assert profile.flash_bytes == (18 + 8 + 8) + (36 + 8 + 8) + (6 + 12 + 12) + 2 * 9
    # SRAM (int8, 40 bytes per 2x4x5 map): conv1 reads x (20) and writes 40; conv2 reads h
    # while h is held for the add; the add reads h and conv2's output and writes z: 120
    assert profile.peak_sram_bytes == 3 * 40


def test_padding_and_views_cost_no_sram():
    features = FeatureConfig(n_mels=4, hop_length=4000)
    model = nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(1, 3, 3, bias=False), nn.Flatten())
    # the pad folds into the conv: x (20) and the conv's 3 x 4 x 5 output (60)
    assert profile_model(model, features).peak_sram_bytes == 20 + 60
