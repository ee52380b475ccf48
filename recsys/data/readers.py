"""Readers for every MovieLens release in its native format, each returning the canonical MovieLensData.

Formats: ML-100K (u.data/u.item/u.user), RecBole atomic files (ml-100k.inter/.item/.user, the embedded default),
ML-1M and ML-10M ('::'-separated .dat, latin-1), ML-20M/ML-25M/ml-latest/ml-latest-small (CSV with a header), and
the shared ML-1M copy (ratings.parquet with nullable timestamps beside the original movies.dat/users.dat).
Every reader validates what it read and raises DataValidationError naming the file and line of the first problem;
a file is read whole or refused (recsys.data.integrity: empty, cut, or outside what its release documents).
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from recsys.data import integrity as integ
from recsys.data.integrity import check_text_file, source_label
from recsys.data.layout import (  # noqa: F401  (re-exported: readers' callers name them from here)
    RELEASE_FORMATS,
    check_release,
    detect_format,
    guess_name,
    identify_release,
    source_files,
)
from recsys.data.schema import DataValidationError, MovieLensData

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
_YEAR_IN_TITLE = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
RATING_COLUMNS = ["user", "item", "rating", "timestamp"]


# --------------------------------------------------------------------------------------------- parsing helpers
def _locate_bad_line(path: Path, text_lines, sep: str, columns: list[str], numeric: dict[str, type],
                     first_line: int, parser_error: object = "") -> DataValidationError:
    """Slow path, run only after the fast parser failed: find the first line that is malformed and say why."""
    last = first_line + len(text_lines) - 1
    for lineno, raw in enumerate(text_lines, start=first_line):
        line = raw.rstrip("\r\n")
        if not line.strip():
            return DataValidationError(f"{path}:{lineno}: empty line")
        fields = next(csv.reader([line], delimiter=sep)) if sep == "," else line.split(sep)
        if len(fields) < len(columns):
            cut = " (the last line: the file looks cut short; copy it again)" if lineno == last else ""
            return DataValidationError(
                f"{path}:{lineno}: expected {len(columns)} fields ({', '.join(columns)}), "
                f"found {len(fields)}: {integ.clip(line)}{cut}")
        for col, kind in numeric.items():
            value = fields[columns.index(col)].strip()
            try:
                number = kind(value)
            except ValueError:
                whole = kind is int and _is_float(value)
                what = "is not a whole number" if whole else "is not numeric"
                return DataValidationError(f"{path}:{lineno}: column '{col}' {what}: {integ.clip(value)}")
            if kind is int and not -integ.INT64_MAX - 1 <= number <= integ.INT64_MAX:
                return DataValidationError(
                    f"{path}:{lineno}: column '{col}' value {value} is too large for a 64-bit integer "
                    f"(ids and timestamps must lie within +-{integ.INT64_MAX:,})")
    return DataValidationError(f"{path}: could not be parsed (no single malformed line found: {parser_error})")


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _first_null(table: pa.Table, path: Path, first_line: int) -> None:
    """A missing field (empty or NA) is reported as missing, with its line, before any conversion hides it."""
    for col in table.column_names:
        column = table.column(col)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataValidationError(
                f"{path}:{row + first_line}: missing value in column '{col.split(':')[0]}' (empty or NA; "
                f"{column.null_count:,} in all)")


def _read_delimited(path: Path, sep: str, columns: list[str], dtypes: dict, header: bool,
                    encoding: str = "utf-8", dat: bool = False) -> pd.DataFrame:
    """Fast numeric table read; on any failure, rescan the text to report the first bad line."""
    check_text_file(path, " (no ratings)")  # empty or cut short: refused before parsing
    source: io.BytesIO | str
    if dat:  # '::' is a multi-character separator: rewrite it to one byte so the fast parser applies
        source = io.BytesIO(path.read_bytes().replace(b"::", b"\t"))
        sep = "\t"
    else:  # let pyarrow stream the file itself: no second in-memory copy of a 700 MB ratings.csv
        source = str(path)
    with open(path, "rb") as fh:
        first = fh.readline()
    if dat:
        first = first.replace(b"::", b"\t")
    first_line = 2 if header else 1
    try:
        if header:
            head = next(csv.reader([first.decode(encoding).strip()], delimiter=sep)) if sep == "," else \
                first.decode(encoding).strip().split(sep)
            missing = [c for c in dtypes if c not in head]
            if missing:
                raise DataValidationError(
                    f"{path}:1: missing column(s) {missing}; the header has {integ.clip(head)}")
            names = None
        else:
            ncols = len(first.split(sep.encode()))
            if ncols < len(columns):
                raise ValueError("too few fields")
            names = columns + [f"_extra{i}" for i in range(ncols - len(columns))]
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=names, encoding=encoding),
            parse_options=pacsv.ParseOptions(delimiter=sep, quote_char='"' if sep == "," else False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.from_numpy_dtype(np.dtype(t)) for c, t in dtypes.items()},
                include_columns=list(dtypes)))
        _first_null(table, path, first_line)
        df = table.to_pandas()
    except DataValidationError:
        raise
    except Exception as exc:  # pyarrow/pandas errors vary by version; the rescan gives the useful message
        raw = path.read_bytes()
        lines = (raw.replace(b"::", b"\t") if dat else raw).decode(encoding, errors="replace").splitlines()
        if header:
            head = next(csv.reader([lines[0].strip()], delimiter=sep)) if sep == "," else lines[0].strip().split(sep)
            cols, lines = head, lines[1:]
        else:
            cols = columns
        numeric: dict[str, type] = {c: (int if np.issubdtype(np.dtype(t), np.integer) else float)
                                    for c, t in dtypes.items()}
        err = _locate_bad_line(path, lines, sep, cols, numeric, first_line, exc)
        raise err from exc
    if len(df) == 0:
        raise DataValidationError(f"{path}: no rows")
    return df


def _year_from_title(titles: pd.Series) -> pd.Series:
    return titles.str.extract(_YEAR_IN_TITLE, expand=False).astype("Int64")


def _items_frame(item, title, year, genres) -> pd.DataFrame:
    return pd.DataFrame({
        "item": np.asarray(item, dtype=np.int64),
        "title": pd.Series(title, dtype=object).astype(str).str.strip().to_numpy(),
        "year": pd.array(year, dtype="Int64"),
        "genres": pd.Series(genres, dtype=object).fillna("").astype(str).to_numpy(),
    })


# --------------------------------------------------------------------------------------------- validation
def validate(interactions: pd.DataFrame, items: pd.DataFrame, ratings_path: Path, first_line: int,
             rating_range: tuple[float, float], unit: str = "line", whole_stars: str | None = None,
             expect: integ.Expectations | None = None) -> None:
    """Check the canonical interactions; raise naming the file and line of the first offending row.

    whole_stars: the release name when its ratings are whole numbers (fractions refused); expect: the documented
    span and count of the release the folder is (recsys.data.integrity.release_expectations)."""
    def where(row: int) -> str:
        return f"{ratings_path}:{row + first_line}" if unit == "line" else f"{ratings_path} (row {row + first_line})"

    for col in ("user", "item", "rating"):
        bad = interactions[col].isna().to_numpy()
        if bad.any():
            raise DataValidationError(f"{where(int(np.argmax(bad)))}: missing value in column '{col}'")
    lo, hi = rating_range
    r = interactions["rating"].to_numpy()
    bad = (r < lo) | (r > hi) | ~np.isfinite(r)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataValidationError(f"{where(i)}: rating {r[i]:g} is outside the release's range [{lo:g}, {hi:g}]")
    if whole_stars:
        integ.check_whole_stars(r, whole_stars, where)
    ts = interactions["timestamp"]
    neg = (ts < 0).fillna(False).to_numpy(dtype=bool)
    if neg.any():
        i = int(np.argmax(neg))
        raise DataValidationError(f"{where(i)}: negative timestamp {ts.iloc[i]}")
    integ.check_timestamp_unit(ts, where)
    if unit == "line" and ts.dtype == np.int64:  # text files only: a parquet file cannot be cut mid-row
        integ.check_last_timestamp(ts.to_numpy(), where(len(ts) - 1))
    if expect is not None:
        integ.check_span(ts, expect, where)
    u = interactions["user"].to_numpy()
    it = interactions["item"].to_numpy()
    if (u < 0).any() or (it < 0).any():
        i = int(np.argmax((u < 0) | (it < 0)))
        raise DataValidationError(f"{where(i)}: negative user or item id")
    # (user, item) first as one int64 key: a cheap hash; only on a hit pay for the three-column check.
    small = len(u) and max(int(u.max()), int(it.max())) < 2**31
    key = pd.Series(u * (int(it.max()) + 1) + it) if small else interactions[["user", "item"]]
    if key.duplicated().any():
        dup = interactions.duplicated(["user", "item", "timestamp"]).to_numpy()
        if dup.any():
            i = int(np.argmax(dup))
            raise DataValidationError(
                f"{where(i)}: duplicate rating of item {it[i]} by user {u[i]} at timestamp {ts.iloc[i]}")
    known = pd.Index(items["item"].to_numpy())
    unknown = known.get_indexer(it) < 0
    if unknown.any():
        i = int(np.argmax(unknown))
        raise DataValidationError(
            f"{where(i)}: item {it[i]} is not in the release's item file "
            f"({int(unknown.sum()):,} ratings in all refer to unknown items)")
    if items["item"].duplicated().any():
        raise DataValidationError(f"{ratings_path.parent}: the item file lists item "
                                  f"{items.loc[items['item'].duplicated(), 'item'].iloc[0]} twice")
    if expect is not None:
        integ.check_count(len(interactions), expect, ratings_path)


def _canonical(df: pd.DataFrame, nullable_ts: bool = False) -> pd.DataFrame:
    out = pd.DataFrame({
        "user": df["user"].to_numpy(dtype=np.int64),
        "item": df["item"].to_numpy(dtype=np.int64),
        "rating": df["rating"].to_numpy(dtype=np.float32),
    })
    out["timestamp"] = df["timestamp"].astype("Int64") if nullable_ts else df["timestamp"].to_numpy(dtype=np.int64)
    return out


# --------------------------------------------------------------------------------------------- readers
def read_ml100k(path: Path, name: str = "ml-100k") -> MovieLensData:
    path = Path(path)
    ratings = _read_delimited(path / "u.data", "\t", RATING_COLUMNS,
                              {"user": "int64", "item": "int64", "rating": "float32", "timestamp": "int64"},
                              header=False)
    notes: list[str] = []
    items_raw = _read_pipe_table(path / "u.item", 24, needed_for=" (needed for titles and genres)", notes=notes)
    genre_flags = items_raw.iloc[:, 5:24].apply(pd.to_numeric, errors="coerce").fillna(0).astype(int).to_numpy()
    genres = ["|".join(g for g, f in zip(ML100K_GENRES, row) if f and g != "unknown") for row in genre_flags]
    titles = items_raw[1]
    year = _year_from_title(titles).fillna(
        pd.to_datetime(items_raw[2], format="%d-%b-%Y", errors="coerce").dt.year.astype("Int64"))
    items = _items_frame(_ids(items_raw[0], path / "u.item"), titles, year, genres)
    users = None
    if (path / "u.user").exists():
        u = _read_pipe_table(path / "u.user", 5, notes=notes)
        users = pd.DataFrame({"user": _ids(u[0], path / "u.user"), "age": pd.to_numeric(u[1], errors="coerce"),
                              "gender": u[2], "occupation": u[3], "zip_code": u[4]})
    inter = _canonical(ratings)
    validate(inter, items, path / "u.data", 1, (1, 5), whole_stars="ml-100k",
             expect=integ.release_expectations(name, "ml-100k", path))
    return MovieLensData(name, source_label(path), inter, items, users, rating_scale=(1.0, 5.0), notes=notes)


def _ids(col: pd.Series, path: Path, first_line: int = 1) -> np.ndarray:
    vals = pd.to_numeric(col, errors="coerce")
    if vals.isna().any():
        i = int(np.argmax(vals.isna().to_numpy()))
        raise DataValidationError(f"{path}:{i + first_line}: id is not numeric: {col.iloc[i]!r}")
    if vals.dtype != np.int64:  # floats or uint64: only whole numbers within int64 are ids
        v = vals.to_numpy(dtype=np.float64)
        bad = (v != np.floor(v)) | (np.abs(v) >= 2.0**63)
        if bad.any():
            i = int(np.argmax(bad))
            why = "is not a whole number" if v[i] != np.floor(v[i]) else "is too large for a 64-bit integer"
            raise DataValidationError(f"{path}:{i + first_line}: id {why}: {integ.clip(col.iloc[i])}")
    return vals.to_numpy(dtype=np.int64)


def _read_pipe_table(path: Path, ncols: int, sep: str = "|", needed_for: str = "",
                     notes: list | None = None) -> pd.DataFrame:
    check_text_file(path, needed_for)
    rows = []
    for lineno, line in enumerate(integ.read_text(path, "latin-1", notes).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) < ncols:
            raise DataValidationError(
                f"{path}:{lineno}: expected {ncols} '{sep}'-separated fields, found {len(fields)}")
        rows.append(fields[:ncols])
    if not rows:
        raise DataValidationError(f"{path}: no rows (the file holds only blank lines){needed_for}")
    return pd.DataFrame(rows)


def read_recbole_atomic(path: Path, name: str | None = None) -> MovieLensData:
    """RecBole atomic files: a typed header ('user_id:token', ...) then tab-separated rows."""
    path = Path(path)
    inter_path = sorted(path.glob("*.inter"))[0]
    check_text_file(inter_path, " (no ratings)")
    stem = inter_path.stem
    header = inter_path.open(encoding="utf-8").readline().rstrip("\n").split("\t")
    fields = {h.split(":")[0]: h for h in header}
    need = {"user_id": "user", "item_id": "item", "rating": "rating", "timestamp": "timestamp"}
    missing = [k for k in need if k not in fields]
    if missing:
        raise DataValidationError(f"{inter_path}:1: missing column(s) {missing}; the header has {header}")
    df = _read_delimited(inter_path, "\t", header,
                         {fields["user_id"]: "int64", fields["item_id"]: "int64",
                          fields["rating"]: "float32", fields["timestamp"]: "float64"}, header=True)
    df = df.rename(columns={fields[k]: v for k, v in need.items()})
    ts = df["timestamp"].to_numpy()
    if not (np.isfinite(ts).all() and np.abs(ts).max() <= 2.0**62):
        i = int(np.argmax(~np.isfinite(ts) | (np.abs(ts) > 2.0**62)))
        raise DataValidationError(f"{inter_path}:{i + 2}: timestamp {ts[i]} is not a usable time in seconds")
    if not np.all(ts == np.round(ts)):
        i = int(np.argmax(ts != np.round(ts)))
        raise DataValidationError(f"{inter_path}:{i + 2}: timestamp {ts[i]} is not whole seconds")
    inter = _canonical(df)
    item_path = path / f"{stem}.item"
    check_text_file(item_path, " (needed for titles and genres)")
    it = pd.read_csv(item_path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
                     encoding="utf-8")
    it.columns = [c.split(":")[0] for c in it.columns]
    if "item_id" not in it.columns:
        raise DataValidationError(f"{item_path}:1: missing column 'item_id'")
    title = it.get("movie_title", pd.Series([""] * len(it)))
    year = pd.to_numeric(it.get("release_year", pd.Series([None] * len(it))), errors="coerce").astype("Int64")
    genres = it.get("class", pd.Series([""] * len(it))).str.split().str.join("|")
    # RecBole dropped the "(1995)" that every other release keeps in the title; put it back so titles read alike.
    title = title.str.strip()
    title = title.where(year.isna() | title.str.contains(_YEAR_IN_TITLE.pattern.replace("(\\d{4})", "\\d{4}")),
                        title + " (" + year.astype(str) + ")")
    items = _items_frame(_ids(it["item_id"], item_path, 2), title, year, genres)
    users = None
    user_path = path / f"{stem}.user"
    if user_path.exists():
        check_text_file(user_path)
        u = pd.read_csv(user_path, sep="\t", dtype=str, keep_default_na=False)
        u.columns = [c.split(":")[0] for c in u.columns]
        users = pd.DataFrame({"user": _ids(u["user_id"], user_path, 2),
                              "age": pd.to_numeric(u.get("age"), errors="coerce"),
                              "gender": u.get("gender"), "occupation": u.get("occupation"),
                              "zip_code": u.get("zip_code")})
    name = name or stem
    validate(inter, items, inter_path, 2, (1, 5), whole_stars=name if name in integ.WHOLE_STAR_RELEASES else None,
             expect=integ.release_expectations(name, "recbole-atomic", path))
    return MovieLensData(name, source_label(path), inter, items, users, rating_scale=(1.0, 5.0))


def _read_dat_movies(path: Path, notes: list | None = None) -> pd.DataFrame:
    check_text_file(path, " (needed for titles and genres)")
    rows = []
    for lineno, line in enumerate(integ.read_text(path, "latin-1", notes).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 3:
            raise DataValidationError(f"{path}:{lineno}: expected 3 '::'-separated fields, found {len(parts)}")
        rows.append(parts)
    if not rows:
        raise DataValidationError(f"{path}: no rows (the file holds only blank lines)")
    mv = pd.DataFrame(rows, columns=["item", "title", "genres"])
    genres = mv["genres"].replace("(no genres listed)", "")
    return _items_frame(_ids(mv["item"], path), mv["title"], _year_from_title(mv["title"]), genres)


def _read_dat_users(path: Path, notes: list | None = None) -> pd.DataFrame | None:
    if not path.exists():
        return None
    u = _read_pipe_table(path, 5, sep="::", notes=notes)
    return pd.DataFrame({"user": _ids(u[0], path), "gender": u[1], "age": pd.to_numeric(u[2], errors="coerce"),
                         "occupation": u[3], "zip_code": u[4]})


def read_dat(path: Path, name: str | None = None) -> MovieLensData:
    """ML-1M and ML-10M: '::'-separated, latin-1; ML-10M has half stars (0.5..5) and no users.dat."""
    path = Path(path)
    name = name or guess_name(path)
    ratings = _read_delimited(path / "ratings.dat", "::", RATING_COLUMNS,
                              {"user": "int64", "item": "int64", "rating": "float32", "timestamp": "int64"},
                              header=False, encoding="latin-1", dat=True)
    notes: list[str] = []
    items = _read_dat_movies(path / "movies.dat", notes)
    inter = _canonical(ratings)
    whole = name if name in integ.WHOLE_STAR_RELEASES else None  # ML-1M: whole stars; a fraction is refused
    half_stars = not whole and bool((inter["rating"].to_numpy() % 1 != 0).any())
    scale = (0.5, 5.0) if half_stars or name in ("ml-10m",) else (1.0, 5.0)
    validate(inter, items, path / "ratings.dat", 1, scale, whole_stars=whole,
             expect=integ.release_expectations(name, "dat", path))
    return MovieLensData(name, source_label(path), inter, items, _read_dat_users(path / "users.dat", notes),
                         rating_scale=scale, notes=notes)


def read_ml1m_parquet(path: Path, name: str = "ml-1m") -> MovieLensData:
    """The shared ML-1M copy: ratings.parquet (nullable timestamps) beside the original movies/users .dat."""
    path = Path(path)
    pq = path / "ratings.parquet"
    try:
        df = pd.read_parquet(pq)
    except Exception as exc:
        raise DataValidationError(f"{pq}: not a readable parquet file ({exc})") from exc
    rename = {"user_id": "user", "movie_id": "item", "userId": "user", "movieId": "item"}
    df = df.rename(columns=rename)
    missing = [c for c in RATING_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"{pq}: missing column(s) {missing}; it has {list(df.columns)}")
    for col in ("user", "item", "rating"):
        if df[col].isna().any():
            i = int(np.argmax(df[col].isna().to_numpy()))
            raise DataValidationError(f"{pq} (row {i}): missing value in column '{col}'")
        if df[col].dtype.kind == "u" and len(df) and int(df[col].max()) > integ.INT64_MAX:
            raise DataValidationError(f"{pq}: column '{col}' holds a value too large for a 64-bit integer")
    inter = _canonical(df, nullable_ts=bool(df["timestamp"].isna().any()))
    notes: list[str] = []
    items = _read_dat_movies(path / "movies.dat", notes)
    validate(inter, items, pq, 0, (1, 5), unit="row", whole_stars="ml-1m",
             expect=integ.release_expectations(name, "ml-1m-parquet", path))
    data = MovieLensData(name, source_label(path), inter, items, _read_dat_users(path / "users.dat", notes),
                         rating_scale=(1.0, 5.0), notes=notes)
    if data.n_missing_timestamps:
        data.notes.append(
            f"{data.n_missing_timestamps:,} ratings have no timestamp: chronological protocols need "
            f"timestamped_users_only (users 1..2999 here), not comparable to published full-ML-1M numbers")
    return data


def read_csv_release(path: Path, name: str | None = None) -> MovieLensData:
    """ML-20M, ML-25M, ml-latest, ml-latest-small: ratings.csv and movies.csv with headers, half stars."""
    path = Path(path)
    name = name or guess_name(path)
    ratings = _read_delimited(path / "ratings.csv", ",", ["userId", "movieId", "rating", "timestamp"],
                              {"userId": "int64", "movieId": "int64", "rating": "float32", "timestamp": "int64"},
                              header=True)
    ratings = ratings.rename(columns={"userId": "user", "movieId": "item"})
    mpath = path / "movies.csv"
    check_text_file(mpath, " (needed for titles and genres)")
    notes: list[str] = []
    mv = pd.read_csv(io.StringIO(integ.read_text(mpath, "utf-8", notes)), dtype=str, keep_default_na=False)
    missing = [c for c in ("movieId", "title", "genres") if c not in mv.columns]
    if missing:
        raise DataValidationError(f"{mpath}:1: missing column(s) {missing}; the header has {list(mv.columns)}")
    items = _items_frame(_ids(mv["movieId"], mpath, 2), mv["title"], _year_from_title(mv["title"]),
                         mv["genres"].replace("(no genres listed)", ""))
    inter = _canonical(ratings)
    validate(inter, items, path / "ratings.csv", 2, (0.5, 5.0), expect=integ.release_expectations(name, "csv", path))
    return MovieLensData(name, source_label(path), inter, items, None, rating_scale=(0.5, 5.0), notes=notes)


READERS = {
    "ml-100k": read_ml100k,
    "recbole-atomic": read_recbole_atomic,
    "ml-1m-parquet": read_ml1m_parquet,
    "dat": read_dat,
    "csv": read_csv_release,
}


def read_movielens(path: Path, name: str | None = None) -> MovieLensData:
    """Read and validate any MovieLens release folder (format detected from its files)."""
    path = Path(path)
    fmt = detect_format(path)
    reader = READERS[fmt]
    return reader(path, name) if name else reader(path)
