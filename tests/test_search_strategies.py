"""Random baseline (uniform over the MAC band), evolution over the supernet, the supernet learning
on a learnable set, and the search-vs-random protocol end to end."""
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_nas import TINY_SPACE
from torch import nn

from nas_kws.data.loader import open_dataset
from nas_kws.models import create_model
from nas_kws.nas.commands import main as search_main
from nas_kws.nas.cost import MacsTable
from nas_kws.nas.derive import budget_picks
from nas_kws.nas.evolution import evolve
from nas_kws.nas.sample import BandSampler, VariantSampler
from nas_kws.nas.sandwich import warmup_path
from nas_kws.nas.search import search
from nas_kws.nas.search_config import load_search_config
from nas_kws.nas.shared_weights import SlicedBatchNorm
from nas_kws.nas.space import load_space, load_variants
from nas_kws.nas.supernet import Supernet
from nas_kws.profiling import profile_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

# 4 positions, 3 * 4 * 2 * 3 = 72 nets; MACs chosen so that many nets tie in cost
TABLE = MacsTable(fixed=100, choices=[[0, 10, 25], [5, 7, 30, 31], [0, 12], [3, 3, 40]])


def enumerate_band(table: MacsTable, low: float, high: float) -> list[tuple[int, ...]]:
    return [p for p in itertools.product(*(range(len(c)) for c in table.choices))
            if low <= table.of(list(p)) <= high]


def assert_uniform(draw, feasible: list[tuple[int, ...]], draws_per_net: int = 200) -> None:
    """Every draw is a feasible net and the counts pass a chi-square test of uniformity."""
    rng = np.random.default_rng(0)
    counts = dict.fromkeys(feasible, 0)
    for _ in range(draws_per_net * len(feasible)):
        picks = tuple(draw(rng))
        assert picks in counts, f"{picks} is outside the band"
        counts[picks] += 1
    chi2 = sum((c - draws_per_net) ** 2 / draws_per_net for c in counts.values())
    dof = len(feasible) - 1
    assert chi2 < dof + 5 * (2 * dof) ** 0.5, (chi2, dof)   # p << 1e-4 if not uniform


