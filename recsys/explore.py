"""Explore MovieLens: every number and table the Explore page shows, as plain functions returning DataFrames.

Nothing here imports Streamlit; the page (app_pages/explore.py) only arranges widgets and charts around these.
All functions take the canonical tables of `recsys.data.schema.MovieLensData`: interactions
(user, item, rating, timestamp) in source-file order, where timestamp is int64 seconds or nullable Int64 when the
release lacks some (the shared ML-1M copy); items (item, title, year, genres '|'-separated, '' when none).
Time-based views use only the timestamped ratings; `timestamped` says how many that is.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from recsys.data.history import gaps_before
from recsys.data.prepare import chronological_order

# Reference marks on the gap axis, in seconds (a "month" is 30 days).
MINUTE, HOUR, DAY, MONTH, YEAR = 60, 3600, 86400, 30 * 86400, 365.25 * 86400
GAP_REFERENCES = pd.DataFrame({"label": ["1 minute", "1 hour", "1 day", "1 month"],
                               "seconds": [MINUTE, HOUR, DAY, MONTH]})
NO_GENRE = {"", "(no genres listed)"}


class UnknownUserError(KeyError):
    """The requested user id has no ratings in this dataset; str() is a message meant for a person."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument (with quotes)
        return str(self.args[0]) if self.args else "unknown user"


# ----------------------------------------------------------------------------------------------------------------
# helpers

def timestamped(interactions: pd.DataFrame) -> pd.DataFrame:
    """The rows that have a timestamp, with timestamp as int64 seconds (source order and index kept)."""
    ts = interactions["timestamp"]
    if ts.isna().any():
        interactions = interactions.loc[ts.notna()]
    return interactions.assign(timestamp=interactions["timestamp"].to_numpy(dtype=np.int64))


def _to_datetime(seconds) -> pd.Series | pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s")


def chronological_positions(interactions: pd.DataFrame) -> np.ndarray:
    """Positions that sort the rows by (user, timestamp), ties broken by source-file order (row position).

    Needs every timestamp: call on `timestamped(...)` rows.
    """
    return chronological_order(interactions["user"].to_numpy(dtype=np.int64),
                               interactions["timestamp"].to_numpy(dtype=np.int64))


def format_gap(seconds) -> str:
    """A gap in human units: '0 s', '45 s', '12 min', '2.5 h', '3 d', '1.2 y'; '—' when unknown (first rating).

    One decimal below 10 of a unit, whole numbers above; a trailing '.0' is dropped.
    """
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) or seconds is pd.NA:
        return "—"
    s = float(seconds)
    if s < 0:
        return "-" + format_gap(-s)
    if s < MINUTE:
        return f"{s:.0f} s" if s == int(s) or s >= 10 else f"{round(s, 1):g} s"
    for unit, size, nxt in (("min", MINUTE, HOUR), ("h", HOUR, DAY), ("d", DAY, YEAR), ("y", YEAR, math.inf)):
        if s < nxt:
            v = s / size
            v = round(v, 1) if v < 10 else round(v)
            return f"{v:g} {unit}"
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------------------------
# distributions

def rating_distribution(interactions: pd.DataFrame) -> pd.DataFrame:
    """One row per rating value present: rating, ratings (count), share of all ratings."""
    counts = interactions["rating"].value_counts().sort_index()
    out = counts.rename_axis("rating").reset_index(name="ratings")
    out["rating"] = out["rating"].astype(float)
    out["share"] = out["ratings"] / max(1, int(out["ratings"].sum()))
    return out


def ratings_per_month(interactions: pd.DataFrame) -> pd.DataFrame:
    """month (first day, datetime64), ratings and `partial` for every month from the first to the last (zeros
    included); `partial` marks a first month that the data start after its first day, or a last month that they
    end before its last day (a short bar there is the collection window, not a dip in activity)."""
    ts = timestamped(interactions)["timestamp"].to_numpy()
    if len(ts) == 0:
        return pd.DataFrame({"month": pd.Series(dtype="datetime64[s]"), "ratings": pd.Series(dtype="int64"),
                             "partial": pd.Series(dtype=bool)})
    secs = ts.astype("datetime64[s]")
    months = secs.astype("datetime64[M]")
    uniq, counts = np.unique(months, return_counts=True)
    full = np.arange(uniq[0], uniq[-1] + 1)
    filled = pd.Series(counts, index=uniq).reindex(full, fill_value=0)
    partial = np.zeros(len(full), dtype=bool)
    first, last = secs.min(), secs.max()
    partial[0] |= first.astype("datetime64[D]") > full[0].astype("datetime64[D]")
    partial[-1] |= last.astype("datetime64[D]") < (full[-1] + 1).astype("datetime64[D]") - np.timedelta64(1, "D")
    return pd.DataFrame({"month": full.astype("datetime64[s]"), "ratings": filled.to_numpy(dtype=np.int64),
                         "partial": partial})


