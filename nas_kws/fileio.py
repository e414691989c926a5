"""File reading and atomic writing, and the cache folder: nothing already written is lost when a
job dies, and a missing or malformed file is an error naming its path."""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

import yaml


def cache_dir() -> Path:
    """Where derived data (synthetic set, waveform stores) lives; `NAS_KWS_CACHE` overrides."""
    root = os.environ.get("NAS_KWS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nas-kws")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def umask_mode(mode: int = 0o666) -> int:
    """`mode` less the process umask: what open() and mkdir() give. mkstemp and mkdtemp make
    0600 / 0700 whatever the umask, so a shared cache or run would be unreadable to others."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def partial_dir(dest: Path) -> Path:
    """A fresh hidden `.<name>.*.partial` folder next to `dest` (mode as umask allows), to fill
    and then rename to `dest`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    os.chmod(tmp, umask_mode(0o777))
    return tmp


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None],
                 keep: str | os.PathLike | None = None) -> Path:
    """Call `write(tmp)` on a temp file next to `path`, then rename it over `path`; with `keep`,
    the file it replaces is first renamed to `keep` (a fallback should the new one go bad)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, umask_mode())
        if keep is not None and path.exists():
            os.replace(path, keep)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"{path}: disk full (no space left on the device); "
                                        "the file was not changed") from None
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: str | os.PathLike, columns: list[str], rows: Iterable[dict[str, Any]]) -> Path:
    """A header of `columns`, then one line per row (None is written as an empty cell)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line (PyYAML's own message spans several, quoting the text)."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(err).split())
    context = getattr(err, "context", None)
    return (f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
            + (f", {context}" if context else ""))


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load`, its errors as one-line ValueErrors."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(yaml_problem(err)) from None


def _read(path: str | os.PathLike, what: str, parse: Callable[[str], Any],
          error: type[Exception], fmt: str) -> Any:
    """`parse` of the text of `path`; a missing `what` or an `error` while parsing is an error
    naming the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return parse(path.read_text())
    except error as err:
        raise ValueError(f"{path}: not valid {fmt} ({err})") from None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The parsed JSON of `path`; a missing `what` or invalid JSON is an error naming the path."""
    return _read(path, what, json.loads, json.JSONDecodeError, "JSON")


def read_yaml(path: str | os.PathLike, what: str = "file") -> Any:
    """The parsed YAML of `path`; a missing `what` or invalid YAML is an error naming the path."""
    return _read(path, what, parse_yaml, ValueError, "YAML")
