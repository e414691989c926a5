import pytest
import torch
from torch import nn

from nas_kws.features import FeatureConfig
from nas_kws.models import create_model, default_features, list_models, register_model, registry
from nas_kws.models.bcresnet import BCResBlock, SubSpectralNorm
from nas_kws.models.layers import BatchNorm2d

BCRESNET_PARAMS = {"bcresnet1": 9_232, "bcresnet1.5": 17_154, "bcresnet2": 27_284,
                   "bcresnet3": 54_168, "bcresnet6": 187_812, "bcresnet8": 321_068}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    bins, frames = model.feature_config.shape
    logits = model(torch.randn(2, 1, bins, frames))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert model.num_classes == 7
    assert isinstance(model.feature_config, FeatureConfig)


@pytest.mark.parametrize("name", list_models())
def test_spec_rebuilds_the_same_network(name):
    model = create_model(name, num_classes=5)
    rebuilt = create_model(model.spec["name"], num_classes=5, **model.spec["kwargs"])
    assert rebuilt.feature_config == model.feature_config
    rebuilt.load_state_dict(model.state_dict())


@pytest.mark.parametrize("name,params", BCRESNET_PARAMS.items())
def test_bcresnet_params_match_paper(name, params):
    assert sum(p.numel() for p in create_model(name).parameters()) == params


def test_default_features():
    assert default_features("bcresnet8").shape == (40, 101)
    assert default_features("dscnn_l").shape == (10, 49)
    assert create_model("dscnn_s").feature_config == FeatureConfig.dscnn()


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet50'.*bcresnet8.*dscnn_s"):
        create_model("resnet50")


def test_unknown_model_argument():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['widht'\].*dropout"):
        create_model("bcresnet1", widht=3)


def test_missing_genotype_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        create_model(tmp_path / "nope.yaml")


def test_register_model_both_ways(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @register_model
    def tiny_net(num_classes=12, features=None):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    @register_model("tiny.5", features=FeatureConfig.mfcc(10))
    def other(num_classes=12, features=None):
        return tiny_net(num_classes)

    assert {"tiny_net", "tiny.5"} <= set(list_models())
    assert default_features("tiny.5").shape == (10, 51)
    assert create_model("tiny.5", num_classes=3).spec["name"] == "tiny.5"
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_net")(other)


@pytest.mark.parametrize("channels", [12, 16])
def test_batchnorm_detour_matches_torch_and_keeps_channels_last(channels):
    """Narrow channels_last maps are normalised in the default layout in training (a width of
    16 is left alone); outputs, gradients and running statistics are torch's to rounding."""
    torch.manual_seed(0)
    ours, ref = BatchNorm2d(channels), nn.BatchNorm2d(channels)
    x = (3 * torch.randn(8, channels, 10, 7) + 1).contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(x.shape).contiguous(memory_format=torch.channels_last)
    ya, yb = ours(xa), ref(xb)
    (ya * grad).sum().backward()
    (yb * grad).sum().backward()
    assert ya.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.load_state_dict(ref.state_dict())
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)   # eval: torch's own path


def test_subspectralnorm_rejects_bad_height():
    ssn = SubSpectralNorm(4, groups=5)
    assert ssn(torch.randn(2, 4, 20, 3)).shape == (2, 4, 20, 3)
    with pytest.raises(ValueError, match=r"height 12 .* groups=5.*e\.g\. 10 or 15"):
        ssn(torch.randn(2, 4, 12, 3))


def test_bcresblock_shapes_and_shortcut():
    x = torch.randn(2, 8, 20, 11)
    transition = BCResBlock(8, 16, freq_stride=2, dilation=2)
    assert transition.transition and transition(x).shape == (2, 16, 10, 11)
    plain = BCResBlock(8, 8, ssn_groups=0, time_kernel=5, freq_kernel=5).eval()
    assert not plain.transition
    assert not any(isinstance(m, SubSpectralNorm) for m in plain.modules())
    assert plain(x).shape == x.shape
    # zero both branches: only the identity shortcut (then ReLU) remains
    for conv in (plain.f2[0], plain.f1[3]):
        nn.init.zeros_(conv.weight)
    torch.testing.assert_close(plain(x), torch.relu(x))