def long_tail(interactions: pd.DataFrame, by: str = "item", max_points: int | None = None) -> pd.DataFrame:
    """Rank plot data: rank (1 = most ratings), ratings of that user/item, cumulative share of all ratings.

    by: 'item' (item popularity) or 'user' (user activity); only users/items with at least one rating count.
    max_points: keep only about this many log-spaced ranks (always the first and the last), for plotting.
    """
    if by not in ("item", "user"):
        raise ValueError(f"by must be 'item' or 'user', not {by!r}")
    counts = np.sort(interactions[by].value_counts().to_numpy(dtype=np.int64))[::-1]
    total = max(1, int(counts.sum()))
    out = pd.DataFrame({"rank": np.arange(1, len(counts) + 1), "ratings": counts,
                        "cum_share": np.cumsum(counts) / total})
    if max_points is not None and len(out) > max_points:
        keep = np.unique(np.geomspace(1, len(out), max_points).round().astype(np.int64)) - 1
        out = out.iloc[keep].reset_index(drop=True)
    return out


def top_share(interactions: pd.DataFrame, by: str = "item", fraction: float = 0.01) -> tuple[int, int, float]:
    """(k, n, share): the top k = ceil(fraction * n) of the n rated items (or active users) hold `share` of ratings."""
    counts = np.sort(interactions[by].value_counts().to_numpy(dtype=np.int64))[::-1]
    n = len(counts)
    if n == 0:
        return 0, 0, 0.0
    k = max(1, math.ceil(fraction * n - 1e-9))
    return k, n, float(counts[:k].sum() / counts.sum())


def long_tail_summary(interactions: pd.DataFrame, by: str = "item", fraction: float = 0.01) -> str:
    """One line, e.g. 'top 1% of movies (17 of 1,682 rated) hold 9.9% of ratings; median 27 ratings per movie'."""
    k, n, share = top_share(interactions, by, fraction)
    noun = "movies" if by == "item" else "users"
    if n == 0:
        return f"no rated {noun}"
    median = float(interactions[by].value_counts().median())
    what = "rated" if by == "item" else "active"
    return (f"top {fraction:.0%} of {noun} ({k:,} of {n:,} {what}) hold {share:.1%} of ratings; "
            f"median {median:g} ratings per {noun[:-1]}")


# ----------------------------------------------------------------------------------------------------------------
# genres over time

def item_genres(items: pd.DataFrame) -> pd.DataFrame:
    """One row per (item, genre), from the '|'-separated genres column; items without a genre are left out."""
    g = items[["item", "genres"]].assign(genre=items["genres"].fillna("").astype(str).str.split("|"))
    g = g.explode("genre")[["item", "genre"]]
    g["genre"] = g["genre"].str.strip()
    return g.loc[~g["genre"].isin(NO_GENRE)].drop_duplicates().reset_index(drop=True)


