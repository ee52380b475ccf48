"""Statistics of a synthetic ML-25M-shaped data set and writing it as ML-25M's own `ratings.csv` / `movies.csv`,
so every reader and pipeline can be exercised at full size without the real files."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.schema import MovieLensData
from recsys.data.synthetic import NO_GENRES, RATING_STRINGS, _value_counts, generate_ml25m_like, ml25m_like_sizes


def shape_stats(data: MovieLensData) -> dict:
    """The ML-25M shape numbers of a release (synthetic or real): activity, popularity, ratings, sessions."""
    inter = data.interactions
    u = inter["user"].to_numpy()
    it = inter["item"].to_numpy()
    r = inter["rating"].to_numpy(dtype=np.float64)
    ts = inter["timestamp"].to_numpy(dtype=np.int64)
    per_user = _value_counts(u)
    per_item = _value_counts(it)
    top = np.sort(per_item)[::-1]
    k = max(1, len(top) // 100)
    order = np.lexsort((ts, u))
    us, tss = u[order], ts[order]
    same_user = us[1:] == us[:-1]
    zero = (tss[1:] == tss[:-1]) & same_user
    values = np.arange(1, 11) / 2
    vcounts = np.bincount(np.clip(np.rint(r * 2).astype(np.int64) - 1, 0, 9), minlength=10)
    if not np.array_equal(np.rint(r * 2), r * 2):  # not a half-star release: fall back to the exact values
        values, vcounts = np.unique(r, return_counts=True)
    return {
        "ratings": int(len(inter)),
        "users": int(len(per_user)),
        "items": int(len(data.items)),
        "rated_items": int(len(per_item)),
        "density": float(len(inter) / max(1, len(per_user) * len(per_item))),
        "user_ratings_min": int(per_user.min()),
        "user_ratings_median": float(np.median(per_user)),
        "user_ratings_mean": float(per_user.mean()),
        "user_ratings_max": int(per_user.max()),
        "item_ratings_max": int(top[0]),
        "item_ratings_median": float(np.median(per_item)),
        "items_with_le2_ratings": float((per_item <= 2).mean()),
        "top1pct_items_share": float(top[:k].sum() / top.sum()),
        "rating_mean": float(r.mean()),
        "rating_mode": float(values[np.argmax(vcounts)]),
        "rating_histogram": {f"{v:.1f}": int(c) for v, c in zip(values, vcounts)},
        "zero_gap_fraction": float(zero.sum() / max(1, same_user.sum())),
        "time_min": pd.Timestamp(int(ts.min()), unit="s", tz="UTC").isoformat(),
        "time_max": pd.Timestamp(int(ts.max()), unit="s", tz="UTC").isoformat(),
    }


# --------------------------------------------------------------------------------------------- files
def _replace_atomically(path: Path, write) -> None:
    """Write through a temporary file beside `path` (created with the usual umask permissions), then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_movielens_csv(data: MovieLensData, directory: str | Path) -> Path:
    """Write `data` as ML-25M's files: ratings.csv (userId,movieId,rating,timestamp; ratings like '4.0') and
    movies.csv (movieId,title,genres; titles quoted only when needed, '(no genres listed)' for none).

    Each file is written to a temporary file in `directory` and moved into place. Returns the directory.
    Full size (25M rows, ~680 MB) takes ~10 s. Timestamps must all be present (ML-25M has no missing ones).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    directory = Path(directory)
    inter = data.interactions
    r = inter["rating"].to_numpy(dtype=np.float64)
    codes = np.rint(r * 2) - 1
    if len(r) and (not np.array_equal(codes, r * 2 - 1) or codes.min() < 0 or codes.max() > 9):
        raise ValueError("write_movielens_csv: ratings must be half stars in 0.5..5.0 (the ML-25M format)")
    if inter["timestamp"].isna().any():
        raise ValueError("write_movielens_csv: every rating needs a timestamp in the ML-25M format")
    table = pa.table({
        "userId": pa.array(inter["user"].to_numpy(dtype=np.int64)),
        "movieId": pa.array(inter["item"].to_numpy(dtype=np.int64)),
        "rating": pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8)), pa.array(RATING_STRINGS)),
        "timestamp": pa.array(inter["timestamp"].to_numpy(dtype=np.int64)),
    })
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=1 << 20)
    directory.mkdir(parents=True, exist_ok=True)

    def ratings(f, rows=table) -> None:
        f.write(b"userId,movieId,rating,timestamp\n")
        pacsv.write_csv(rows, f, options)

    _replace_atomically(directory / "ratings.csv", ratings)
    del table

    items = data.items
    movies = pd.DataFrame({
        "movieId": items["item"].to_numpy(dtype=np.int64),
        "title": items["title"].astype(str).to_numpy(),
        "genres": items["genres"].fillna("").astype(str).replace("", NO_GENRES).to_numpy(),
    })

    def movies_csv(f) -> None:
        f.write(movies.to_csv(index=False, lineterminator="\n").encode("utf-8"))

    _replace_atomically(directory / "movies.csv", movies_csv)
    return directory


# --------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.data.synthetic",
                                     description="Write a synthetic MovieLens-25M-shaped release as ML-25M CSVs.")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of ML-25M's size (default 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="directory for ratings.csv and movies.csv")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    try:
        sizes = ml25m_like_sizes(args.scale)
    except ValueError as e:
        parser.error(str(e))
    t0 = time.perf_counter()
    data = generate_ml25m_like(args.scale, args.seed, progress=not args.quiet)
    t1 = time.perf_counter()
    out = write_movielens_csv(data, args.out)
    t2 = time.perf_counter()
    print(f"{data.name} (scale {args.scale:g}, seed {args.seed}) -> {out}")
    print(f"  sizes (users, items, ratings): {sizes}")
    print(f"  generate: {t1 - t0:.1f}s, write: {t2 - t1:.1f}s")
    for key, value in {**data.stats(), **shape_stats(data)}.items():
        if key == "rating_values":
            continue
        print(f"  {key}: {value}")
    return 0

