"""`nas-kws profile`: the cost of a registered model or a genotype (see nas_kws.profiling)."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from nas_kws.features import FeatureConfig
from nas_kws.profiling import format_profile, profile_model


def cmd_profile(args: argparse.Namespace) -> int:
    from nas_kws.models import create_model

    features = FeatureConfig.mfcc(args.n_mfcc) if args.n_mfcc else None
    model = create_model(args.model, features=features)
    profile = profile_model(model)
    if args.json:
        print(json.dumps({**asdict(profile), "size_bytes": profile.size_bytes(args.bits),
                          "bits": args.bits, "model": args.model}))
    else:
        print(f"{args.model}\n{format_profile(profile, args.bits)}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profile", help="parameters, MACs, size and activation memory "
                                                   "of a model or genotype")
    parser.add_argument("model", metavar="MODEL_OR_GENOTYPE",
                        help="a registered model name or a genotype .yaml file")
    parser.add_argument("--n_mfcc", type=int, default=0,
                        help="use N MFCC (Peter et al.'s features) instead of the model's own")
    parser.add_argument("--bits", type=int, default=8, help="weight bit width for size_bytes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=cmd_profile)
