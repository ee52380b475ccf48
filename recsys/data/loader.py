"""One entry point for datasets: resolve a name or folder, read and validate once, then serve a parquet cache.

The cache is keyed by a fingerprint of the source files' contents (and the reader version), so editing a ratings
file rebuilds it and nothing stale is ever served. Cache entries are written to a temporary folder and renamed
into place, so a killed process never leaves a half-written entry; each entry's meta.json records the size,
sha256 and row count of its parquet files, and an entry that does not match them is rebuilt from the source,
never trusted. A dataset's `source` is always the folder this call was asked for (recsys.data.integrity.
source_label: no absolute machine path), never the one that first filled a shared cache entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from recsys.data.integrity import embedded_dir, source_label
from recsys.data.readers import check_release, guess_name, read_movielens, source_files
from recsys.data.schema import DataUnavailableError, DataValidationError, MovieLensData

# The fingerprint identifies the data (run.json records it; pages match runs to data by it): bump its version only
# when the canonical tables a reader produces change. READER_VERSION covers the checks too: a cache entry written
# under another version is rebuilt (so data that newer checks refuse is never served from an old entry).
FINGERPRINT_VERSION = "1"
READER_VERSION = "3"  # 3: encodings detected (UTF-8 u.item, latin-1 movies.csv), timestamp units checked
EMBEDDED = "ml-100k"
KNOWN_NAMES = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small", "ml-latest")


def embedded_ml100k_dir() -> Path:
    """The ML-100K atomic files shipped inside the recbole==1.2.1 wheel (found, never imported)."""
    path = embedded_dir()
    if path is None:
        raise DataUnavailableError(
            "the embedded ML-100K comes from the recbole==1.2.1 wheel, which is not installed: run `make app` or "
            "`pip install --no-deps recbole==1.2.1`, or pass --data-dir with an ML-100K folder")
    if not (path / "ml-100k.inter").exists():
        raise DataUnavailableError(f"{path}: the recbole wheel has no ml-100k example data")
    return path


def default_cache_dir() -> Path:
    return Path(os.environ.get("RECSYS_CACHE_DIR", Path.home() / ".cache" / "ss4rec-workbench" / "processed"))


def fingerprint(files: list[Path]) -> str:
    """sha256 over the fingerprint version and each source file's name and bytes."""
    h = hashlib.sha256(f"reader-v{FINGERPRINT_VERSION}".encode())
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
        if name:
            check_release(name, path)
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


def source_stamp(name: str | None, data_dir: str | Path | None) -> tuple:
    """A cheap stamp of a dataset's source files (name, folder, and each file's size, mtime and ctime in ns):
    it changes whenever a file is edited, so a cache keyed by it re-reads an edited file. Never downloads."""
    name, path = resolve_source(name, data_dir, download=False)
    stamps = []
    for f in source_files(path):
        st = f.stat()
        stamps.append((f.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return name, str(path), tuple(stamps)


def _file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _write_cache(entry: Path, data: MovieLensData) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    try:
        tables = {"interactions": data.interactions, "items": data.items}
        if data.users is not None:
            tables["users"] = data.users.astype({c: str for c in data.users.columns if data.users[c].dtype == object})
        files = {}
        for table, frame in tables.items():
            frame.to_parquet(tmp / f"{table}.parquet", index=False)
            f = tmp / f"{table}.parquet"
            files[f.name] = {"rows": len(frame), "bytes": f.stat().st_size, "sha256": _file_digest(f)}
        meta = {"name": data.name, "fingerprint": data.fingerprint, "files": files,
                "rating_scale": list(data.rating_scale), "notes": data.notes, "reader_version": READER_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process won the race and wrote the same entry; theirs is as good as ours
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _StaleEntry(Exception):
    pass


def _read_cache(entry: Path, name: str, fp: str, source: str) -> MovieLensData | None:
    """The cached dataset if every recorded fact still holds (name, fingerprint, reader version, and each parquet
    file's size, sha256 and row count); otherwise the entry is removed and None returned (rebuilt from source)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if (meta.get("name"), meta.get("fingerprint"), meta.get("reader_version")) != (name, fp, READER_VERSION):
            raise _StaleEntry("meta.json does not describe this source")
        files = meta["files"]
        present = {p.name for p in entry.glob("*.parquet")}
        if present != set(files) or not {"interactions.parquet", "items.parquet"} <= present:
            raise _StaleEntry(f"parquet files {sorted(present)} differ from those recorded {sorted(files)}")
        frames = {}
        for fname, rec in files.items():
            f = entry / fname
            if f.stat().st_size != rec["bytes"] or _file_digest(f) != rec["sha256"]:
                raise _StaleEntry(f"{fname} differs from the digest recorded when it was written")
            frames[fname.removesuffix(".parquet")] = frame = pd.read_parquet(f)
            if len(frame) != rec["rows"]:
                raise _StaleEntry(f"{fname} has {len(frame)} rows, {rec['rows']} recorded")
        return MovieLensData(name, source, frames["interactions"], frames["items"], frames.get("users"), fp,
                             tuple(meta["rating_scale"]), meta["notes"])
    except Exception:  # an unreadable or mismatching cache entry is rebuilt from the source, never trusted
        shutil.rmtree(entry, ignore_errors=True)
        return None


def load_dataset(name: str | None = None, data_dir: str | Path | None = None, cache: bool = True,
                 cache_dir: str | Path | None = None, download: bool = True) -> MovieLensData:
    """Load a MovieLens release by name (embedded ml-100k by default) or folder, validated and cached."""
    given = data_dir
    name, path = resolve_source(name, data_dir, download)
    source = source_label(path, given)  # the folder asked for, as the user gave it (no absolute machine path)
    files = source_files(path)
    fp = fingerprint(files)
    # no value read from a run or typed by a user becomes a path component unchecked (a name with ../ would make
    # the cache write outside its folder): the entry is named from a sanitised copy
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".")[:64] or "data"
    entry = Path(cache_dir or default_cache_dir()) / f"{safe}-{fp[:20]}"
    if cache and (entry / "meta.json").exists():
        data = _read_cache(entry, name, fp, source)
        if data is not None:
            return data
    data = read_movielens(path, name)
    data.fingerprint = fp
    data.source = source
    if cache:
        try:
            _write_cache(entry, data)
        except OSError:  # a read-only or full disk costs speed, not correctness
            pass
    return data


__all__ = ["load_dataset", "embedded_ml100k_dir", "fingerprint", "source_stamp", "DataValidationError",
           "DataUnavailableError"]
