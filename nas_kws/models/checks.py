"""Argument checks for genotype and search-space entries: each returns the normalised value or
raises a ValueError naming `where` (the key or list position), so a bad file points at its line.
"""
from __future__ import annotations

from typing import Any, Callable

from nas_kws.config import check_keys

REQUIRED = object()
Check = Callable[[Any, str], Any]


def positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: expected an integer >= 1, got {value!r}")
    return value


def odd_kernel(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value % 2 == 0:
        raise ValueError(f"{where}: expected an odd kernel size (1, 3, 5, 7, ...), got {value!r}")
    return value


def _is_stride(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in (1, 2)


def stride(value: Any, where: str) -> int | list[int]:
    """1 or 2, or a [frequency, time] pair of them."""
    if _is_stride(value):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_stride, value)):
        return list(value)
    raise ValueError(f"{where}: expected a stride of 1 or 2, or a [frequency, time] pair of them, "
                     f"got {value!r}")


def kernel_pair(value: Any, where: str) -> int | list[int]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return [odd_kernel(v, where) for v in value]
    return odd_kernel(value, where)


def freq_stride(value: Any, where: str) -> int:
    if not _is_stride(value):
        raise ValueError(f"{where}: expected a frequency stride of 1 or 2 (BC-ResNet blocks never "
                         f"stride in time), got {value!r}")
    return value


def ssn_groups(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}: expected SubSpectralNorm groups >= 2, or 0/1 for plain "
                         f"BatchNorm, got {value!r}")
    return value


def dropout(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{where}: expected a dropout probability in [0, 1), got {value!r}")
    return float(value)


def width(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{where}: expected a width multiplier > 0, got {value!r}")
    return float(value)


def one_of(choices: list[str]) -> Check:
    """A check that accepts exactly the given names."""
    def check(value: Any, where: str) -> str:
        if value not in choices:
            raise ValueError(f"{where}: expected one of {choices}, got {value!r}")
        return value
    return check


def check_args(table: dict[str, tuple[Check, Any]], given: dict[str, Any],
               where: str) -> dict[str, Any]:
    """`given` checked against `table` (key -> (check, default or REQUIRED)), defaults filled."""
    check_keys(given, table, where)
    out = {}
    for key, (check, default) in table.items():
        if key in given:
            out[key] = check(given[key], f"{where}.{key}")
        elif default is REQUIRED:
            raise ValueError(f"{where}: missing required key {key!r}")
        else:
            out[key] = default
    return out
