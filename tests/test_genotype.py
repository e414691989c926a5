import copy

import pytest
import torch
import yaml

from nas_kws.features import FeatureConfig
from nas_kws.models import create_model, list_models
from nas_kws.models.bcresnet import BCResBottleneck
from nas_kws.models.genotype import (
    build_from_genotype,
    check_genotype,
    load_genotype,
    save_genotype,
)
from nas_kws.models.layers import make_divisible
from nas_kws.models.mbconv import MBConv
from nas_kws.models.proxyless_kws import proxyless_genotype
from nas_kws.nas.space import load_space
from nas_kws.profiling import profile_model


def bcresnet_genotype(tau: float) -> dict:
    """BC-ResNet-tau written as a genotype (BC-ResNet's own block choices everywhere)."""
    base = int(8 * tau)
    widths = [2 * base, base, int(1.5 * base), 2 * base, int(2.5 * base), 4 * base]
    blocks = [{"op": "bcres", "out_channels": widths[stage + 1], "dilation": 2 ** stage,
               "freq_stride": 2 if stage in (1, 2) and i == 0 else 1}
              for stage, n in enumerate((2, 2, 4, 4)) for i in range(n)]
    return {"features": FeatureConfig.logmel().to_dict(), "num_classes": 12,
            "stem": {"out_channels": widths[0], "kernel": 5, "stride": [2, 1], "act": "relu"},
            "blocks": blocks, "head": {"type": "bcresnet", "channels": widths[5]}}


def mixed_genotype() -> dict:
    """Every op type and option on MFCC input: mbconv (strided, expand 1), bcres (BN, SSN,
    width 2, transition), zero."""
    return {
        "name": "mixed", "features": FeatureConfig.mfcc(20).to_dict(), "classes": list("abcde"),
        "stem": {"out_channels": 16, "kernel": [5, 11], "stride": [1, 2], "act": "relu6"},
        "blocks": [
            {"op": "mbconv", "out_channels": 16, "kernel": 5, "expand": 1, "stride": 2},
            {"op": "bcres", "out_channels": 16, "freq_kernel": 5, "time_kernel": 3, "dilation": 2},
            {"op": "zero"},
            {"op": "bcres", "out_channels": 16, "width": 2.0, "ssn_groups": 0},
            {"op": "bcres", "out_channels": 24, "freq_stride": 2, "ssn_groups": 5},
            {"op": "mbconv", "out_channels": 24, "kernel": 3, "expand": 4, "stride": [2, 1]},
        ],
        "head": {"type": "pool_linear", "channels": 32},
    }


@pytest.mark.parametrize("make", [mixed_genotype,
                                  lambda: proxyless_genotype(FeatureConfig.mfcc(10))])
def test_round_trip_build_save_load_gives_the_same_net(make, tmp_path):
    torch.manual_seed(0)
    model = build_from_genotype(make()).eval()
    path = save_genotype(tmp_path / "genotype.yaml", model.spec["genotype"])
    loaded = load_genotype(path)
    assert loaded == model.spec["genotype"]
    rebuilt = create_model(path, num_classes=model.num_classes).eval()  # as `train --genotype`
    assert sum(map(torch.numel, rebuilt.parameters())) == sum(map(torch.numel, model.parameters()))
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, *model.feature_config.shape)
    assert torch.equal(rebuilt(x), model(x))
    assert rebuilt.feature_config == model.feature_config
    assert build_from_genotype(rebuilt.spec["genotype"]).num_classes == model.num_classes


def test_genotype_carries_features_classes_and_spec():
    model = build_from_genotype(mixed_genotype())
    assert model.feature_config == FeatureConfig.mfcc(20) and model.num_classes == 5
    assert model(torch.randn(2, 1, 20, 51)).shape == (2, 5)
    assert model.spec["genotype"]["classes"] == list("abcde")
    other = build_from_genotype(mixed_genotype(), num_classes=3)
    assert other.num_classes == 3 and "classes" not in other.spec["genotype"]
    assert build_from_genotype(other.spec["genotype"]).num_classes == 3


@pytest.mark.parametrize("tau,params,macs", [(1, 9_232, 2_482_156), (2, 27_284, 7_323_672)])
def test_bcres_blocks_rebuild_bcresnet_exactly(tau, params, macs):
    profile = profile_model(build_from_genotype(bcresnet_genotype(tau)))
    assert (profile.params, profile.macs) == (params, macs)


