import pytest
import torch
import torch.nn.functional as F
from quant_helpers import accuracy, pattern_features, single_thread, tiny_genotype, train_on  # noqa: F401
from torch import nn

from nas_kws.models import create_model
from nas_kws.models.dscnn import SameConv2d
from nas_kws.models.genotype import build_from_genotype
from nas_kws.profiling import profile_model
from nas_kws.quant.fold import ChannelAffine, example_input, fold_batchnorm
from nas_kws.quant.qat import QuantSpec, calibrate, layer_bits, load_quant_spec, quant_twin
from nas_kws.quant.rounding import RoundingScheme, round_tensor, round_weights
from nas_kws.quant.svd import (
    apply_ranks,
    compressible_layers,
    factorize,
    full_rank,
    measure_sensitivity,
    select_ranks,
)
from nas_kws.rebuild import model_from_spec

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def build(name: str, classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    if name == "genotype":
        return build_from_genotype(tiny_genotype(classes))
    return create_model(name, num_classes=classes)


def with_random_norm_stats(model: nn.Module) -> nn.Module:
    """Untrained nets have identity norms; give them statistics that folding must honour."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, NORMS):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    """A small searched-style net (MBConv + BC-Res on 10 MFCC) trained on the pattern task,
    with held-out features."""
    model = build("genotype")
    shape = model.feature_config.shape
    train_on(model, *pattern_features(256, shape), steps=50)
    test_feats, test_labels = pattern_features(200, shape, seed=1)
    assert accuracy(model, test_feats, test_labels) > 0.9
    return model, test_feats, test_labels


# --- batch-norm folding --------------------------------------------------------------------

@pytest.mark.parametrize("name, affines", [("bcresnet1", 12), ("dscnn_s", 0), ("genotype", 1)])
def test_folding_batchnorm_leaves_outputs_unchanged(name, affines):
    model = with_random_norm_stats(build(name))
    folded = fold_batchnorm(model)
    x = example_input(model, batch=4, seed=3)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    assert not any(isinstance(m, NORMS) for m in folded.modules())
    # SubSpectralNorm (12 in BC-ResNet-1, one per BC-Res block) cannot merge: it is frozen
    assert sum(isinstance(m, ChannelAffine) for m in folded.modules()) == affines
    assert any(isinstance(m, NORMS) for m in model.modules()), "the float model is untouched"


def test_folding_refuses_a_conv_whose_output_also_feeds_something_else():
    class Tapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return (self.bn(y) + y).mean((2, 3))

    model = with_random_norm_stats(Tapped())
    with pytest.raises(ValueError, match="feeds more than its batch norm"):
        fold_batchnorm(model, torch.randn(2, 1, 8, 8))


# --- post-training rounding ----------------------------------------------------------------

def test_rounding_puts_weights_on_the_grid():
    w = torch.randn(6, 3, 3, 3)
    for bits in (2, 4, 8):
        q = round_tensor(w, RoundingScheme(bits))
        for row, qrow in zip(w, q):
            assert qrow.unique().numel() <= 2 ** bits - 1
            assert torch.isclose(qrow.abs().max(), row.abs().max())
    q = round_tensor(w, RoundingScheme(3, per_channel=False, symmetric=False))
    assert q.unique().numel() <= 8 and (q - w).abs().max() <= (w.max() - w.min()) / 7
    binary = round_tensor(w, RoundingScheme(1))
    assert torch.allclose(binary.abs(), w.abs().mean((1, 2, 3), keepdim=True).expand_as(w))
    assert torch.equal(binary.sign(), torch.where(w >= 0, 1.0, -1.0))
    with pytest.raises(ValueError, match="bits"):
        RoundingScheme(0)


def test_rounding_at_8_bits_keeps_accuracy_and_at_1_bit_destroys_it(trained):
    model, feats, labels = trained
    folded = fold_batchnorm(model)
    fp32 = accuracy(model, feats, labels)
    assert accuracy(round_weights(folded, RoundingScheme(8)), feats, labels) >= fp32 - 0.01
    with torch.no_grad():
        ref = model(feats)
        err8 = (round_weights(folded, RoundingScheme(8))(feats) - ref).norm() / ref.norm()
    assert err8 < 0.02
    assert accuracy(round_weights(folded, RoundingScheme(1)), feats, labels) < fp32 - 0.5


def test_per_channel_rounding_is_never_worse_than_per_tensor(trained):
    model, feats, labels = trained
    folded = fold_batchnorm(model)
    weights = [m.weight for m in folded.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for bits in range(1, 9):
        pc, pt = RoundingScheme(bits), RoundingScheme(bits, per_channel=False)
        err = [sum(((round_tensor(w, s) - w) ** 2).sum().item() for w in weights) for s in (pc, pt)]
        assert err[0] <= err[1], bits
        if bits >= 2:  # at 1 bit both are at chance, where the order is noise
            assert (accuracy(round_weights(folded, pc), feats, labels)
                    >= accuracy(round_weights(folded, pt), feats, labels)), bits


# --- Brevitas twin -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["genotype", "dscnn_s", "bcresnet1"])
def test_twin_at_8_bits_matches_its_float_parent_before_fine_tuning(name, trained):
    if name == "genotype":
        model, feats, _ = trained
        feats = feats[:64]
    else:  # untrained, with batch-norm statistics to fold; covers SAME padding and SSN
        model = with_random_norm_stats(build(name))
        feats = pattern_features(16, model.feature_config.shape, seed=1)[0]
    twin = quant_twin(model, QuantSpec(8, 8))
    calibrate(twin, feats.split(16))
    with torch.no_grad():
        ref, out = model(feats), twin(feats)
    assert ((out - ref).norm() / ref.norm()).item() < 0.05
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.9
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layer_bits(twin)) == len(convs)


def test_quant_spec_bits_per_layer_from_yaml(tmp_path, trained):
    path = tmp_path / "bits.yaml"
    path.write_text("weight_bits: 4\nact_bits: 6\nfirst_last_bits: 8\n"
                    "layers:\n  'blocks.0.*': {weight_bits: 2}\n"
                    "  'blocks.1.conv.3': {weight_bits: 3, act_bits: 5}\n")
    spec = load_quant_spec(path, {"act_bits": None})
    bits = layer_bits(quant_twin(trained[0], spec))
    assert bits["stem.0"] == (8, 8) and bits["head.5"] == (8, 8)   # first and last layers
    assert bits["blocks.0.conv.0"] == (2, 6) and bits["blocks.0.conv.3"] == (2, 6)
    assert bits["blocks.1.conv.3"] == (3, 5) and bits["blocks.1.conv.0"] == (4, 6)
    assert spec.tag == "w4a6_fl8_custom"
    for bad, match in [({"weight_bits": 9}, "weight_bits: expected an integer bit width 2..8"),
                       ({"act_bits": 1}, "act_bits"), ({"bits": 4}, "unknown key"),
                       ({"layers": {"x": {"width": 2}}}, "layers.x")]:
        with pytest.raises(ValueError, match=match):
            QuantSpec.from_dict(bad)


def test_qat_gradients_reach_weights_and_scales_and_training_lowers_the_loss(trained):
    model, feats, labels = trained
    twin = quant_twin(model, QuantSpec(4, 4))
    calibrate(twin, feats[:32].split(16))
    twin.train()
    loss = F.cross_entropy(twin(feats[:32]), labels[:32])
    loss.backward()
    grads = {n: p.grad for n, p in twin.named_parameters()}
    conv_weights = [n for n in grads if n.endswith(".weight") and "quant" not in n]
    weight_scales = [n for n in grads if "weight_quant" in n and n.endswith("scaling_impl.value")]
    act_scales = [n for n in grads if "input_quant" in n and "scaling_impl.value" in n]
    assert conv_weights and weight_scales and act_scales
    for name in conv_weights + weight_scales + act_scales:
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    twin.zero_grad()
    batch, target = feats[:32], labels[:32]
    before = F.cross_entropy(twin(batch), target).item()
    opt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(twin(batch), target).backward()
        opt.step()
    assert F.cross_entropy(twin(batch), target).item() < before


def test_twin_rebuilds_from_its_spec(trained):
    model, feats, _ = trained
    twin = quant_twin(model, QuantSpec(6, 8, first_last_bits=8))
    calibrate(twin, feats[:32].split(16))
    twin.eval()
    rebuilt = model_from_spec(twin.spec, num_classes=4)
    rebuilt.load_state_dict(twin.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(feats[:16]), twin(feats[:16]))


# --- SVD -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, shape", [
    (nn.Linear(20, 12), (3, 20)),
    (nn.Conv2d(8, 16, 1, stride=2), (2, 8, 9, 9)),
    (nn.Conv2d(6, 10, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), (2, 6, 11, 13)),
    (nn.Conv2d(6, 10, 3, padding="same", bias=False), (2, 6, 11, 13)),
    (SameConv2d(4, 8, (4, 10), stride=(2, 2)), (2, 4, 10, 49)),  # DS-CNN's padding rule
])
def test_svd_at_full_rank_reproduces_the_layer(layer, shape):
    x = torch.randn(*shape)
    factors = factorize(layer, full_rank(layer))
    with torch.no_grad():
        ref, out = layer(x), factors(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)
    with torch.no_grad():
        low = factorize(layer, 1)(x)
    assert (low - ref).abs().max() > 1e-3, "rank 1 is an approximation"


def test_svd_greedy_ranks_meet_the_mac_target_and_rebuild(trained):
    model, feats, labels = trained
    layers = compressible_layers(model)
    assert {info.kind for info in layers.values()} == {"spatial", "pointwise", "linear"}
    assert "blocks.1.conv.0" in layers and "blocks.1.conv.3" not in layers  # depthwise stays

    def score(m):
        with torch.no_grad():
            return F.cross_entropy(m(feats[:100]), labels[:100]).item()

    options = measure_sensitivity(model, score, fractions=(1 / 8, 1 / 4, 1 / 2))
    total = profile_model(model).macs
    ranks = select_ranks(options, total, int(0.6 * total))
    compressed = apply_ranks(model, ranks)
    assert profile_model(compressed).macs <= 0.6 * total
    compressed.spec = {"base": model.spec, "svd_ranks": ranks}
    rebuilt = model_from_spec(compressed.spec, num_classes=4)
    rebuilt.load_state_dict(compressed.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(feats[:8]), compressed.eval()(feats[:8]))
    # a compressed net quantizes like any other, and its nested spec rebuilds the twin
    twin = quant_twin(compressed, QuantSpec(8, 8))
    calibrate(twin, feats[:32].split(16))
    again = model_from_spec(twin.spec, num_classes=4)
    again.load_state_dict(twin.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(feats[:8]), twin(feats[:8]))
    with pytest.raises(ValueError, match="unreachable by SVD"):
        select_ranks(options, total, int(0.01 * total))
    with pytest.raises(ValueError, match="has no layer 'nope'"):
        apply_ranks(model, {"nope": 2})
