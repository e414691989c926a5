"""`--strategy random`: K nets drawn uniformly from the space's nets inside the MAC band, each
written as a run directory like a searched one (genotype.yaml, config.yaml, features.yaml,
classes.txt, metrics.json), so retraining, comparison and quantization treat them alike.

    nas-kws search --strategy random --n 5 --search_space hybrid --flops_ref_value 6e6 --path R
    -> R/net00 ... R/net04, R/metrics.json
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas_kws.config import to_dict
from nas_kws.data.loader import open_dataset
from nas_kws.models.genotype import build_from_genotype, describe_block, save_genotype
from nas_kws.nas.cost import macs_table
from nas_kws.nas.sample import BandSampler, VariantSampler
from nas_kws.nas.search_config import SearchConfig, budget_band, open_variants
from nas_kws.nas.space import SpaceUnion
from nas_kws.nas.supernet import Supernet
from nas_kws.profiling import profile_model
from nas_kws.runs import RunDir


def net_dir(path: str | Path, index: int) -> Path:
    return Path(path) / f"net{index:02d}"


def open_band(cfg: SearchConfig, store=None,
              progress: bool = True) -> tuple[SpaceUnion, list[str], VariantSampler]:
    """The space (its variants), the data's classes and a uniform sampler over the budget
    band's nets: what every strategy that draws nets from the band starts from."""
    union = open_variants(cfg)
    store = store if store is not None else open_dataset(cfg.data, progress=progress)
    classes = list(store.classes)
    samplers: list[BandSampler | None] = []
    for space in union.spaces:
        table = macs_table(Supernet(space, len(classes))).bounded(cfg.search.max_flash_kb,
                                                                 cfg.search.max_sram_kb)
        try:
            samplers.append(BandSampler(table, *budget_band(cfg.search)))
        except ValueError:
            if len(union.spaces) == 1:
                raise
            samplers.append(None)      # this variant cannot reach the band; others may
    return union, classes, VariantSampler(samplers)


def random_search(cfg: SearchConfig, run_dir: str | Path, store=None,
                  progress: bool = True) -> dict[str, Any]:
    """Draw `cfg.search.n_random` distinct nets (seed `train.seed`) and write their runs."""
    space, classes, sampler = open_band(cfg, store, progress)
    low, high = sampler.low, sampler.high
    rng = np.random.default_rng([cfg.train.seed, 0x5EA4C4])
    nets = []
    run = RunDir(run_dir)
    run.write_setup(to_dict(cfg), space.features, classes)
    for index, net_picks in enumerate(sampler.draw_distinct(cfg.search.n_random, rng)):
        genotype = space.genotype(net_picks, len(classes), classes)
        variant, picks = net_picks[0], net_picks[1:]
        net = RunDir(net_dir(run_dir, index))
        net.write_setup(to_dict(cfg), space.features, classes)
        path = save_genotype(net.genotype_path, genotype)
        prof = profile_model(build_from_genotype(genotype))
        metrics = {"strategy": "random", "search_space": space.name, "index": index,
                   "variant": space.spaces[variant].name, "picks": picks,
                   "genotype": str(path),
                   "blocks": [describe_block(b) for b in genotype["blocks"]],
                   "derived_macs": prof.macs, "derived_params": prof.params,
                   "flops_ref_value": cfg.search.flops_ref_value,
                   "macs_vs_ref": prof.macs / cfg.search.flops_ref_value, "within_budget": True}
        net.write_metrics(metrics)
        nets.append(metrics)
    summary = {"strategy": "random", "search_space": space.name, "n": len(nets),
               "band": [low, high], "nets_in_band": sampler.candidates(),
               "runs": [str(net_dir(run_dir, i)) for i in range(len(nets))],
               "derived_macs": [n["derived_macs"] for n in nets]}
    run.write_metrics(summary)
    return summary
