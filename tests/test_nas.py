import argparse
import copy
import csv
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from nas_kws.data.loader import open_dataset
from nas_kws.models import create_model
from nas_kws.models.genotype import build_from_genotype, describe_block, load_genotype
from nas_kws.nas.arch_loss import BudgetMultiplier, arch_loss
from nas_kws.nas.commands import add_search_flags, config_from_args, main
from nas_kws.nas.cost import MacsTable, macs_table
from nas_kws.nas.derive import budget_picks
from nas_kws.nas.mixed_op import MixedOp
from nas_kws.nas.search import search
from nas_kws.nas.search_config import load_search_config
from nas_kws.nas.space import load_space, parse_space
from nas_kws.nas.supernet import Supernet
from nas_kws.profiling import profile_model
from nas_kws.runs import RunDir

SPACES = ("proxyless_kws", "bcresnet", "hybrid")

TINY_SPACE = {
    "name": "tiny",
    "features": {"kind": "mfcc", "n_fft": 640, "win_length": 640, "hop_length": 320,
                 "n_mels": 128, "n_mfcc": 10},
    "stem": {"out_channels": 8, "kernel": [5, 11], "stride": [1, 2], "act": "relu6"},
    "blocks": [
        {"choices": [{"op": "mbconv", "out_channels": 8, "stride": 2,
                      "grid": {"kernel": [3, 5], "expand": [1, 2]}}]},
        {"repeat": 2, "choices": [
            {"op": "mbconv", "out_channels": 8, "grid": {"kernel": [3, 5], "expand": [1, 2]}},
            {"op": "bcres", "out_channels": 8, "ssn_groups": 0},
            {"op": "zero"}]},
    ],
    "head": {"type": "pool_linear", "channels": 16},
}