def test_band_sampler_is_uniform_over_the_band():
    low, high = 120, 160
    feasible = enumerate_band(TABLE, low, high)
    assert 10 < len(feasible) < 72
    sampler = BandSampler(TABLE, low, high)
    assert_uniform(sampler.draw, feasible)
    draws = 200 * len(feasible)
    dof = len(feasible) - 1
    # the most probable net in the band under random logits (budget derivation of a random
    # architecture), the biased alternative, fails the same test
    biased = dict.fromkeys(feasible, 0)
    for _ in range(draws // 4):
        probs = [torch.softmax(torch.randn(len(c)), 0) for c in TABLE.choices]
        biased[tuple(budget_picks(probs, TABLE, low, high))] += 1
    expected = draws / len(feasible) / 4
    assert sum((c - expected) ** 2 / expected for c in biased.values()) > dof + 5 * (2 * dof) ** .5


def test_variant_sampler_is_uniform_over_the_union_of_variants():
    low, high = 120, 160
    doubled = MacsTable(fixed=110, choices=[[2 * m for m in c] for c in TABLE.choices])
    feasible = [(0, *p) for p in enumerate_band(TABLE, low, high)] + \
        [(1, *p) for p in enumerate_band(doubled, low, high)]
    assert 3 < sum(v == 1 for v, *_ in feasible) < len(feasible) / 2   # unequal variants
    sampler = VariantSampler([BandSampler(TABLE, low, high), BandSampler(doubled, low, high)])
    assert_uniform(sampler.draw, feasible)
    assert sampler.macs([1, 0, 0, 0, 0]) == 110 + 2 * 8
    # a variant that cannot reach the band is left out; one variant draws the BandSampler's nets
    assert VariantSampler([None, BandSampler(TABLE, low, high)]).draw(
        np.random.default_rng(0))[0] == 1
    single = VariantSampler([BandSampler(TABLE, low, high)])
    assert [n[1:] for n in single.draw_distinct(5, np.random.default_rng(1))] == \
        BandSampler(TABLE, low, high).draw_distinct(5, np.random.default_rng(1))
    assert single.draw_per_variant(5, np.random.default_rng(1)) == \
        single.draw_distinct(5, np.random.default_rng(1))
    # a search's candidates split evenly over the variants, each share distinct and in the band
    nets = sampler.draw_per_variant(7, np.random.default_rng(2))
    assert [n[0] for n in nets] == [0, 0, 0, 0, 1, 1, 1]
    assert len({tuple(n) for n in nets}) == 7 and all(low <= sampler.macs(n) <= high for n in nets)


def test_band_sampler_errors_and_distinct_draws():
    with pytest.raises(ValueError, match="outside what the space can build"):
        BandSampler(TABLE, 1000, 2000)
    sampler = BandSampler(TABLE, 120, 160)
    nets = sampler.draw_distinct(5, np.random.default_rng(1))
    assert len({tuple(n) for n in nets}) == 5
    assert nets[:3] == sampler.draw_distinct(3, np.random.default_rng(1))   # a prefix, by seed
    with pytest.raises(ValueError, match="found only"):
        sampler.draw_distinct(len(enumerate_band(TABLE, 120, 160)) + 1, np.random.default_rng(1))


def test_evolution_finds_the_best_net_of_a_known_fitness():
    sampler = BandSampler(TABLE, 120, 160)
    feasible = enumerate_band(TABLE, 120, 160)

    def fitness(picks):          # a smooth landscape with one best net
        return -sum((p - t) ** 2 for p, t in zip(picks, (1, 2, 1, 0)))

    best = max(feasible, key=lambda p: fitness(list(p)))
    ranked = evolve(fitness, sampler, np.random.default_rng(0), population=8, generations=6,
                    parents=3)
    assert tuple(ranked[0].picks) == best
    assert all(120 <= s.macs <= 160 for s in ranked) and len(ranked) <= 8 + 6 * 5


def _space_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


def test_random_strategy_writes_runs_like_a_search(tone_root, tmp_path, capsys):
    out = tmp_path / "random"
    argv = ["--strategy", "random", "--n", "4", "--search_space", str(_space_file(tmp_path)),
            "--flops_ref_value", "2.5e5", "--dataset", "folders", "--data_root", str(tone_root),
            "--path", str(out), "--quiet"]
    assert search_main(argv) == 0
    assert "4 nets drawn uniformly" in capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    assert len(summary["runs"]) == 4
    for run in summary["runs"]:
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        assert 2.25e5 <= metrics["derived_macs"] <= 2.75e5
        model = create_model(Path(run) / "genotype.yaml")
        assert profile_model(model).macs == metrics["derived_macs"]
        for name in ("config.yaml", "features.yaml", "classes.txt"):
            assert (Path(run) / name).is_file()
    assert search_main(argv) == 2          # the path holds a run now


def test_random_strategy_draws_from_every_variant_of_a_space(tone_root, tmp_path):
    variants = [{"name": "t1", "stem": {"stride": [1, 1]}}, {"name": "t2", "width_mult": 2.0}]
    path = tmp_path / "tiny_variants.yaml"
    path.write_text(yaml.safe_dump({**TINY_SPACE, "variants": variants}))
    union = load_variants(path)
    assert [s.name for s in union.spaces] == ["tiny-t1", "tiny-t2"]
    assert union.spaces[1].positions[0].in_shape[2] < union.spaces[0].positions[0].in_shape[2]
    with pytest.raises(ValueError, match="only --strategy random and halving"):
        load_space(path)                                  # no supernet over a union
    bundled = load_variants("hybrid_ts")                  # `base: hybrid` + 3 variants
    assert [s.positions[0].in_shape for s in bundled.spaces] == [(32, 20, 101), (32, 20, 51),
                                                                  (45, 20, 51)]
    assert [p.choices for p in bundled.spaces[0].positions] == \
        [p.choices for p in load_space("hybrid").positions]
    out = tmp_path / "random"
    assert search_main(["--strategy", "random", "--n", "6", "--search_space", str(path),
                        "--flops_ref_value", "4.2e5", "--dataset", "folders", "--data_root",
                        str(tone_root), "--path", str(out), "--quiet"]) == 0
    nets = [json.loads((Path(r) / "metrics.json").read_text())
            for r in json.loads((out / "metrics.json").read_text())["runs"]]
    assert {n["variant"] for n in nets} == {"tiny-t1", "tiny-t2"}
    for n in nets:
        assert 3.78e5 <= n["derived_macs"] <= 4.62e5
        assert yaml.safe_load(Path(n["genotype"]).read_text())["name"] == n["variant"]
    path.write_text(yaml.safe_dump({**TINY_SPACE, "variants": [*variants, {"name": "x",
                                                                           "depth": 2}]}))
    with pytest.raises(ValueError, match=r"variants\[2\].*depth"):
        load_variants(path)


def _config(tmp_path, tone_root, **search):
    overrides = {"search.search_space": str(_space_file(tmp_path)), "data.dataset": "folders",
                 "data.root": str(tone_root), "train.batch_size": 20,
                 "train.eval_batch_size": 100, "search.flops_ref_value": 2.5e5,
                 "augment.noise_prob": 0.0}
    overrides.update({f"search.{k}": v for k, v in search.items()})
    return load_search_config(None, overrides)


def test_supernet_learns_on_a_learnable_set(tone_root, tmp_path):
    """The warm-up recipe (sandwich.py): shared weights, the teacher path first, then paths
    opened position by position until they are drawn uniformly from the band. After it the
    sampled band paths are far above chance (25 %) on the tones."""
    cfg = _config(tmp_path, tone_root, strategy="evolution", path_sampling="band",
                  share_weights=True, teacher_op="bcres", teacher_epochs=2, open_epochs=3,
                  warmup_epochs=7, n_epochs=0, warmup_lr=0.1, evo_population=4,
                  evo_parents=2, evo_generations=1)
    metrics = search(cfg, tmp_path / "run", store=open_dataset(cfg.data, progress=False),
                     progress=False)
    assert metrics["history"][-1]["train_acc"] > 0.5      # band-uniform paths (fully opened)
    assert metrics["supernet_valid_acc"] > 0.45
    assert metrics["within_budget"] and metrics["strategy"] == "evolution"
    rows = (tmp_path / "run" / "evolution.csv").read_text().splitlines()
    assert rows[0] == "generation,macs,fitness,picks" and len(rows) - 1 <= 4 + 1 * 2


def test_warmup_paths_open_from_the_teacher():
    teacher, drawn = [0, 1, 2, 0], [1, 2, 0, 2]
    rng = np.random.default_rng(0)
    assert warmup_path(teacher, lambda: drawn, 1, 2, 4, rng) == teacher      # teacher epochs
    assert warmup_path(teacher, lambda: drawn, 5, 2, 4, rng) == drawn        # fully open
    assert warmup_path(teacher, lambda: drawn, 0, 0, 0, rng) == drawn        # recipe off
    half = [warmup_path(teacher, lambda: drawn, 3, 2, 4, rng) for _ in range(200)]
    opened = np.mean([a == b for path in half for a, b in zip(path, drawn)])
    assert 0.4 < opened < 0.6                                                  # 2 of 4 epochs


def test_shared_candidates_slice_the_largest_members_convs_and_norms():
    torch.manual_seed(0)
    space = load_space("hybrid", 0.5)
    shared, alone = Supernet(space, 12, share_weights=True), Supernet(space, 12)
    assert (sum(p.numel() for p in shared.parameters())
            < 0.5 * sum(p.numel() for p in alone.parameters()))
    position = space.searchable[1]
    small, big = (shared.mixed_ops[1].candidates[k] for k in (0, 3))   # bcres f3t3, f5t5
    assert any(isinstance(m, SlicedBatchNorm) for m in small.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) and m.affine for m in small.modules()
                   if m not in set(big.modules()))
    x = torch.randn(2, *position.in_shape)
    small.eval()
    before = small(x)
    with torch.no_grad():
        for norm in big.modules():
            if isinstance(norm, nn.BatchNorm2d):
                norm.bias += 1.0
    assert not torch.allclose(before, small(x))           # the affines are the largest's