def genre_totals(interactions: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """genre, ratings (of movies in that genre), share of all ratings; most rated first (ties by name)."""
    per_item = interactions["item"].value_counts().rename_axis("item").reset_index(name="ratings")
    g = item_genres(items).merge(per_item, on="item")
    out = g.groupby("genre", as_index=False)["ratings"].sum()
    out["share"] = out["ratings"] / max(1, len(interactions))
    return out.sort_values(["ratings", "genre"], ascending=[False, True], ignore_index=True)


def top_genres(interactions: pd.DataFrame, items: pd.DataFrame, n: int = 6) -> list[str]:
    return genre_totals(interactions, items)["genre"].head(n).tolist()


def genre_shares_over_time(interactions: pd.DataFrame, items: pd.DataFrame, period: str = "year") -> pd.DataFrame:
    """Share of each period's ratings that went to movies of each genre (by the rating's date, UTC).

    Columns: period (int year, or the month's first day when period='month'), genre, ratings (of that genre in that
    period), total (all ratings in that period), share = ratings / total. A movie with several genres counts for
    each, so a period's shares can add up to more than 1. Only genre/period pairs with ratings appear.
    """
    if period not in ("year", "month"):
        raise ValueError(f"period must be 'year' or 'month', not {period!r}")
    inter = timestamped(interactions)
    when = inter["timestamp"].to_numpy().astype("datetime64[s]")
    if period == "year":
        key = when.astype("datetime64[Y]").astype(np.int64) + 1970
    else:
        key = when.astype("datetime64[M]").astype("datetime64[s]")
    per = pd.DataFrame({"item": inter["item"].to_numpy(), "period": key})
    per_item = per.groupby(["period", "item"], as_index=False).size().rename(columns={"size": "ratings"})
    totals = per.groupby("period").size().rename("total")
    g = per_item.merge(item_genres(items), on="item").groupby(["period", "genre"], as_index=False)["ratings"].sum()
    g = g.merge(totals, left_on="period", right_index=True)
    g["share"] = g["ratings"] / g["total"]
    return g.sort_values(["period", "genre"], ignore_index=True)[["period", "genre", "ratings", "total", "share"]]


# ----------------------------------------------------------------------------------------------------------------
# gaps between a user's consecutive ratings (what SS4Rec's S5 layer is driven by)

def user_gaps(interactions: pd.DataFrame) -> pd.DataFrame:
    """One row per consecutive pair of a user's timestamped ratings: user, gap (int64 seconds, >= 0).

    Each user's ratings are sorted by timestamp, ties broken by source-file order; a user with n timestamped
    ratings gives n - 1 gaps. Rows come grouped by user (ascending), in chronological order within a user.
    """
    inter = timestamped(interactions)
    pos = chronological_positions(inter)
    user = inter["user"].to_numpy(dtype=np.int64)[pos]
    ts = inter["timestamp"].to_numpy(dtype=np.int64)[pos]
    later = np.r_[False, user[1:] == user[:-1]] if len(user) else np.zeros(0, bool)  # not a user's first rating
    return pd.DataFrame({"user": user[later], "gap": gaps_before(ts, user)[later]})


def gap_summary(gaps) -> dict:
    """n gaps, how many (and what share) are exactly 0 s, and the median / quartiles of all gaps in seconds."""
    g = np.asarray(gaps["gap"] if isinstance(gaps, pd.DataFrame) else gaps, dtype=np.int64)
    n = len(g)
    zeros = int((g == 0).sum())
    q = np.percentile(g, [25, 50, 75]) if n else [float("nan")] * 3
    return {"gaps": n, "zero_gaps": zeros, "zero_share": zeros / n if n else 0.0,
            "positive_gaps": n - zeros, "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2])}


def gap_histogram(gaps, bins_per_decade: int = 4) -> pd.DataFrame:
    """Histogram of the positive gaps on log-spaced bins (np.logspace from 1 s, `bins_per_decade` per power of ten,
    up to the bin that holds the largest gap).

    Columns: bin_lo, bin_hi (seconds; each bin is [lo, hi), the last one closed), gaps (count), share (of ALL gaps,
    zero gaps included, so the bins plus the zero share add up to 1), range (the bin in human units).
    Zero gaps are not in any bin: a log axis has no place for them (see gap_summary's zero_share).
    """
    g = np.asarray(gaps["gap"] if isinstance(gaps, pd.DataFrame) else gaps, dtype=np.int64)
    pos = g[g > 0]
    cols = ["bin_lo", "bin_hi", "gaps", "share", "range"]
    if len(pos) == 0:
        return pd.DataFrame({c: pd.Series(dtype=float if c.startswith("bin") or c == "share" else
                                          ("int64" if c == "gaps" else object)) for c in cols})
    decades = max(1, math.ceil(math.log10(pos.max()) - 1e-12))
    if 10 ** decades < pos.max():  # float safety
        decades += 1
    edges = np.logspace(0, decades, decades * bins_per_decade + 1)
    edges = edges[: int(np.searchsorted(edges, pos.max(), side="right")) + 1]  # no empty bins past the largest gap
    counts, _ = np.histogram(pos, bins=edges)
    out = pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "gaps": counts.astype(np.int64)})
    out["share"] = out["gaps"] / len(g)
    out["range"] = [f"{format_gap(lo)} – {format_gap(hi)}" for lo, hi in zip(out["bin_lo"], out["bin_hi"])]
    return out


# ----------------------------------------------------------------------------------------------------------------
# movies

