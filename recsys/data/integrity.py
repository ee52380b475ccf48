"""Whole-or-refused checks on MovieLens source files, each release's documented facts, and provenance labels.

A file is read whole or refused: an empty file, a file that ends mid-line (every MovieLens file ends with a
newline; a copy or download that stopped early does not), a last line whose timestamp is shorter than every other
one, and a timestamp outside the release's documented span are refused with the file and line.

Release facts (span, number of ratings) are applied only where the folder *is* the release: it holds a file
GroupLens ships with it (README, README.txt, README.html, ML-100K's u.info) or it is the embedded copy. A folder
that merely has a release's layout (your own u.data or ratings.csv) gets the format checks only.

Provenance: `source_label` is what a dataset records as its `source` (and every run.json with it). It never holds
an absolute path of the machine that read the data:
  * the embedded copy: "embedded ml-100k (recbole==1.2.1 wheel: dataset_example/ml-100k)";
  * a folder given as a relative path (or ~/...): as given, normalised ("../shared/movielens/ml-1m");
  * an absolute folder under the user's home: "~/" + the rest ("~/.cache/ss4rec-workbench/movielens/ml-25m");
  * an absolute folder under the parent of the working directory: relative to the working directory
    ("../shared/movielens/ml-1m" when run from the repository root), unless that is "." or "..";
  * any other absolute folder (and "." or ".."): its last two components after "…/" ("…/data/ml-1m").
Error messages keep the full path: they are read by the person at that machine, not recorded.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.data.schema import DataValidationError

INT64_MAX = 2**63 - 1
LOOSE_FIRST_DAY = "1995-01-01"  # MovieLens's first ratings (ML-20M/25M READMEs: January 09, 1995)
MIN_ROWS_FOR_DIGIT_CHECK = 100  # the last-line digit check needs enough lines for "every other" to mean something
_DAY = 86_400
LAST_SECOND = 4_102_444_800  # 2100-01-01 UTC: any MovieLens timestamp in seconds is earlier


@dataclass(frozen=True)
class ReleaseFacts:
    """What GroupLens documents about one release."""

    name: str
    formats: tuple[str, ...]  # readers.detect_format names the release comes in
    markers: tuple[str, ...]  # files GroupLens ships in the release folder
    ratings: int | None  # documented number of ratings (None: rebuilt release, read from its README.txt)
    first_day: str | None  # documented span, inclusive, UTC days (None: not documented)
    last_day: str | None
    span_doc: str


RELEASE_FACTS: dict[str, ReleaseFacts] = {f.name: f for f in (
    ReleaseFacts("ml-100k", ("ml-100k", "recbole-atomic"), ("u.info", "README"), 100_000, "1997-09-19", "1998-04-22",
                 "README: 'the seven-month period from September 19th, 1997 through April 22nd, 1998'"),
    ReleaseFacts("ml-1m", ("dat", "ml-1m-parquet"), ("README",), 1_000_209, "2000-01-01", "2003-12-31",
                 "README: users 'who joined MovieLens in 2000'; released February 2003"),
    ReleaseFacts("ml-10m", ("dat",), ("README.html",), 10_000_054, LOOSE_FIRST_DAY, "2009-01-31",
                 "README.html gives only the release month, 1/2009; from MovieLens's first ratings in 1995"),
    ReleaseFacts("ml-20m", ("csv",), ("README.txt",), 20_000_263, "1995-01-09", "2015-03-31",
                 "README.txt: 'between January 09, 1995 and March 31, 2015'"),
    ReleaseFacts("ml-25m", ("csv",), ("README.txt",), 25_000_095, "1995-01-09", "2019-11-21",
                 "README.txt: 'between January 09, 1995 and November 21, 2019'"),
    ReleaseFacts("ml-latest-small", ("csv",), ("README.txt",), None, None, None, "its README.txt"),
    ReleaseFacts("ml-latest", ("csv",), ("README.txt",), None, None, None, "its README.txt"),
)}
WHOLE_STAR_RELEASES = ("ml-100k", "ml-1m")  # ML-100K README: ratings (1-5); ML-1M README: whole-star ratings only


@dataclass(frozen=True)
class Expectations:
    """The facts a folder that is a release is held to: its span (epoch seconds, one day of slack each side for
    time zones) and, where documented, its number of ratings."""

    release: str
    first: int
    last: int
    span_text: str
    ratings: int | None = None
    ratings_doc: str = ""


def _epoch(day: str) -> int:
    return int(_dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=_dt.UTC).timestamp())


def _span(first_day: str, last_day: str) -> tuple[int, int]:
    return _epoch(first_day) - _DAY, _epoch(last_day) + 2 * _DAY - 1  # the last day whole, plus one day of slack


def _readme_facts(path: Path) -> tuple[int | None, tuple[str, str] | None]:
    """'It contains N ratings' and 'between <Month DD, YYYY> and <Month DD, YYYY>' from a rebuilt release's README."""
    try:
        text = (path / "README.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    count = re.search(r"contains ([\d,]+) ratings", text)
    span = re.search(r"between (\w+ \d{1,2}, \d{4}) and (\w+ \d{1,2}, \d{4})", text)
    days = None
    if span:
        try:
            first, last = (_dt.datetime.strptime(s, "%B %d, %Y").strftime("%Y-%m-%d") for s in span.groups())
            days = (first, last)
        except ValueError:
            days = None
    return (int(count.group(1).replace(",", "")) if count else None), days


def _uinfo_ratings(path: Path) -> int | None:
    try:
        m = re.search(r"(\d+)\s+ratings", (path / "u.info").read_text(encoding="latin-1"))
    except OSError:
        return None
    return int(m.group(1)) if m else None


def release_expectations(name: str, fmt: str, path: Path) -> Expectations | None:
    """The documented facts to hold `path` to, or None when the folder is not recognisably that release."""
    facts = RELEASE_FACTS.get(name)
    path = Path(path)
    if facts is None or fmt not in facts.formats:
        return None
    if not (any((path / m).exists() for m in facts.markers) or is_embedded(path)):
        return None
    ratings, ratings_doc = facts.ratings, f"the {name} release (as GroupLens documents it)"
    days = (facts.first_day, facts.last_day) if facts.first_day and facts.last_day else None
    span_doc = facts.span_doc
    if facts.ratings is None:
        ratings, days = _readme_facts(path)
        ratings_doc = f"{path / 'README.txt'}"
        if days is None:
            days = (LOOSE_FIRST_DAY, _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"))
            span_doc = "not documented: a sanity span from MovieLens's first ratings to today"
    if name == "ml-100k" and fmt == "ml-100k" and (info := _uinfo_ratings(path)) is not None:
        ratings, ratings_doc = info, f"{path / 'u.info'}"
    assert days is not None, name  # RELEASE_FACTS: a release with a documented count documents its span too
    first, last = _span(*days)
    return Expectations(name, first, last, f"{days[0]} .. {days[1]} ({span_doc})", ratings, ratings_doc)


# --------------------------------------------------------------------------------------------- file checks
def count_lines(path: Path) -> int:
    """Lines in a file, a last line without a newline included (streamed: fine for a 700 MB ratings.csv)."""
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 23):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


CLIP = 120  # characters of a file's content quoted in a message (a 30 MB line is not a message)

# what a file that is not text starts with
_MAGIC = ((b"\x1f\x8b", "a gzip archive"), (b"PK\x03\x04", "a zip archive"), (b"BZh", "a bzip2 archive"),
          (b"\xfd7zXZ\x00", "an xz archive"), (b"PAR1", "a parquet file"), (b"\x7fELF", "a program"),
          (b"SQLite format 3", "an SQLite database"))


def clip(value, limit: int = CLIP) -> str:
    """repr(value), cut to `limit` characters with the full length said: quoting a line never floods a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def read_text(path: Path, expected: str, notes: list | None = None) -> str:
    """A text file in the encoding its release documents, else the one it is in, said in `notes`: GroupLens ships
    u.item, movies.dat and users.dat as latin-1 and movies.csv as UTF-8; a copy re-saved in the other encoding
    would otherwise be read silently wrong ("MisÃ©rables") or crash."""
    raw = Path(path).read_bytes()
    if expected.lower().replace("_", "-") in ("latin-1", "iso-8859-1"):
        if raw.isascii():
            return raw.decode("latin-1")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")
        if notes is not None:
            notes.append(f"{Path(path).name}: read as UTF-8 (the release ships it as latin-1, but its bytes are "
                         f"valid UTF-8, so it was re-saved)")
        return text
    try:
        return raw.decode(expected)
    except UnicodeDecodeError as exc:
        if notes is not None:
            notes.append(f"{Path(path).name}: read as latin-1 (the release ships it as {expected}, but byte "
                         f"{exc.start} is not {expected})")
        return raw.decode("latin-1")


def check_timestamp_unit(ts, where) -> None:
    """Refuse timestamps that are not seconds since 1970: MovieLens records seconds; a value past 2100 is a file
    in milliseconds (or micro-, nanoseconds), which would otherwise train on dates thousands of years ahead."""
    vals = np.asarray(ts.to_numpy(dtype="float64", na_value=np.nan) if hasattr(ts, "to_numpy") else ts, float)
    with np.errstate(invalid="ignore"):
        bad = vals > LAST_SECOND
    if not bad.any():
        return
    i = int(np.argmax(bad))
    v = vals[i]
    unit = next((name for name, f in (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9))
                 if v / f <= LAST_SECOND), None)
    guess = ""
    if unit:
        day = _dt.datetime.fromtimestamp(v / {"milliseconds": 1e3, "microseconds": 1e6, "nanoseconds": 1e9}[unit],
                                         _dt.UTC).strftime("%Y-%m-%d")
        guess = f"; it looks like {unit} ({day} if so): convert the column to seconds"
    raise DataValidationError(
        f"{where(i)}: timestamp {int(v)} is after 2100-01-01 in seconds since 1970 (MovieLens records seconds)"
        f"{guess}; {int(bad.sum()):,} ratings in all")


def check_text_file(path: Path, needed_for: str = "") -> None:
    """Refuse a missing, empty (0-byte), binary (an archive not unpacked) or cut (ends mid-line) text file,
    naming the file and its last line."""
    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"{path}: file missing{needed_for}")
    if path.stat().st_size == 0:
        raise DataValidationError(f"{path}: the file is empty (0 bytes){needed_for}")
    with open(path, "rb") as fh:
        head = fh.read(16)
    kind = next((what for magic, what in _MAGIC if head.startswith(magic)), None)
    if kind is None and b"\x00" in head:
        kind = "binary data"
    if kind:
        raise DataValidationError(f"{path}: {kind}, not a text file{needed_for}; unpack or convert it first")
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
    if last != b"\n":
        n = count_lines(path)
        raise DataValidationError(
            f"{path}:{n}: the file ends mid-line (no final newline; every MovieLens file ends with one): it looks "
            f"cut short by an interrupted copy or download, so line {n} may be incomplete. Copy the file again "
            f"(if you wrote it yourself and line {n} is complete, end it with a newline).")


def check_last_timestamp(ts: np.ndarray, where_last: str) -> None:
    """Refuse a last line whose timestamp has fewer digits than every other timestamp in the file (a cut line
    that was then given a newline)."""
    if len(ts) < MIN_ROWS_FOR_DIGIT_CHECK:
        return
    lowest, last = int(ts[:-1].min()), int(ts[-1])
    if lowest <= 0 or last < 0 or len(str(last)) >= len(str(lowest)):
        return
    raise DataValidationError(
        f"{where_last}: timestamp {last} has {len(str(last))} digits, fewer than every other timestamp in the "
        f"file (all have at least {len(str(lowest))}): the last line looks cut. Copy the file again.")


def check_span(ts, expect: Expectations, where) -> None:
    """Refuse a timestamp outside the release's documented span (ts may hold nulls: those are skipped)."""
    vals = np.asarray(ts.to_numpy(dtype="float64", na_value=np.nan) if hasattr(ts, "to_numpy") else ts, float)
    with np.errstate(invalid="ignore"):
        bad = (vals < expect.first) | (vals > expect.last)
    if bad.any():
        i = int(np.argmax(bad))
        when = _dt.datetime.fromtimestamp(int(vals[i]), _dt.UTC).strftime("%Y-%m-%d")
        raise DataValidationError(
            f"{where(i)}: timestamp {int(vals[i])} ({when}) is outside {expect.release}'s span {expect.span_text}; "
            f"{int(bad.sum()):,} ratings in all: the line is damaged (a cut or edited file) or this folder is not "
            f"the {expect.release} release")


def check_count(n: int, expect: Expectations, path: Path) -> None:
    if expect.ratings is not None and n != expect.ratings:
        raise DataValidationError(
            f"{path}: {n:,} ratings, but {expect.ratings_doc} says {expect.ratings:,}: the file is incomplete (cut at "
            f"a line end) or was edited. Copy the release again; to use a trimmed copy on purpose, keep it in a "
            f"folder without the release's {' / '.join(RELEASE_FACTS[expect.release].markers)}.")


def check_whole_stars(r: np.ndarray, release: str, where) -> None:
    frac = np.isfinite(r) & (r != np.round(r))
    if frac.any():
        i = int(np.argmax(frac))
        raise DataValidationError(
            f"{where(i)}: rating {r[i]:g} is not a whole star: {release} ratings are whole numbers 1..5 "
            f"({int(frac.sum()):,} fractional in all)")


# --------------------------------------------------------------------------------------------- provenance
def embedded_dir() -> Path | None:
    """Where the recbole==1.2.1 wheel keeps its ML-100K atomic files (found, never imported); None without it."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"


def is_embedded(path: Path | str) -> bool:
    emb = embedded_dir()
    try:
        return emb is not None and Path(path).resolve() == emb.resolve()
    except OSError:
        return False


def embedded_label() -> str:
    try:
        version = importlib.metadata.version("recbole")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"embedded ml-100k (recbole=={version} wheel: dataset_example/ml-100k)"


def _under(path: str, base: str) -> bool:
    return len(Path(base).parts) >= 2 and (path == base or path.startswith(base.rstrip(os.sep) + os.sep))


def source_label(path: str | Path, given: str | Path | None = None) -> str:
    """The provenance of a dataset read from `path` (`given`: the folder as the user typed it), per the rule in
    the module docstring: never an absolute path of this machine."""
    if is_embedded(path):
        return embedded_label()
    text = os.fspath(given if given is not None else path)
    if not os.path.isabs(text):
        norm = os.path.normpath(text)
        if os.path.basename(norm) not in ("", ".", ".."):  # "." or ".." would name no folder: use the absolute rule
            return Path(norm).as_posix()
        text = os.path.abspath(os.path.expanduser(text))
    norm = os.path.normpath(text)
    home = os.path.normpath(os.path.expanduser("~"))
    if _under(norm, home):
        return "~" + norm[len(home):].replace(os.sep, "/") if norm != home else "~"
    cwd = os.getcwd()
    rel = os.path.relpath(norm, cwd) if _under(norm, os.path.dirname(cwd)) else ""
    if os.path.basename(rel) not in ("", ".", ".."):  # the working folder itself or its parent name no folder
        return Path(rel).as_posix()
    return "…/" + "/".join(Path(norm).parts[-2:])
