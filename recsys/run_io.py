"""Bounded, link-refusing reads and atomic writes of run files (recsys.runs' file layer).

Files in a runs folder are untrusted: reads are bounded by what each kind of file can need and only regular files
(never a link, FIFO or device) are read or hashed, so a FIFO named run.json cannot hang a page, /dev/zero cannot be
hashed forever and a sparse 1.5 GiB results file is refused at its size. Writes go to a temporary file, are synced,
then renamed over the target: a reader never sees half a file.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np


class RunError(Exception):
    """A run directory is missing, corrupted, tampered with, or belongs to something else; shown as is."""


class IdsWithheld(RunError):
    """A licence-safe run (recsys.redistribution): its raw ids are not in the folder, only their digests."""


MAX_RUN_JSON = 16 << 20
MAX_HISTORY = 8 << 20   # a line per epoch: 1,000 epochs are ~300 KB
MAX_ARTEFACT = 8 << 30       # resume state (weights and two Adam moments of the largest model)
# each artefact bounded by what its kind can plausibly need (ML-25M's: weights ~50 MB, ids ~2 MB, results ~10 MB)
MAX_BYTES = {"model.safetensors": 4 << 30, "id_maps.npz": 64 << 20, "test_results.parquet": 512 << 20,
             "history.jsonl": MAX_HISTORY, "run.json": MAX_RUN_JSON}
MAX_ID_MAPS_UNPACKED = 256 << 20  # what id_maps.npz may decompress to (a zip bomb would be gigabytes)


def _open_regular(path: Path, max_bytes: int) -> tuple[int, int]:
    """(fd, size) of a regular file opened without following a final symlink and without blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunError(f"{path}: a symbolic link; a run folder must hold plain files") from None
        raise RunError(f"{path}: cannot open ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise RunError(f"{path}: not a regular file (a FIFO, device or folder); refused")
    if st.st_size > max_bytes:
        os.close(fd)
        raise RunError(f"{path}: {st.st_size:,} bytes, more than the {max_bytes:,} a run file may hold; refused")
    return fd, st.st_size


def read_bytes(path: Path, max_bytes: int = MAX_ARTEFACT) -> bytes:
    """A run file's bytes, bounded and from a regular file only (see _open_regular)."""
    fd, size = _open_regular(path, max_bytes)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RunError(f"{path}: grew beyond {max_bytes:,} bytes while being read; refused")
    return data


def max_bytes(path: Path) -> int:
    """The size bound of a run file, by its name."""
    return MAX_BYTES.get(Path(path).name, MAX_ARTEFACT)


def sha256_file(path: Path) -> str:
    fd, _ = _open_regular(path, max_bytes(path))
    with os.fdopen(fd, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _refuse_links(path: Path) -> None:
    """Writes never go through a symlink: neither the file nor the folder that holds it may be one."""
    for p in (path, path.parent):
        if p.is_symlink():
            raise RunError(f"{p}: a symbolic link; refusing to write through it")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file. The rename
    replaces a link at `path` instead of following it; the file is readable by all (0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _refuse_links(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not exc.filename:  # a write() error (disk full) names no file: name it
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default).encode()


def content_digest(info: dict) -> str:
    """sha256 of run.json's content without its own digest: an edit by hand no longer matches."""
    return hashlib.sha256(canonical_json({k: v for k, v in info.items() if k != "digest"})).hexdigest()


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