def item_table(interactions: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Every movie of the item file with its number of ratings and mean rating (NaN when never rated)."""
    agg = interactions.groupby("item")["rating"].agg(ratings="size", mean_rating="mean")
    out = items[["item", "title", "year", "genres"]].merge(agg, left_on="item", right_index=True, how="left")
    out["ratings"] = out["ratings"].fillna(0).astype(np.int64)
    out["mean_rating"] = out["mean_rating"].astype(float)
    return out.reset_index(drop=True)


def search_titles(table: pd.DataFrame, query: str, limit: int | None = 50) -> pd.DataFrame:
    """Movies whose title contains `query` (case-insensitive, plain substring), most rated first.

    table: `item_table(...)` output (or the items table itself). An empty/blank query matches nothing.
    """
    q = (query or "").strip()
    if not q:
        return table.iloc[0:0].reset_index(drop=True)
    hit = table.loc[table["title"].astype(str).str.contains(q, case=False, regex=False, na=False)]
    if "ratings" in hit.columns:
        hit = hit.sort_values(["ratings", "title"], ascending=[False, True], kind="stable")
    hit = hit.reset_index(drop=True)
    return hit if limit is None else hit.head(limit)


# ----------------------------------------------------------------------------------------------------------------
# one user

def user_ids(interactions: pd.DataFrame) -> np.ndarray:
    """Sorted ids of the users with at least one rating."""
    return np.unique(interactions["user"].to_numpy())


def user_timeline(interactions: pd.DataFrame, items: pd.DataFrame, user: int) -> pd.DataFrame:
    """One user's ratings in chronological order (ties by file order; ratings without timestamp last, file order).

    Columns: n (1-based position), time (datetime64, UTC, NaT when unknown), timestamp (Int64 seconds), item,
    title, rating, gap_s (Int64 seconds since the previous rating; NA for the first and around unknown times),
    gap (gap_s in human units, e.g. '3 d', '45 s', '0 s', '—').
    Raises UnknownUserError when the user has no ratings.
    """
    try:
        uid = int(user)
    except (TypeError, ValueError):
        raise UnknownUserError(f"user id must be a whole number, not {user!r}") from None
    rows = interactions.loc[interactions["user"].to_numpy() == uid]
    if rows.empty:
        ids = user_ids(interactions)
        span = f"ids {ids.min():,}..{ids.max():,}, {len(ids):,} users" if len(ids) else "no users"
        raise UnknownUserError(f"user {uid} has no ratings in this dataset ({span})")
    ts = rows["timestamp"].astype("Int64")
    order = np.lexsort((np.arange(len(rows)), ts.fillna(np.iinfo(np.int64).max).to_numpy(dtype=np.int64),
                        ts.isna().to_numpy()))
    rows = rows.iloc[order]
    ts = rows["timestamp"].astype("Int64").reset_index(drop=True)
    titles = items.set_index("item")["title"]
    out = pd.DataFrame({
        "n": np.arange(1, len(rows) + 1),
        "time": pd.to_datetime(ts.astype("float64"), unit="s"),
        "timestamp": ts,
        "item": rows["item"].to_numpy(),
        "title": rows["item"].map(titles).fillna("(not in the item file)").astype(str).to_numpy(),
        "rating": rows["rating"].to_numpy(dtype=float),
    })
    out["gap_s"] = ts.diff().astype("Int64")
    out["gap"] = [format_gap(None if pd.isna(v) else int(v)) for v in out["gap_s"]]
    return out


# ML-1M's users.dat codes age and occupation (its README): decoded for display
ML1M_AGES = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATIONS = ["other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]


def user_profile(users: pd.DataFrame | None, user: int, release: str | None = None) -> dict:
    """The user's row of the release's user table (age, gender, ...) as a dict; {} when there is none. For ML-1M
    (`release="ml-1m"`) the coded age bucket and occupation are decoded ("age 25-34", "programmer")."""
    if users is None or "user" not in users.columns:
        return {}
    row = users.loc[users["user"] == int(user)]
    if row.empty:
        return {}
    out = {k: v for k, v in row.iloc[0].items() if k != "user"}
    if str(release or "").lower() == "ml-1m":
        age, occ = out.get("age"), out.get("occupation")
        if age is not None and pd.notna(age) and int(age) in ML1M_AGES:
            out["age"] = ML1M_AGES[int(age)]
        if occ is not None and str(occ).strip().isdigit() and int(occ) < len(ML1M_OCCUPATIONS):
            out["occupation"] = ML1M_OCCUPATIONS[int(occ)]
        if out.get("gender") in ("F", "M"):
            out["gender"] = {"F": "female", "M": "male"}[out["gender"]]
    return out


__all__ = [
    "GAP_REFERENCES", "UnknownUserError", "timestamped", "chronological_positions", "format_gap",
    "rating_distribution", "ratings_per_month", "long_tail", "top_share", "long_tail_summary", "item_genres",
    "genre_totals", "top_genres", "genre_shares_over_time", "user_gaps", "gap_summary", "gap_histogram",
    "item_table", "search_titles", "user_ids", "user_timeline", "user_profile",
]
