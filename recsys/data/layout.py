"""Which MovieLens layout a folder holds and which release its files are (no file is parsed here).

`detect_format` names the layout (u.data, RecBole atomic, ratings.dat, ratings.csv, the shared ratings.parquet);
`source_files` lists what a reader will read (only regular files: a directory, FIFO or device named u.data is
refused before anything opens it); `identify_release` names the release from its files, not its folder's name;
`check_release` refuses `--dataset NAME` for a folder that holds another release's files.
"""
from __future__ import annotations

from pathlib import Path

from recsys.data.schema import DataValidationError


def detect_format(path: Path) -> str:
    """Name the MovieLens file layout found in a directory, or raise with what was expected."""
    path = Path(path)
    if not path.is_dir():
        raise DataValidationError(f"{path}: not a directory (pass the folder that holds the MovieLens files)")
    if (path / "u.data").exists():
        return "ml-100k"
    if list(path.glob("*.inter")):
        return "recbole-atomic"
    if (path / "ratings.parquet").exists():
        return "ml-1m-parquet"
    if (path / "ratings.dat").exists():
        return "dat"
    if (path / "ratings.csv").exists():
        return "csv"
    found = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))[:12]
    raise DataValidationError(
        f"{path}: no MovieLens ratings file found (expected u.data, *.inter, ratings.dat, ratings.csv or "
        f"ratings.parquet); the folder holds {found}"
    )


def source_files(path: Path) -> list[Path]:
    """The files a reader will read for the directory (what the cache fingerprint covers)."""
    path = Path(path)
    fmt = detect_format(path)
    names = {
        "ml-100k": ["u.data", "u.item", "u.user"],
        "ml-1m-parquet": ["ratings.parquet", "movies.dat", "users.dat"],
        "dat": ["ratings.dat", "movies.dat", "users.dat"],
        "csv": ["ratings.csv", "movies.csv"],
    }
    if fmt == "recbole-atomic":
        stem = sorted(path.glob("*.inter"))[0].stem
        files = [path / f"{stem}.{ext}" for ext in ("inter", "item", "user")]
    else:
        files = [path / n for n in names[fmt]]
    found = [f for f in files if f.exists() or f.is_symlink()]
    for f in found:
        if not f.is_file():  # a directory, FIFO, socket or device (/dev/zero) would hang or crash the reader
            what = "a directory" if f.is_dir() else "a broken link" if not f.exists() else \
                "not a regular file (a pipe, socket or device)"
            raise DataValidationError(f"{f}: {what}; a MovieLens file must be a regular file")
    return found


# the file layouts each release ships in (the shared ML-1M copy is a parquet; the embedded ML-100K RecBole's atomic)
RELEASE_FORMATS = {"ml-100k": ("ml-100k", "recbole-atomic"), "ml-1m": ("dat", "ml-1m-parquet"), "ml-10m": ("dat",),
                   "ml-20m": ("csv",), "ml-25m": ("csv",), "ml-latest": ("csv",), "ml-latest-small": ("csv",)}


def _folder_name(path: Path) -> str:
    name = Path(path).resolve().name.lower()
    return {"ml-10m100k": "ml-10m"}.get(name, name)


def identify_release(path: Path) -> str | None:
    """The release a folder's files are, from their layout (not the folder's name): u.data is ML-100K, ratings.dat
    with users.dat ML-1M, with tags.dat ML-10M; a CSV folder is named by its folder when that is a CSV
    release, else None (ML-20M, ML-25M and the latest releases share one layout; a bare ratings.dat could be either)."""
    path = Path(path)
    try:
        fmt = detect_format(path)
    except (DataValidationError, OSError):
        return None
    if fmt == "ml-100k":
        return "ml-100k"
    if fmt == "ml-1m-parquet":
        return "ml-1m"
    if fmt == "dat":
        users, tags = (path / "users.dat").exists(), (path / "tags.dat").exists()
        return "ml-1m" if users and not tags else "ml-10m" if tags and not users else None
    folder = _folder_name(path)
    if fmt == "recbole-atomic":
        stem = sorted(path.glob("*.inter"))[0].stem.lower()
        return stem if stem in RELEASE_FORMATS else None
    return folder if fmt in RELEASE_FORMATS.get(folder, ()) else None


def guess_name(path: Path) -> str:
    """A dataset name for a folder the caller names no release for: the release its files are, else the folder's
    name (ml-10M100K -> ml-10m)."""
    return identify_release(path) or _folder_name(path)


def check_release(name: str, path: Path) -> None:
    """Refuse `--dataset NAME --data-dir PATH` when the folder holds another release's files (a run recorded and
    shown under the wrong name)."""
    name = str(name).lower()
    if name not in RELEASE_FORMATS:
        return
    try:
        fmt = detect_format(path)
    except (DataValidationError, OSError):
        return  # the reader says what is missing
    found = identify_release(path)
    if fmt not in RELEASE_FORMATS[name] or (fmt == "dat" and found not in (None, name)):
        raise DataValidationError(
            f"{path}: --dataset {name}, but the folder holds {found or 'another release'}'s files ({fmt} layout); "
            f"pass --dataset {found or 'NAME'} (or leave it out), or the {name} folder")
