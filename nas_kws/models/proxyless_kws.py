"""Peter, Roth & Pernkopf (2020)'s KWS backbone with every MBConv cell fixed.

They search MBConv cells on MFCC input: stem conv (5, 11) with time stride 2, twelve cells of
C = 72 * width_mult channels rounded to a multiple of 8 (the first strided), a 1x1 conv to
exactly 2C (their nets at x1.25: C 88, head 176), average pooling and a linear classifier.
The registered `proxyless_kws_w*` models fix every cell to one MBConv choice (k3 e3 unless
`kernel`/`expand` say otherwise) on 10 MFCC x 51 frames, and are built from a genotype, so they
are the same KWSNet a search derives."""
from __future__ import annotations

from typing import Any

from nas_kws.features import FeatureConfig
from nas_kws.models.genotype import KWSNet, build_from_genotype
from nas_kws.models.layers import make_divisible
from nas_kws.models.registry import register_model

PROXYLESS_CELLS = 12
PROXYLESS_WIDTH = 72
PROXYLESS_HEAD_MULT = 2        # the head's 1x1 conv has 2C channels at every width
PROXYLESS_FEATURES = FeatureConfig.mfcc(10)


def proxyless_genotype(features: FeatureConfig, num_classes: int = 12, width_mult: float = 1.0,
                       kernel: int = 3, expand: int = 3) -> dict[str, Any]:
    """Peter et al.'s backbone with every cell fixed to MBConv(kernel, expand), as a genotype."""
    width = make_divisible(PROXYLESS_WIDTH * width_mult)
    cell = {"op": "mbconv", "out_channels": width, "kernel": kernel, "expand": expand}
    return {
        "name": f"proxyless_kws_w{width_mult:g}_k{kernel}_e{expand}",
        "features": features.to_dict(),
        "num_classes": num_classes,
        "stem": {"out_channels": width, "kernel": [5, 11], "stride": [1, 2], "act": "relu6"},
        "blocks": [{**cell, "stride": 2}] + [{**cell, "stride": 1}] * (PROXYLESS_CELLS - 1),
        "head": {"type": "pool_linear", "channels": PROXYLESS_HEAD_MULT * width},
    }


def _proxyless_kws(width_mult: float, num_classes: int, features: FeatureConfig | None,
                   kernel: int, expand: int) -> KWSNet:
    return build_from_genotype(proxyless_genotype(features or PROXYLESS_FEATURES, num_classes,
                                                  width_mult, kernel, expand))


@register_model("proxyless_kws_w0.75", features=PROXYLESS_FEATURES)
def proxyless_kws_w0_75(num_classes: int = 12, features: FeatureConfig | None = None,
                        kernel: int = 3, expand: int = 3) -> KWSNet:
    """Peter et al.'s backbone at width x0.75: 56-channel cells, a 112-channel head."""
    return _proxyless_kws(0.75, num_classes, features, kernel, expand)


@register_model("proxyless_kws_w1", features=PROXYLESS_FEATURES)
def proxyless_kws_w1(num_classes: int = 12, features: FeatureConfig | None = None,
                     kernel: int = 3, expand: int = 3) -> KWSNet:
    """Peter et al.'s backbone at width x1: 72-channel cells, a 144-channel head."""
    return _proxyless_kws(1.0, num_classes, features, kernel, expand)


@register_model("proxyless_kws_w1.25", features=PROXYLESS_FEATURES)
def proxyless_kws_w1_25(num_classes: int = 12, features: FeatureConfig | None = None,
                        kernel: int = 3, expand: int = 3) -> KWSNet:
    """Peter et al.'s backbone at width x1.25: 88-channel cells, a 176-channel head."""
    return _proxyless_kws(1.25, num_classes, features, kernel, expand)
