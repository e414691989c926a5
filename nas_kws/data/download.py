"""Resumable, verified downloads and safe archive extraction.

A dropped connection keeps `dest.part` so the next call (or the next retry) continues with an
HTTP Range request; a file that fails its size or SHA-256 check is deleted, never kept.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from tqdm import tqdm

from nas_kws.fileio import partial_dir, write_text

CHUNK = 1 << 20
TIMEOUT = 60          # seconds without data before a connection counts as dropped
RETRIES = 3           # resumed attempts within one call after a dropped connection
EXTRACTED_MARKER = ".nas_kws_extracted"


def _open(url: str, offset: int) -> tuple[BinaryIO, int | None, bool]:
    """Stream `url` from byte `offset`: (stream, total size if known, whether it resumed)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = urllib.request.url2pathname(parsed.path)
        stream = open(path, "rb")
        stream.seek(offset)
        return stream, os.path.getsize(path), True
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        if err.code == 416:   # the partial file already holds every byte
            return io.BytesIO(), offset, True
        raise
    if response.status == 206:
        match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
        return response, int(match.group(1)) if match else None, True
    length = response.headers.get("Content-Length")
    return response, int(length) if length is not None else None, False


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, part: Path, expected: int | None, progress: bool) -> int | None:
    """Append the rest of `url` to `part`; return the total size the source announced."""
    offset = part.stat().st_size if part.exists() else 0
    if expected is not None and offset == expected:
        return expected
    stream, total, resumed = _open(url, offset)
    if not resumed:
        offset = 0
    try:
        with open(part, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name[:-len(".part")], disable=not progress, leave=False) as bar:
            for block in iter(lambda: stream.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))
    finally:
        stream.close()
    return total


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
             progress: bool = True) -> Path:
    """Download `url` to `dest` (resuming `dest.part`), then check its size and SHA-256."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        _verify(dest, sha256, size, None)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    announced = size
    for _ in range(RETRIES + 1):
        try:
            announced = _fetch(url, part, size, progress) or announced
        except urllib.error.HTTPError as err:
            raise ConnectionError(f"{url}: HTTP {err.code} {err.reason}") from err
        except FileNotFoundError:   # a missing file:// source: retrying cannot help
            raise
        except (OSError, http.client.HTTPException) as err:   # reset, timed out: resume
            error = err
        else:
            got = part.stat().st_size
            if announced is None or got >= announced:
                break
            error = EOFError(f"connection closed at byte {got} of {announced}")
    else:
        got = part.stat().st_size if part.exists() else 0
        raise ConnectionError(f"{url}: download failed after {got} bytes ({error}); "
                              f"run again to resume from {part}")
    _verify(part, sha256, size, announced)
    os.replace(part, dest)
    return dest


def _verify(path: Path, sha256: str | None, size: int | None, announced: int | None) -> None:
    """Delete `path` and raise if its size or checksum is not the expected one."""
    expected = size if size is not None else announced
    got = path.stat().st_size
    problem = None
    if expected is not None and got != expected:
        problem = f"size mismatch: expected {expected} bytes, got {got}"
    elif sha256 is not None:
        digest = sha256_of(path)
        if digest != sha256.lower():
            problem = f"SHA-256 mismatch: expected {sha256.lower()}, got {digest}"
    if problem:
        path.unlink()
        raise ValueError(f"{path}: {problem} (file removed; run again to re-download)")


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse members that would land outside the extraction folder."""
    name = member.name
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise ValueError(f"{archive}: unsafe path in archive: {name!r}")
    if member.issym() or member.islnk():
        target = Path(name).parent / member.linkname if member.issym() else Path(member.linkname)
        if os.path.isabs(member.linkname) or ".." in Path(os.path.normpath(target)).parts:
            raise ValueError(f"{archive}: unsafe link in archive: {name!r} -> {member.linkname!r}")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ValueError(f"{archive}: unsupported member type in archive: {name!r}")


def extract(archive: Path, dest_dir: Path) -> Path:
    """Extract a .tar.gz into `dest_dir` via a temp folder and a rename; a marker file makes a
    second call a no-op."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    if (dest_dir / EXTRACTED_MARKER).exists():
        return dest_dir
    if dest_dir.exists():
        raise FileExistsError(f"{dest_dir} exists but was not extracted by nas-kws "
                              f"(no {EXTRACTED_MARKER}): remove it or use it as it is")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_dir(dest_dir)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:   # one pass over the stream: check, then extract
                _check_member(member, archive)
                tar.extract(member, tmp, filter="data")
        write_text(tmp / EXTRACTED_MARKER, f"{archive.name}\n")
        os.rename(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest_dir