def test_mbconv_structure():
    plain = MBConv(8, 8, kernel=3, expand=1)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in plain.modules()) == 2  # no 1x1 expansion
    assert plain.shortcut
    wide = MBConv(8, 8, kernel=7, expand=6, stride=2)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in wide.modules()) == 3
    assert not wide.shortcut and not MBConv(8, 16).shortcut
    assert wide(torch.randn(1, 8, 5, 13)).shape == (1, 8, 3, 7)
    block = BCResBottleneck(8, 16, ssn_groups=0)
    assert block(torch.randn(2, 8, 5, 13)).shape == (2, 8, 5, 13)


def test_peter_backbone_widths_and_registered_models():
    assert [make_divisible(72 * w) for w in (0.75, 1, 1.25)] == [56, 72, 88]
    assert {"proxyless_kws_w0.75", "proxyless_kws_w1", "proxyless_kws_w1.25"} <= set(list_models())
    model = create_model("proxyless_kws_w1.25", num_classes=12)
    assert model.feature_config.shape == (10, 51)
    assert model.stem[0].out_channels == 88 and model.head[-1].in_features == 176   # 2C
    assert len(model.blocks) == 12 and not model.blocks[0].shortcut and model.blocks[1].shortcut
    # their head is exactly 2C: 144 * 1.25 rounded up to 184 would add 8 channels of 1x1 conv
    # (88 in), BN and classifier (12 out), i.e. 816 parameters and 45,856 MACs
    wide = create_model("proxyless_kws_w1.25")
    assert profile_model(wide).params == 623_844 and profile_model(wide).macs == 44_892_672
    for width_mult, cells in ((0.75, 56), (1, 72), (1.25, 88)):
        space = load_space("proxyless_kws", width_mult)
        assert space.stem["out_channels"] == cells and space.head["channels"] == 2 * cells


def _set(genotype: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(genotype)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


BAD = [
    (("blocks", 2, "op"), "conv", r"blocks\[2\]\.op: expected one of .*'conv'"),
    (("blocks", 0, "kernel"), 4, r"blocks\[0\] \(mbconv\)\.kernel: expected an odd kernel.*4"),
    (("blocks", 0, "stride"), 3, r"blocks\[0\] \(mbconv\)\.stride: expected a stride of 1 or 2"),
    (("blocks", 4, "ssn_groups"), 3,
     r"blocks\[4\] \(bcres\)\.ssn_groups: SubSpectralNorm with 3 groups.*\(5 = 10 bins"),
    (("blocks", 4, "out_channels"), None,
     r"blocks\[4\] \(bcres\): missing required key 'out_channels'"),
    (("blocks", 4, "width"), 2, r"blocks\[4\] \(bcres\)\.width: .*non-transition"),
    (("blocks", 1, "time_stride"), 2, r"blocks\[1\] \(bcres\): unknown key\(s\) \['time_stride'\]"),
    (("blocks", 1, "freq_stride"), [2, 1],
     r"blocks\[1\] \(bcres\)\.freq_stride: .*never stride in time"),
    (("stem", "act"), "gelu", r"stem\.act: expected one of \['relu', 'relu6'\]"),
    (("head", "type"), "mlp", r"head\.type: expected one of"),
    (("num_classes",), 4, r"num_classes: 4 does not match the 5 names"),
    (("features", "kind"), "stft", r"features\.kind"),
    (("blocks",), [], r"blocks: expected a non-empty list"),
    (("widths",), 3, r"unknown key\(s\) \['widths'\]"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_genotypes_are_rejected_naming_the_key(path, value, message):
    with pytest.raises(ValueError, match=message):
        check_genotype(_set(mixed_genotype(), path, value))


def test_load_genotype_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_genotype(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_set(mixed_genotype(), ("blocks", 3, "expand"), 2)))
    with pytest.raises(ValueError,
                       match=rf"{bad}: blocks\[3\] \(bcres\): unknown key\(s\) \['expand'\]"):
        load_genotype(bad)
    with pytest.raises(ValueError, match="bad.yaml"):
        save_genotype(bad, {"features": {}})


def test_genotype_file_takes_feature_overrides_like_registered_models(tmp_path):
    path = save_genotype(tmp_path / "genotype.yaml", mixed_genotype())
    model = create_model(str(path), num_classes=5, features={"n_mfcc": 40})
    assert model.feature_config.n_mfcc == 40 and model.feature_config.hop_length == 320
    assert model.spec["genotype"]["features"]["n_mfcc"] == 40
    assert model(torch.randn(2, 1, 40, 51)).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown key.*n_mfc"):
        create_model(str(path), features={"n_mfc": 10})


def test_genotype_file_keeps_its_own_class_count(tmp_path):
    path = save_genotype(tmp_path / "genotype.yaml", mixed_genotype())
    assert create_model(str(path)).num_classes == 5