def test_search_vs_random_quick(tmp_path):
    from search_vs_random import main as protocol
    from search_vs_random import read_rows

    csv_path = tmp_path / "res.csv"
    args = ["--quick", "--out", str(tmp_path / "runs"), "--csv", str(csv_path)]
    assert protocol(args) == 0
    rows = read_rows(csv_path)
    assert sorted((r["kind"], r["net"]) for r in rows) == [
        ("baseline", "bcresnet1"), ("random", "net00"), ("random", "net01"),
        ("searched", "search0")]
    table = csv_path.with_suffix(".md").read_text()
    assert "| hybrid-6M | searched (default) | 1 |" in table
    assert csv_path.with_suffix(".png").stat().st_size > 1000
    assert protocol(args) == 0              # finished rows are not run again
    assert len(read_rows(csv_path)) == 4


def test_protocol_reads_baselines_from_the_zoo_only_for_its_own_command():
    from search_vs_random import zoo_metrics

    shipped = json.loads((ROOT / "zoo" / "bcresnet1" / "seed1" / "metrics.json").read_text())
    default = ["--set", "data.synth_size=default"]
    assert zoo_metrics("bcresnet1", 1, default)["test_best_acc"] == shipped["test_best_acc"]
    assert zoo_metrics("bcresnet1", 1, ["--epochs", "1", *default]) is None
    assert zoo_metrics("bcresnet1", 1, ["--set", "data.synth_size=tiny"]) is None
    assert zoo_metrics("bcresnet1", 7, default) is None          # a seed the zoo does not ship


