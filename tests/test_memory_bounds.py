"""Memory-bounded search: derived and sampled nets respect --max_flash_kb / --max_sram_kb,
checked against the exhaustive optimum on a small table and on a real space's nets."""
import itertools

import numpy as np
import pytest
import torch
from test_nas import TINY_SPACE

from nas_kws.models.genotype import build_from_genotype
from nas_kws.nas.cost import MacsTable, macs_table
from nas_kws.nas.derive import budget_picks, derive_picks
from nas_kws.nas.sample import BandSampler
from nas_kws.nas.space import parse_space
from nas_kws.nas.supernet import Supernet
from nas_kws.profiling import profile_model

KIB = 1024
# 3 positions x 3 candidates; flash in KiB and SRAM per candidate, fixed parts 1 KiB / 2 KiB
TABLE = MacsTable(fixed=100, choices=[[10, 20, 30], [10, 20, 30], [10, 20, 30]],
                  flash=[[1 * KIB, 4 * KIB, 9 * KIB]] * 3,
                  sram=[[1 * KIB, 3 * KIB, 8 * KIB]] * 3, fixed_flash=KIB, fixed_sram=2 * KIB)


def test_derivation_is_the_best_net_within_the_bounds():
    torch.manual_seed(0)
    table = TABLE.bounded(max_flash_kb=12, max_sram_kb=5)
    for _ in range(20):
        probs = [torch.softmax(3 * torch.randn(3), 0) for _ in range(3)]
        picks = derive_picks(probs, table, (100, 200))
        feasible = [list(p) for p in itertools.product(range(3), repeat=3)
                    if table.fits_memory(list(p))]
        best = max(feasible, key=lambda p: sum(float(torch.log(q[k])) for q, k in zip(probs, p)))
        assert table.fits_memory(picks)
        assert table.sram_of(picks) <= 5 * KIB and table.flash_of(picks) <= 12 * KIB
        logp = sum(float(torch.log(q[k])) for q, k in zip(probs, picks))
        assert logp >= sum(float(torch.log(q[k])) for q, k in zip(probs, best)) - 1.0


def test_sampled_nets_respect_the_bounds():
    table = TABLE.bounded(max_flash_kb=10, max_sram_kb=4)
    sampler = BandSampler(table, 100, 200)
    draws = [sampler.draw(np.random.default_rng(seed)) for seed in range(200)]
    assert all(table.flash_of(d) <= 10 * KIB and table.sram_of(d) <= 4 * KIB for d in draws)
    assert len({tuple(d) for d in draws}) > 3


def test_impossible_bounds_are_named():
    with pytest.raises(ValueError, match="max_sram_kb 1.*fixed blocks"):
        TABLE.bounded(max_sram_kb=1)
    with pytest.raises(ValueError, match="max_flash_kb 3"):
        TABLE.bounded(max_flash_kb=3)
    with pytest.raises(ValueError, match="within 5 KiB flash"):
        budget_picks([torch.ones(3) / 3] * 3, TABLE.bounded(max_flash_kb=5), 150, 200)


def test_derived_net_of_a_real_space_is_within_its_measured_memory():
    torch.manual_seed(0)
    space = parse_space(TINY_SPACE, "tiny")
    full = macs_table(Supernet(space, 12))
    free = derive_picks([torch.ones(len(c)) for c in full.choices], full)
    flash_kb, sram_kb = full.flash_of(free) / KIB * 0.8, full.sram_of(free) / KIB
    table = full.bounded(max_flash_kb=flash_kb, max_sram_kb=sram_kb)
    picks = derive_picks([torch.ones(len(c)) for c in full.choices], table)
    profile = profile_model(build_from_genotype(space.genotype(picks), num_classes=12))
    assert profile.flash_bytes == table.flash_of(picks) <= flash_kb * KIB
    assert profile.peak_sram_bytes == table.sram_of(picks) <= sram_kb * KIB
