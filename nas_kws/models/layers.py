"""Tiny layer helpers shared by the model families, the genotype builder and the search spaces.
A leaf of models/, so every one of them can import it without an import circle."""
from __future__ import annotations


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet channel rounding: the nearest multiple of `divisor`, never 10% below `value`
    (72 * 0.75 / 1 / 1.25 -> 56 / 72 / 88, as in Peter et al.)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def as_pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """A (frequency, time) pair from an int or a two-element list."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output length of a conv with 'same' padding kernel // 2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1