@pytest.fixture(scope="module")
def built():
    """Space name -> (space, supernet, MACs table) at half width (same structure, less
    compute), each built once."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            space = load_space(name, width_mult=0.5)
            net = Supernet(space, 12)
            cache[name] = (space, net, macs_table(net))
        return cache[name]
    return get


def test_bundled_spaces_have_the_documented_structure():
    proxyless = load_space("proxyless_kws")
    assert [len(p.choices) for p in proxyless.positions] == [18] + [19] * 11
    assert proxyless.positions[0].in_shape == (72, 10, 26)
    assert proxyless.positions[0].out_shape == proxyless.head_in_shape == (72, 5, 13)
    assert all(p.choices[-1] == {"op": "zero"} for p in proxyless.positions[1:])
    bc = load_space("bcresnet")
    assert [len(p.choices) for p in bc.positions] == [1, 33, 1, 33, 1, 33, 33, 33, 1, 33, 33, 33]
    assert [p.out_shape[1] for p in bc.positions] == [20, 20, 10, 10] + [5] * 8
    hybrid = load_space("hybrid")
    assert len(hybrid.searchable) == 12
    for p in hybrid.positions:
        ops = {c["op"] for c in p.choices}
        assert {"bcres", "mbconv"} <= ops
        assert ("zero" in ops) == (p.in_shape == p.out_shape)


def test_bcresnet_space_holds_bcresnet2_exactly():
    space = load_space("bcresnet")
    picks = [p.labels.index(f"bcres_f3t3_d{dil}_ssn5")
             for p, dil in zip(space.searchable, [1, 2, 4, 4, 4, 8, 8, 8])]
    profile = profile_model(build_from_genotype(space.genotype(picks)))
    assert (profile.params, profile.macs) == (27_284, 7_323_672)


def test_width_mult_and_features_override():
    space = load_space("proxyless_kws", width_mult=1.25, features={"n_mfcc": 20})
    assert space.stem["out_channels"] == 88 and space.head["channels"] == 176
    assert space.positions[0].in_shape == (88, 20, 26)
    widths = {c["out_channels"] for p in space.positions for c in p.choices if "out_channels" in c}
    assert widths == {88}
    assert load_space("proxyless_kws", width_mult=0.75).stem["out_channels"] == 56


def _mutate(path, value):
    data = copy.deepcopy(TINY_SPACE)
    node = data
    for key in path[:-1]:
        node = node[key]
    if isinstance(node, list) and path[-1] == len(node):
        node.append(value)
    else:
        node[path[-1]] = value
    return data


BAD_SPACES = [
    (("blocks", 0, "choices", 1), {"op": "zero"},
     r"blocks\[0\] choice 4 \(zero\): output shape .* \(8, 10, 26\) differs "
     r".*zero \(skip\) is only"),
    (("blocks", 1, "choices", 1, "out_channels"), 16,
     r"blocks\[1\] \(position 1\) choice 4 \(bcres_f3t3_d1_bn\): output shape .*\(16, 5, 13\)"),
    (("blocks", 1, "choices", 1, "ssn_groups"), 2,
     r"blocks\[1\] \(position 1\) choice 4 \(bcres\)\.ssn_groups: SubSpectralNorm with 2 groups"),
    (("blocks", 1, "choices", 1, "freq_stride"), [1, 2],
     r"blocks\[1\] \(position 1\) choice 4 \(bcres\)\.freq_stride: .*never stride in time"),
    (("blocks", 1, "choices", 0, "grid", "kernel"), [3, 4],
     r"blocks\[1\] \(position 1\) choice 2 \(mbconv\)\.kernel: expected an odd kernel"),
    (("blocks", 1, "choices", 0, "kernel"), 3,
     r"blocks\[1\]\.choices\[0\]\.grid: key\(s\) \['kernel'\]"),
    (("blocks", 1, "choices", 2), {"op": "mbconv", "out_channels": 8},
     r"blocks\[1\] \(position 1\) choice 5 \(mbconv_k3_e1\): listed twice"),
    (("blocks", 1, "repeat"), 0, r"blocks\[1\]\.repeat: expected an integer >= 1, got 0"),
    (("blocks", 1, "op"), "zero", r"blocks\[1\]: unknown key\(s\) \['op'\] next to 'choices'"),
    (("head", "channels"), 0, r"head\.channels: expected an integer >= 1"),
    (("widths",), 2, r"unknown key\(s\) \['widths'\]"),
]


@pytest.mark.parametrize("path,value,message", BAD_SPACES, ids=[m for _, _, m in BAD_SPACES])
def test_invalid_spaces_are_rejected_naming_the_position(path, value, message):
    expected = r"space\.yaml: " + message if "blocks" in message else message
    with pytest.raises(ValueError, match=expected):
        parse_space(_mutate(path, value), "space.yaml")


def test_space_file_errors(tmp_path):
    with pytest.raises(ValueError,
                       match=r"unknown search space 'nope'.*bcresnet.*hybrid.*proxyless_kws"):
        load_space("nope")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_space(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("mode", ["full_v2", "two"])
def test_supernet_forward_backward_and_alpha_gradients(built, name, mode):
    space, net, table = built(name)
    net.train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, *space.features.shape)
    labels = torch.tensor([0, 1])
    # weight step: one path; only its weights get gradients
    net.sample_paths(g)
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), labels).backward()
    for m in net.mixed_ops:
        for k, candidate in enumerate(m.candidates):
            has_grad = any(p.grad is not None for p in candidate.parameters())
            assert has_grad == (k == m.active and any(True for _ in candidate.parameters()))
        assert m.alpha.grad is None
    # architecture step: gradients reach every alpha through the gates (CE only here)
    net.sample_gates(mode, g)
    net.arch_backward(F.cross_entropy(net(x), labels))
    for m in net.mixed_ops:
        grad = m.alpha.grad
        assert torch.isfinite(grad).all()
        assert (grad != 0).sum() == (len(m.candidates) if mode == "full_v2" else 2)
        assert set(torch.nonzero(grad).flatten().tolist()) == set(m.involved)
        assert abs(float(grad.sum())) < 1e-4 * float(grad.abs().sum())  # softmax: sums to 0
    if mode == "full_v2" and name != "bcresnet":
        zero = [m.alpha.grad[[describe_block(c) for c in p.choices].index("zero")]
                for m, p in zip(net.mixed_ops, space.searchable) if {"op": "zero"} in p.choices]
        assert zero and all(g != 0 for g in zero)   # the zero path gets an arch gradient too
    # the cost term reaches alpha directly
    net.choose(net.argmax())
    expected = table.expected(net.probs())
    net.sample_gates(mode, g)
    net.arch_backward(torch.log(expected))
    assert all((m.alpha.grad != 0).all() for m in net.mixed_ops)
    net.choose(net.argmax())


def test_gate_gradient_equals_the_explicit_mixture():
    torch.manual_seed(0)
    candidates = [nn.Conv2d(3, 3, k, padding=k // 2) for k in (1, 3, 5)] + [nn.Identity()]
    op = MixedOp(candidates)
    with torch.no_grad():
        op.alpha.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1]))
    x = torch.randn(2, 3, 6, 7)
    target = torch.randn(2, 3, 6, 7)
    op.sample_gates("full_v2", torch.Generator().manual_seed(0))
    (gate_grad,) = torch.autograd.grad(((op(x) - target) ** 2).mean(), [op.gates])
    gates = op.gates.detach().clone().requires_grad_(True)
    mixture = sum(gates[k] * c(x) for k, c in enumerate(candidates))
    (explicit,) = torch.autograd.grad(((mixture - target) ** 2).mean(), [gates])
    assert torch.allclose(gate_grad, explicit, atol=1e-6)
    p = op.probs().detach()
    expected = torch.stack([sum(explicit[j] * p[j] * (float(i == j) - p[i]) for j in range(4))
                            for i in range(4)])
    assert torch.allclose(op.alpha_grad_from_gates(gate_grad), expected, atol=1e-7)


def test_two_mode_update_leaves_the_other_probabilities_alone():
    op = MixedOp([nn.Identity() for _ in range(5)])
    with torch.no_grad():
        op.alpha.copy_(torch.tensor([0.1, 0.4, -0.3, 0.2, 0.0]))
    op.sample_gates("two", torch.Generator().manual_seed(3))
    before = op.probs().detach().clone()
    with torch.no_grad():
        op.alpha[op.involved[0]] += 0.7
    op.rescale_two()
    after = op.probs().detach()
    others = [k for k in range(5) if k not in op.involved]
    assert torch.allclose(after[others], before[others], atol=1e-6)
    assert not torch.allclose(after, before)


@pytest.mark.parametrize("name", SPACES)
def test_one_hot_expected_macs_equal_the_profiled_derived_net(built, name):
    space, net, table = built(name)
    g = torch.Generator().manual_seed(7)
    for _ in range(2):
        picks = [int(torch.randint(len(m.candidates), (1,), generator=g)) for m in net.mixed_ops]
        one_hot = [F.one_hot(torch.tensor(k), len(m.candidates)).float()
                   for k, m in zip(picks, net.mixed_ops)]
        derived = build_from_genotype(space.genotype(picks))
        assert float(table.expected(one_hot)) == table.of(picks) == profile_model(derived).macs
    # derive -> genotype -> build gives the MACs the table predicts, through create_model too
    with torch.no_grad():
        for m in net.mixed_ops:
            m.alpha.normal_(generator=g)
    picks = net.argmax()
    assert table.smallest() <= table.of(picks) <= table.largest()
    assert profile_model(build_from_genotype(space.genotype(picks))).macs == table.of(picks)


def test_budget_picks_finds_the_most_probable_net_in_the_band():
    table = MacsTable(fixed=1000, choices=[[0, 300, 900], [100, 400], [0, 250, 500, 800]])
    g = torch.Generator().manual_seed(0)
    probs = [F.softmax(torch.randn(len(c), generator=g), 0) for c in table.choices]

    def score(picks):
        return sum(math.log(p[k]) for p, k in zip(probs, picks))

    for low, high in [(1500, 1900), (2000, 2300), (1000, 1200)]:
        picks = budget_picks(probs, table, low, high)
        assert low <= table.of(picks) <= high
        feasible = [ks for ks in itertools.product(*[range(len(c)) for c in table.choices])
                    if low <= table.of(list(ks)) <= high]
        assert math.isclose(score(picks), max(score(ks) for ks in feasible))
    with pytest.raises(ValueError, match="outside what the space can build"):
        budget_picks(probs, table, 5000, 6000)


def test_architecture_losses():
    ce, ref = torch.tensor(2.0), 20e6
    at_ref = torch.tensor(ref)
    one = torch.tensor(1.0)
    assert torch.isclose(arch_loss(ce, at_ref, "mul#log", ref, alpha=0.5, beta=8), one)
    big = torch.tensor(40e6)
    steep, mild = (arch_loss(ce, big, "mul#log", ref, beta=b) for b in (8, 1))
    assert steep > mild > ce
    assert torch.isclose(arch_loss(ce, big, "add#linear", ref, lam=0.1), torch.tensor(2.1))
    assert arch_loss(ce, None, "mul#log", ref) is ce
    assert torch.isclose(arch_loss(ce, big, "budget", ref, multiplier=2.0),
                         2 + 2 * torch.log(torch.tensor(2.0)))
    budget = BudgetMultiplier(ref, tolerance=0.1, rate=0.5)
    assert budget.update(40e6) > 0 and budget.value == pytest.approx(0.5 * math.log(2))
    assert budget.update(20.5e6) == pytest.approx(0.5 * math.log(2))   # within half the band
    assert budget.update(5e6) < 0 and budget.within(21e6) and not budget.within(23e6)


def _tiny_search_config(tmp_path, tone_root, **search):
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    overrides = {"search.search_space": str(space), "data.dataset": "folders",
                 "data.root": str(tone_root), "train.batch_size": 20, "train.eval_batch_size": 100,
                 "train.max_steps_per_epoch": 4, "search.warmup_epochs": 1, "search.n_epochs": 1,
                 "search.grad_update_arch_param_every": 2, "search.flops_ref_value": 3e5,
                 "search.grad_reg_loss_type": "mul#log", "augment.noise_prob": 0.0}
    overrides.update({f"search.{k}": v for k, v in search.items()})
    return load_search_config(None, overrides)


def test_search_resume_gives_the_same_alphas_and_weights(tone_root, tmp_path):
    cfg = _tiny_search_config(tmp_path, tone_root, warmup_epochs=0, n_epochs=2)
    store = open_dataset(cfg.data, progress=False)
    straight = search(cfg, tmp_path / "a", store=store, progress=False)
    assert search(cfg, tmp_path / "b", store=store, progress=False,
                  stop_after_epoch=0) == {"stopped_after_epoch": 0}
    resumed = search(cfg, tmp_path / "b", resume=True, store=store, progress=False)
    a = RunDir(tmp_path / "a").load_checkpoint("last")["supernet"]
    b = RunDir(tmp_path / "b").load_checkpoint("last")["supernet"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len([k for k in a if k.endswith(".alpha")]) == 3
    assert RunDir(tmp_path / "b").load_checkpoint("last")["arch_optimizer"]["state"]  # arch ran
    assert straight["blocks"] == resumed["blocks"]
    assert straight["derived_macs"] == resumed["derived_macs"]
    # the run directory
    run = tmp_path / "b"
    for name in ("config.yaml", "features.yaml", "classes.txt", "checkpoints/last.pt",
                 "metrics.json", "genotype.yaml", "arch_history.csv"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    rows = list(csv.DictReader((run / "arch_history.csv").open()))
    assert [r["phase"] for r in rows] == ["search", "search"]
    assert math.isclose(sum(float(rows[-1][f"pos1:{label}"]) for label in
                            ["mbconv_k3_e1", "mbconv_k3_e2", "mbconv_k5_e1", "mbconv_k5_e2",
                             "bcres_f3t3_d1_bn", "zero"]), 1.0, rel_tol=1e-5)
    genotype = load_genotype(run / "genotype.yaml")
    assert genotype["classes"] == RunDir(run).path.joinpath("classes.txt").read_text().split()
    model = create_model(run / "genotype.yaml", num_classes=4)
    assert profile_model(model).macs == resumed["derived_macs"]


def test_a_search_from_another_runs_warmup_equals_a_straight_search(tone_root, tmp_path):
    cfg = _tiny_search_config(tmp_path, tone_root, warmup_epochs=1, n_epochs=1)
    store = open_dataset(cfg.data, progress=False)
    straight = search(cfg, tmp_path / "a", store=store, progress=False)
    search(cfg, tmp_path / "w", store=store, progress=False, stop_after_epoch=0)
    adopted = search(cfg, tmp_path / "b", store=store, progress=False, warmup_from=tmp_path / "w")
    a = RunDir(tmp_path / "a").load_checkpoint("last")["supernet"]
    b = RunDir(tmp_path / "b").load_checkpoint("last")["supernet"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["phase"] for r in adopted["history"]] == ["warmup", "search"]
    assert ([(r["train_loss"], r["valid_acc"]) for r in adopted["history"]] ==
            [(r["train_loss"], r["valid_acc"]) for r in straight["history"]])
    assert adopted["blocks"] == straight["blocks"]
    # the search epochs' settings may differ (the ablation), the warm-up's may not
    search(_tiny_search_config(tmp_path, tone_root, warmup_epochs=1, n_epochs=1,
                               target_hardware="none", arch_lr=0.5), tmp_path / "c",
           store=store, progress=False, warmup_from=tmp_path / "w")
    arch_opt = RunDir(tmp_path / "c").load_checkpoint("last")["arch_optimizer"]
    assert arch_opt["param_groups"][0]["lr"] == 0.5 and arch_opt["state"]
    with pytest.raises(ValueError, match="search.warmup_lr is 0.2 there, 0.1 here"):
        search(_tiny_search_config(tmp_path, tone_root, warmup_epochs=1, warmup_lr=0.1),
               tmp_path / "d", store=store, progress=False, warmup_from=tmp_path / "w")
    with pytest.raises(ValueError, match="search.warmup_epochs is 1 there, 2 here"):
        search(_tiny_search_config(tmp_path, tone_root, warmup_epochs=2), tmp_path / "e",
               store=store, progress=False, warmup_from=tmp_path / "w")
    with pytest.raises(ValueError, match="checkpoint is after 2 epochs; expected one after "
                                         "the warm-up's 1"):
        search(cfg, tmp_path / "f", store=store, progress=False, warmup_from=tmp_path / "a")


def test_budget_mode_lands_inside_the_band(tone_root, tmp_path):
    cfg = _tiny_search_config(tmp_path, tone_root, grad_reg_loss_type="budget",
                              grad_binary_mode="two", flops_ref_value=2.5e5)
    metrics = search(cfg, tmp_path / "run", store=open_dataset(cfg.data, progress=False),
                     progress=False)
    assert metrics["within_budget"] and abs(metrics["macs_vs_ref"] - 1) <= 0.1
    assert [row["phase"] for row in metrics["history"]] == ["warmup", "search"]


def test_command_line_errors_are_one_line(tone_root, tmp_path, capsys):
    common = ["--dataset", "folders", "--data_root", str(tone_root), "--path", str(tmp_path / "r")]
    assert main(common + ["--search_space", "bcresnet", "--n_mfcc", "20"]) == 2
    assert "uses logmel features; n_mfcc applies to MFCC spaces only" in capsys.readouterr().err
    assert main(common + ["--set", "search.arch_fraction=2"]) == 2
    assert "search.arch_fraction: expected a fraction in (0, 1), got 2" in capsys.readouterr().err
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(TINY_SPACE))
    assert main(common + ["--search_space", str(tiny), "--grad_reg_loss_type", "budget",
                          "--flops_ref_value", "1e3"]) == 2
    assert "budget band 900..1,100 MACs is out of reach of tiny" in capsys.readouterr().err
    assert main(common + ["--resume", "--warmup_from", str(tmp_path / "w")]) == 2
    assert "--warmup_from starts a fresh search; --resume continues one" in capsys.readouterr().err
    assert main(common + ["--strategy", "random", "--warmup_from", str(tmp_path / "w")]) == 2
    assert "--warmup_from: search.strategy random has no supernet warm-up" in (
        capsys.readouterr().err)


def test_flags_presets_and_config_layers(tmp_path):
    parser = argparse.ArgumentParser()
    add_search_flags(parser)
    cfg = config_from_args(parser.parse_args(["--flops_ref_value", "5e6", "--n_mfcc", "20"]))
    assert cfg.search.flops_ref_value == 5e6 and cfg.features == {"n_mfcc": 20}
    assert (cfg.train.lr, cfg.train.nesterov, cfg.train.weight_decay) == (0.2, True, 4e-5)
    assert cfg.train.epochs == cfg.search.warmup_epochs + cfg.search.n_epochs
    yaml_cfg = tmp_path / "search.yaml"
    yaml_cfg.write_text("search: {grad_reg_loss_beta: 8, n_epochs: 3}\ntrain: {batch_size: 50}\n")
    cfg = config_from_args(parser.parse_args(["--preset", "paper", "--config", str(yaml_cfg),
                                              "--warmup_epochs", "2"]))
    s = cfg.search     # defaults < preset < --config < flags
    assert (s.warmup_epochs, s.n_epochs, s.grad_binary_mode, s.arch_lr) == (2, 3, "full_v2", 4e-3)
    assert s.grad_reg_loss_beta == 8 and cfg.train.batch_size == 50
    yaml_cfg.write_text("search: {grad_reg_loss_gamma: 1}\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['grad_reg_loss_gamma'\]"):
        config_from_args(parser.parse_args(["--config", str(yaml_cfg)]))


def test_search_subcommand_has_the_same_flags():
    from nas_kws.nas.commands import add_commands, run_command

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["search", "--flops_ref_value", "5e6", "--grad_binary_mode", "two"])
    assert args.func is run_command and config_from_args(args).search.flops_ref_value == 5e6