def test_rank_correlations():
    from supernet_ranking import kendall_tau, spearman_rho

    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_protocol_table_compares_with_random_and_the_bcresnet_curve():
    from search_vs_random import noise_lines, summary_lines

    def row(setting, kind, net, macs, acc, tag="-"):
        return {"setting": setting, "kind": kind, "tag": tag, "net": net, "seed": 0,
                "macs": macs, "valid_acc": acc, "test_acc": acc}

    rows = [row("baseline", "baseline", "bcresnet1", 1e6, 0.70),
            row("baseline", "baseline", "bcresnet8", 4e6, 0.80),
            row("baseline", "baseline", "dscnn_s", 2e6, 0.77),
            row("s", "random", "net00", 2e6, 0.74), row("s", "random", "net01", 2e6, 0.76),
            row("s", "searched", "search0", 2e6, 0.78, "t")]
    searched = next(line for line in summary_lines(rows) if "searched (t)" in line)
    # the curve at 2 M, linear in log MACs between 1 M (70 %) and 4 M (80 %), is 75 %
    assert "| 78.00 +- 0.00 |" in searched and "| +3.00 | 100 | 75.00 (+3.00) |" in searched
    # a second search seed: the difference gets its standard error, sqrt(2.83^2 / 2 + 1.41^2 / 2)
    rows.append({**row("s", "searched", "search1", 2e6, 0.74, "t"), "seed": 1})
    searched = next(line for line in summary_lines(rows) if "searched (t)" in line)
    assert "| 76.00 +- 2.83 |" in searched and "| +1.00 +- 2.24 | 50 |" in searched
    rows.pop()
    # a baseline outside the BC-ResNet family is a row set against the curve, not part of it
    dscnn = next(line for line in summary_lines(rows) if "| dscnn_s |" in line)
    assert dscnn.endswith("| 75.00 (+2.00) |")

    # net00 retrained with a second seed: the random mean is over nets (seeds averaged first),
    # and the seed std pooled over repeated nets is set against the spread of the nets' means
    rows.append({**row("s", "random", "net00", 2e6, 0.78), "seed": 1})
    random = next(line for line in summary_lines(rows) if "| random |" in line)
    assert "| 2 | 2,000,000 | 76.00 +- 0.00 |" in random
    noise = noise_lines(rows)
    assert noise[0].startswith("Seed noise: the same net's test accuracy varies by 2.83 points")
    assert "means spread by 0.00 (std over 2 nets); seed noise alone would give 2.45" in noise[1]


def test_halving_trains_rungs_and_keeps_the_best_third(tone_root, tmp_path):
    from nas_kws.nas.halving import successive_halving

    cfg = _config(tmp_path, tone_root, strategy="halving", halving_nets=4,
                  halving_epochs=[1, 2], halving_eta=3)
    store = open_dataset(cfg.data, progress=False)
    metrics = successive_halving(cfg, tmp_path / "run", store=store, progress=False)
    rungs = [(r["rung"], r["net"]) for r in metrics["rungs"]]
    assert [r for r, _ in rungs] == [0, 0, 0, 0, 1, 1]       # 4 nets, then ceil(4 / 3) = 2
    assert metrics["within_budget"] and metrics["trained_epochs"] == 4 * 1 + 2 * 2
    rung0 = {r["net"]: r["valid_acc"] for r in metrics["rungs"] if r["rung"] == 0}
    survivors = [n for r, n in rungs if r == 1]
    assert min(rung0[n] for n in survivors) >= max(v for n, v in rung0.items()
                                                    if n not in survivors)
    again = successive_halving(cfg, tmp_path / "run", store=store, progress=False)
    assert again["picked"] == metrics["picked"]             # finished trainings are read back

    # two worker processes train a rung's nets at once, to the same accuracies (1 thread each;
    # each net's init is seeded, not left to what the process ran before)
    one_rung = replace(cfg, search=replace(cfg.search, halving_nets=2, halving_epochs=[1]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = successive_halving(one_rung, tmp_path / "serial", store=store, progress=False)
        parallel = successive_halving(
            replace(one_rung, search=replace(one_rung.search, halving_workers=2)),
            tmp_path / "parallel", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [(r["net"], r["valid_acc"]) for r in parallel["rungs"]] == [
        (r["net"], r["valid_acc"]) for r in serial["rungs"]]
