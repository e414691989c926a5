"""Memory-bounded search: derived and sampled nets respect --max_flash_kb / --max_sram_kb,
checked against the exhaustive optimum on a small table and on a real space's nets; the
architecture loss's flash / SRAM penalty moves a real search's probabilities within them."""
import itertools

import numpy as np
import pytest
import torch
from test_nas import TINY_SPACE, _tiny_search_config

from nas_kws.data.loader import open_dataset
from nas_kws.models.genotype import build_from_genotype
from nas_kws.nas.arch_loss import bound_penalty
from nas_kws.nas.cost import MacsTable, macs_table
from nas_kws.nas.derive import budget_picks, derive_picks
from nas_kws.nas.sample import BandSampler
from nas_kws.nas.search import _Search, endless
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


def test_expected_flash_and_peak_sram_are_the_exact_expectations():
    torch.manual_seed(0)
    nets = [list(p) for p in itertools.product(range(3), repeat=3)]
    for _ in range(5):
        probs = [torch.softmax(2 * torch.randn(3), 0) for _ in range(3)]
        weight = [float(np.prod([q[k] for q, k in zip(probs, net)])) for net in nets]
        flash = sum(w * TABLE.flash_of(net) for w, net in zip(weight, nets))
        sram = sum(w * TABLE.sram_of(net) for w, net in zip(weight, nets))
        assert float(TABLE.expected_flash(probs)) == pytest.approx(flash, rel=1e-5)
        assert float(TABLE.expected_sram(probs)) == pytest.approx(sram, rel=1e-5)
    one_hot = [torch.eye(3)[k] for k in (2, 0, 1)]
    assert float(TABLE.expected_sram(one_hot)) == TABLE.sram_of([2, 0, 1])
    assert float(TABLE.expected_flash(one_hot)) == TABLE.flash_of([2, 0, 1])


FLASH_KB, SRAM_KB = 2.0, 4.0   # the tiny space: 1.1 .. 3.7 KiB flash, 2.5 .. 6.1 KiB SRAM


def _arch_steps(tone_root, tmp_path, weight: float, steps: int = 15):
    """(E[flash], E[peak SRAM], derived picks) before and after `steps` architecture steps of a
    tiny search whose most probable net (the largest candidate everywhere) breaks both bounds;
    cross-entropy alone besides the penalty."""
    cfg = _tiny_search_config(tmp_path, tone_root, max_flash_kb=FLASH_KB, max_sram_kb=SRAM_KB,
                              memory_penalty_weight=weight, target_hardware="none",
                              arch_lr=0.3)
    job = _Search(cfg, tmp_path / f"run{weight}", open_dataset(cfg.data, progress=False), False)
    with torch.no_grad():
        for alpha in job.supernet.arch_parameters():
            alpha[3] = 2.0                   # mbconv_k5_e2: the most flash and SRAM
    table = job.table

    def memory() -> tuple[float, float]:
        probs = [p.detach() for p in job.supernet.probs()]
        return float(table.expected_flash(probs)), float(table.expected_sram(probs))

    assert not table.fits_memory(job.supernet.argmax())
    before = memory()
    assert before[0] > FLASH_KB * KIB and before[1] > SRAM_KB * KIB
    batches, generator = endless(job.arch_loader, 0), torch.Generator().manual_seed(0)
    for _ in range(steps):
        job.arch_step(*next(batches), generator)
    return before, memory(), job


def test_the_penalty_moves_probability_within_the_bounds(tone_root, tmp_path):
    before, after, job = _arch_steps(tone_root, tmp_path, weight=1.0)
    assert after[0] < before[0] and after[1] < before[1]
    assert after[0] <= FLASH_KB * KIB and after[1] <= SRAM_KB * KIB
    assert job.table.fits_memory(job.supernet.argmax())   # the plain argmax, not derivation
    _, unpenalised, job = _arch_steps(tone_root, tmp_path, weight=0.0)
    assert job.memory_penalty() is None
    assert unpenalised[0] > FLASH_KB * KIB and not job.table.fits_memory(job.supernet.argmax())
    assert after[0] < unpenalised[0]


def test_the_penalty_alone_gives_every_position_a_gradient():
    torch.manual_seed(0)
    net = Supernet(parse_space(TINY_SPACE, "tiny"), 12)
    table = macs_table(net).bounded(max_flash_kb=1.5, max_sram_kb=2.6)
    probs = net.probs()
    penalty = (bound_penalty(table.expected_flash(probs), table.max_flash, 1.0)
               + bound_penalty(table.expected_sram(probs), table.max_sram, 1.0))
    grads = torch.autograd.grad(penalty, net.arch_parameters())
    assert all(g.abs().sum() > 0 for g in grads)
    inside = macs_table(net).bounded(max_flash_kb=4, max_sram_kb=7)
    assert bound_penalty(inside.expected_sram(probs), inside.max_sram, 1.0).item() == 0
