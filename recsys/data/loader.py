"""One entry point for datasets: resolve a name or folder, read and validate once, then serve a parquet cache.

The cache is keyed by a fingerprint of the source files' contents (and the reader version), so editing a ratings
file rebuilds it and nothing stale is ever served. Cache entries are written to a temporary folder and renamed
into place, so a killed process never leaves a half-written entry.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from recsys.data.readers import guess_name, read_movielens, source_files
from recsys.data.schema import DataUnavailableError, DataValidationError, MovieLensData

READER_VERSION = "1"  # bump when a reader's output changes, so old cache entries are not reused
EMBEDDED = "ml-100k"
KNOWN_NAMES = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small", "ml-latest")


def embedded_ml100k_dir() -> Path:
    """The ML-100K atomic files shipped inside the recbole==1.2.1 wheel (found, never imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(
            "the embedded ML-100K comes from the recbole==1.2.1 wheel, which is not installed: run `make app` or "
            "`pip install --no-deps recbole==1.2.1`, or pass --data-dir with an ML-100K folder")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        raise DataUnavailableError(f"{path}: the recbole wheel has no ml-100k example data")
    return path


def default_cache_dir() -> Path:
    return Path(os.environ.get("RECSYS_CACHE_DIR", Path.home() / ".cache" / "ss4rec-workbench" / "processed"))


def fingerprint(files: list[Path]) -> str:
    """sha256 over the reader version and each source file's name and bytes."""
    h = hashlib.sha256(f"reader-v{READER_VERSION}".encode())
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 23):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def resolve_source(name: str | None, data_dir: str | Path | None, download: bool = True) -> tuple[str, Path]:
    """Turn (name, data_dir) into (dataset name, folder of raw files), downloading a release if allowed."""
    if data_dir is not None:
        path = Path(data_dir).expanduser().resolve()
        if not path.exists():
            raise DataUnavailableError(f"{path}: data folder does not exist")
        return (name or guess_name(path)), path
    name = (name or EMBEDDED).lower()
    if name == EMBEDDED:
        return name, embedded_ml100k_dir()
    if name not in KNOWN_NAMES:
        raise DataUnavailableError(f"unknown dataset {name!r}; known: {', '.join(KNOWN_NAMES)} "
                                   f"(or pass --data-dir with a MovieLens folder)")
    from recsys.data import download as dl

    local = dl.default_data_root() / name
    if dl.is_complete(local, dl.get_release(name)):
        return name, local
    if not download:
        raise DataUnavailableError(f"{name} is not in {local}; pass --data-dir PATH or allow the download")
    return name, dl.download_release(name)


def _write_cache(entry: Path, data: MovieLensData) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    try:
        data.interactions.to_parquet(tmp / "interactions.parquet", index=False)
        data.items.to_parquet(tmp / "items.parquet", index=False)
        if data.users is not None:
            data.users.astype({c: str for c in data.users.columns if data.users[c].dtype == object}).to_parquet(
                tmp / "users.parquet", index=False)
        meta = {"name": data.name, "source": data.source, "fingerprint": data.fingerprint,
                "rating_scale": list(data.rating_scale), "notes": data.notes, "reader_version": READER_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process won the race and wrote the same entry; theirs is as good as ours
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(entry: Path) -> MovieLensData | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        users = pd.read_parquet(entry / "users.parquet") if (entry / "users.parquet").exists() else None
        return MovieLensData(meta["name"], meta["source"], pd.read_parquet(entry / "interactions.parquet"),
                             pd.read_parquet(entry / "items.parquet"), users, meta["fingerprint"],
                             tuple(meta["rating_scale"]), meta["notes"])
    except Exception:  # an unreadable cache entry is rebuilt from the source, never trusted
        shutil.rmtree(entry, ignore_errors=True)
        return None


def load_dataset(name: str | None = None, data_dir: str | Path | None = None, cache: bool = True,
                 cache_dir: str | Path | None = None, download: bool = True) -> MovieLensData:
    """Load a MovieLens release by name (embedded ml-100k by default) or folder, validated and cached."""
    name, path = resolve_source(name, data_dir, download)
    files = source_files(path)
    fp = fingerprint(files)
    entry = Path(cache_dir or default_cache_dir()) / f"{name}-{fp[:20]}"
    if cache and (entry / "meta.json").exists():
        data = _read_cache(entry)
        if data is not None:
            return data
    data = read_movielens(path, name)
    data.fingerprint = fp
    if cache:
        try:
            _write_cache(entry, data)
        except OSError:  # a read-only or full disk costs speed, not correctness
            pass
    return data


__all__ = ["load_dataset", "embedded_ml100k_dir", "fingerprint", "DataValidationError", "DataUnavailableError"]
