"""Synthetic data with the shape of MovieLens ML-25M, for scale tests and benchmarks.

`generate_ml25m_like(scale, seed)` returns a canonical `MovieLensData` ("synthetic-ml25m") whose headline
statistics follow ML-25M scaled by `scale`; `write_movielens_csv` writes it as ML-25M's own `ratings.csv` and
`movies.csv`, so every reader and pipeline can be exercised at full size without the real files.

What is modelled (all vectorised numpy; python loops only over item tables and the ~2k heaviest users):
  * users: round(162,541 * scale), ids 1..n; every user has >= 20 ratings; activity is 20 + a lognormal excess
    (median ~71, mean ~154, max ~23k at full size), capped at 55% of the items;
  * items: round(59,047 * scale) movies with gappy increasing movieIds (like ML's 1..209,171). Users, items and
    ratings all scale linearly, so density grows as 1/scale; below scale ~0.052 the item count is raised to keep
    the density <= 5% (about 3,076 items). Popularity follows ML-25M's rank/frequency curve (full size: top
    item ~82k ratings, median item 9, ~29% of items with <= 2, top 1% of items ~39% of the ratings); at smaller
    scales the head gets a soft cap so the top item is still rated by about half the users (as in ML-25M, ML-1M
    and ml-latest-small) instead of by all of them. Every item has >= 1 rating (scale >= 0.0005);
  * ratings: exactly round(25,000,095 * scale) of them, no duplicate (user, item) pair, half stars 0.5..5.0 with
    ML-25M's histogram (mean ~3.53, mode 4.0); the latent score is user bias + item quality + user-genre
    affinity + noise, so a model beats the global mean (user+item biases: RMSE ~0.85 vs ~1.06 for the mean;
    heavy users rate lower, popular items higher);
  * timestamps: int64 seconds in [1995-01-09 11:46:49, 2019-11-21 09:15:03] UTC (ML-25M's first and last);
    per user a first-active time, sessions separated by heavy-tailed gaps (an hour to two years, median a day),
    ratings seconds to minutes apart within a session, ~9.5% of consecutive ratings in the very same second;
    within a user the items come roughly in release order (a sequential signal for sequence models);
  * rows in ML-25M's file order: sorted by user, then movieId.

Timings and memory at full size are in docs/benchmarks.md (`scripts/bench_data.py`). Statistics of a generated set
and writing it as ML-25M's files live in `recsys.data.synthetic_files`.
"""
from __future__ import annotations

import hashlib
import math
import sys
import time

import numpy as np
import pandas as pd

from recsys.data.schema import MovieLensData

GENERATOR_VERSION = 1
NAME = "synthetic-ml25m"

ML25M_RATINGS = 25_000_095
ML25M_USERS = 162_541
ML25M_ITEMS = 59_047
T_MIN = 789_652_009      # 1995-01-09 11:46:49 UTC: ML-25M's first rating
T_MAX = 1_574_327_703    # 2019-11-21 09:15:03 UTC: ML-25M's last rating
MIN_USER_RATINGS = 20
MAX_DENSITY = 0.05       # at small scales the item count is raised so that ratings / (users * items) <= this
MAX_USER_FRACTION = 0.55  # no user rates more than this share of the items (ML-25M's top user: 32,202 of 59,047)

RATING_VALUES = np.arange(1, 11, dtype=np.float32) / 2  # 0.5 .. 5.0
RATING_STRINGS = tuple(f"{v:.1f}" for v in RATING_VALUES)
# ML-25M's rating histogram (0.5, 1.0, ..., 5.0): mean 3.534, mode 4.0.
ML25M_RATING_COUNTS = np.array([393_068, 776_815, 399_490, 1_640_868, 1_262_797,
                                4_896_928, 3_177_318, 6_639_798, 2_200_539, 3_612_474], dtype=np.float64)

GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
NO_GENRES = "(no genres listed)"  # the 20th ML-25M "genre"; '' in the canonical items table
# Relative genre frequencies among ML-25M movies (same order as GENRES).
_GENRE_WEIGHTS = np.array([7348, 4145, 2929, 2935, 16870, 5319, 5605, 25606, 2731,
                           353, 5989, 195, 1054, 2925, 7719, 3595, 8654, 1874, 1399], dtype=np.float64)
_NO_GENRE_FRACTION = 0.04
_GENRE_COUNT_P = np.array([0.42, 0.35, 0.23])  # 1, 2 or 3 genres

# Item popularity. Target: ML-25M-like ratings per item by popularity rank (rank 1 = most rated; ~81.5k, 58.8k
# at rank 10, 25k at 100, 5.5k at 1,000, 250 at 10,000, 9 at 30,000, 1 at the last), which sums to ~25M. The
# sampling weights below are calibrated (at scale 1, seed 0) so that the realised curve, after users saturate
# on popular items, matches it: top item ~82k, median item 9 ratings, ~28% of items with <= 2, top 1% of items
# ~40% of the ratings. Interpolated in log-log space over the relative rank, so the shape carries over to
# other scales.
_POP_RANKS = np.array([1, 10, 100, 1000, 3000, 6000, 10000, 15000, 20000, 30000, 40000, 50000, ML25M_ITEMS],
                      dtype=np.float64)
_POP_WEIGHTS = np.array([2.212e5, 1.165e5, 3.404e4, 5581, 1764, 612.3, 209.9, 72.88, 29.47, 6.073, 1.637, 0.4654,
                         0.103])

_TOP_ITEM_USER_SHARE = 0.5  # ML-25M: 81,491 of 162,541 users rated the top movie

# User activity: 20 + lognormal excess with median 51 (so ~71 ratings) and sigma 1.39 (so mean ~154).
_ACT_MU, _ACT_SIGMA = math.log(51.0), 1.39
# Latent rating score: shares of variance (sum 1).
_VAR_USER, _VAR_ITEM, _VAR_GENRE, _VAR_NOISE = 0.22, 0.18, 0.10, 0.50
# Session structure.
_ZERO_GAP_P = 0.10                                 # consecutive ratings in the same second, within a session
_IN_SESSION_MEDIAN_S, _IN_SESSION_SIGMA, _IN_SESSION_MAX_S = 25.0, 1.0, 1800
_SESSION_MEDIAN_S, _SESSION_SIGMA = 86_400.0, 2.2  # gap between sessions: median a day, heavy tail
_SESSION_MIN_S, _SESSION_MAX_S = 3600, 2 * 365 * 86_400
_SESSION_P_BETA = (0.5, 9.0)                       # per-user chance that a rating opens a new session (mean ~5%)
_ORDER_NOISE = 0.2                                 # noise on release position when ordering a user's ratings

_CHUNK = 1 << 22


# --------------------------------------------------------------------------------------------- sizes
def ml25m_like_sizes(scale: float) -> tuple[int, int, int]:
    """(users, items, ratings) that `generate_ml25m_like(scale)` produces; ratings is exact."""
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a positive number, not {scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, not {scale!r}")
    n_users = max(1, round(ML25M_USERS * scale))
    n_ratings = round(ML25M_RATINGS * scale)
    if n_ratings < MIN_USER_RATINGS * n_users:
        raise ValueError(f"scale {scale!r} is too small: {n_ratings} ratings cannot give each of {n_users} users "
                         f"{MIN_USER_RATINGS} (use scale >= 1e-6)")
    n_items = max(round(ML25M_ITEMS * scale), math.ceil(n_ratings / (MAX_DENSITY * n_users)))
    return n_users, n_items, n_ratings


# --------------------------------------------------------------------------------------------- pieces
class _Log:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.t0 = self.t = time.perf_counter()

    def __call__(self, what: str) -> None:
        now = time.perf_counter()
        if self.enabled:
            print(f"[synthetic] {what}: {now - self.t:.1f}s (total {now - self.t0:.1f}s)", file=sys.stderr,
                  flush=True)
        self.t = now


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique for big int arrays by sort + mask (numpy 2.x's np.unique is many times slower on 25M int64)."""
    s = np.sort(a)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _value_counts(a: np.ndarray) -> np.ndarray:
    """The number of times each distinct value occurs (order of the sorted values)."""
    s = np.sort(a)
    if len(s) == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.flatnonzero(s[1:] != s[:-1]) + 1
    return np.diff(np.concatenate(([0], edges, [len(s)])))


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _user_counts(rng: np.random.Generator, n_users: int, n_ratings: int, cap: int) -> np.ndarray:
    """Ratings per user: >= 20, <= cap, heavy-tailed, summing to exactly n_ratings."""
    excess = np.exp(rng.normal(_ACT_MU, _ACT_SIGMA, n_users))
    need = n_ratings - MIN_USER_RATINGS * n_users
    room = cap - MIN_USER_RATINGS
    if need < 0 or need > room * n_users:
        raise ValueError(f"cannot place {n_ratings} ratings on {n_users} users with 20..{cap} each")

    def total(f: float) -> float:
        return float(np.minimum(excess * f, room).sum())

    lo, hi = 0.0, 1.0
    while total(hi) < need:
        hi *= 2
    for _ in range(100):  # bisection on the factor that scales every user's excess
        mid = (lo + hi) / 2
        if total(mid) <= need:
            lo = mid
        else:
            hi = mid
    e = np.minimum(excess * lo, room)
    base = np.floor(e).astype(np.int64)
    frac = e - base
    rem = need - int(base.sum())
    while rem > 0:  # hand out the rounding remainder, largest fractions first
        open_ = np.flatnonzero(base < room)
        k = min(rem, len(open_))
        pick = open_[np.argsort(-frac[open_], kind="stable")[:k]]
        base[pick] += 1
        frac[pick] = -1.0
        rem -= k
    return base + MIN_USER_RATINGS


class _AliasSampler:
    """Exact O(1) sampling from a discrete distribution (Vose's alias method)."""

    def __init__(self, weights: np.ndarray):
        n = len(weights)
        p = weights.astype(np.float64) * n / weights.sum()
        prob = np.ones(n)
        alias = np.arange(n, dtype=np.int64)
        small = list(np.flatnonzero(p < 1.0))
        large = list(np.flatnonzero(p >= 1.0))
        while small and large:  # O(n) over the items (tens of thousands), not over ratings
            s, g = small.pop(), large.pop()
            prob[s] = p[s]
            alias[s] = g
            p[g] += p[s] - 1.0
            (small if p[g] < 1.0 else large).append(g)
        self.n, self.prob, self.alias = n, prob, alias

    def __call__(self, rng: np.random.Generator, size: int) -> np.ndarray:
        out = np.empty(size, dtype=np.int64)
        for a in range(0, size, _CHUNK):
            u = rng.random(min(_CHUNK, size - a)) * self.n
            j = u.astype(np.int64)
            j[j >= self.n] = self.n - 1
            out[a:a + len(j)] = np.where(u - j < self.prob[j], j, self.alias[j])
        return out


def _popularity_weights(n_items: int, counts: np.ndarray) -> np.ndarray:
    """Sampling weight by popularity rank 0..n-1 (see _POP_WEIGHTS), over the relative rank.

    Below full size the data are denser (users, items and ratings all scale linearly, so density ~ 1/scale) and
    the head would saturate (the top items rated by nearly every user). There the weights get a soft cap,
    w * cap / (w + cap), with the cap chosen so that the top item is still expected to be rated by about half
    of the users, as in ML-25M (and ML-1M, ml-latest-small); the tail keeps its shape.
    """
    q = (np.arange(n_items, dtype=np.float64) + 0.5) / n_items
    log_w = np.interp(np.log(q), np.log(_POP_RANKS / ML25M_ITEMS), np.log(_POP_WEIGHTS))
    w = np.exp(log_w - log_w[0])  # top weight 1
    c = counts.astype(np.float64)

    def capped(log10_cap: float) -> np.ndarray:
        cap = 10.0 ** log10_cap
        return w * (cap / (w + cap))

    def top_share(v: np.ndarray) -> float:  # expected share of users rating the top item (with-replacement approx.)
        return float(-np.expm1(-c * (v[0] / v.sum())).mean())

    if top_share(w) <= _TOP_ITEM_USER_SHARE:
        return w
    lo, hi = -12.0, 12.0
    for _ in range(60):  # bisection on log10(cap)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if top_share(capped(mid)) < _TOP_ITEM_USER_SHARE else (lo, mid)
    return capped(lo)


def _sample_pairs(rng: np.random.Generator, counts: np.ndarray, item_weight: np.ndarray) -> np.ndarray:
    """Sorted unique keys user * n_items + item: exactly counts[u] distinct items per user, drawn without
    replacement in proportion to item_weight (successive sampling), every item at least once.

    Heavy users (more than max(200, 2% of the items) ratings) get an exact weighted sample without replacement
    (exponential races over all items; a python loop over those few thousand users only). The others draw by
    popularity with replacement, lose duplicate pairs, and top up the shortfall from oversampled popularity
    draws, which converges in a few rounds; one rating of every item is placed on random slots of theirs.
    """
    n_items = len(item_weight)
    heavy = counts > max(200, n_items // 50)
    light = np.where(heavy, 0, counts)
    parts = [_sample_light(rng, light, item_weight)]
    heavy_users = np.flatnonzero(heavy)
    inv_w = 1.0 / item_weight
    block = max(1, _CHUNK // n_items)
    for a in range(0, len(heavy_users), block):
        users = heavy_users[a:a + block]
        race = rng.standard_exponential((len(users), n_items))
        race *= inv_w  # arrival time of each item; a user's items are its counts[u] earliest arrivals
        for row, user in enumerate(users.tolist()):
            c = int(counts[user])
            sel = np.argpartition(race[row], c - 1)[:c] if c < n_items else np.arange(n_items)
            parts.append(user * n_items + np.sort(sel))
    keys = np.concatenate(parts)
    keys.sort()
    return keys


def _sample_light(rng: np.random.Generator, counts: np.ndarray, item_weight: np.ndarray) -> np.ndarray:
    n_users, n_items = len(counts), len(item_weight)
    sampler = _AliasSampler(item_weight)
    total = int(counts.sum())
    keys = np.repeat(np.arange(n_users, dtype=np.int64) * n_items, counts)
    items = sampler(rng, total)
    k = min(n_items, total)
    slots = rng.choice(total, size=k, replace=False)
    items[slots] = rng.permutation(n_items)[:k]
    keys += items
    del items, slots
    accepted = _sorted_unique(keys)
    del keys
    have = np.bincount(accepted // n_items, minlength=n_users)
    for rnd in range(1, 200):
        deficit = counts - have
        short = np.flatnonzero(deficit)
        if len(short) == 0:
            return accepted
        d = deficit[short]
        cand_u = np.repeat(short, d * (2 ** min(rnd, 5)) + 4)
        cand_i = sampler(rng, len(cand_u))
        if rnd > 8:  # safety net, not reached in practice: mix in uniform draws
            flip = rng.random(len(cand_i)) < 0.5
            cand_i[flip] = rng.integers(0, n_items, int(flip.sum()))
        cand = cand_u * n_items + cand_i
        del cand_u, cand_i
        if len(accepted):
            pos = np.minimum(np.searchsorted(accepted, cand), len(accepted) - 1)
            cand = cand[accepted[pos] != cand]
        cand = _sorted_unique(cand)
        # keep a random subset of each user's new items, at most its deficit
        cu = cand // n_items
        order = np.lexsort((rng.random(len(cand)), cu))
        cand, cu = cand[order], cu[order]
        rank = np.arange(len(cand)) - np.searchsorted(cu, cu, side="left")
        new = np.sort(cand[rank < deficit[cu]])
        have += np.bincount(new // n_items, minlength=n_users)
        accepted = np.insert(accepted, np.searchsorted(accepted, new), new)
    raise RuntimeError("synthetic: could not fill every user's ratings")  # pragma: no cover


def _items_table(rng: np.random.Generator, n_items: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Items (movieId, title, year, genres), plus each item's genre ids (n, 3; -1 = none) and count."""
    gaps = rng.geometric(1 / 3.35, n_items)  # mean 3.35 between ids, like ML-25M's 209,171 / 62,423
    gaps[0] = 1
    movie_ids = np.cumsum(gaps).astype(np.int64)
    year = np.clip(2020 - np.ceil(rng.gamma(1.3, 17.0, n_items)), 1874, 2019).astype(np.int64)
    no_year = rng.random(n_items) < 0.006
    # genres: 1..3 distinct ones drawn by ML frequency (Gumbel top-k), listed alphabetically
    n_gen = rng.choice(np.arange(1, 4), size=n_items, p=_GENRE_COUNT_P)
    n_gen[rng.random(n_items) < _NO_GENRE_FRACTION] = 0
    gumbel = np.log(_GENRE_WEIGHTS)[None, :] - np.log(-np.log(rng.random((n_items, len(GENRES)))))
    top = np.argsort(-gumbel, axis=1)[:, :3]
    top = np.where(np.arange(3)[None, :] < n_gen[:, None], top, len(GENRES))  # pad sorts last
    top.sort(axis=1)
    genre_ids = np.where(top < len(GENRES), top, -1).astype(np.int16)
    mask = np.zeros(n_items, dtype=np.int64)
    for j in range(3):
        g = genre_ids[:, j].astype(np.int64)
        mask |= np.where(g >= 0, np.left_shift(1, np.maximum(g, 0)), 0)
    uniq, inv = np.unique(mask, return_inverse=True)
    names = np.array(["|".join(GENRES[b] for b in range(len(GENRES)) if m >> b & 1) for m in uniq.tolist()],
                     dtype=object)
    genres = names[inv.ravel()]
    # titles like ML's: "Synthetic Movie 123 (2004)", a few "..., The (2004)" and a few with quotes
    ids = pd.Series(movie_ids).astype(str)
    style = rng.random(n_items)
    stem = np.where(style < 0.04, "Synthetic Movie " + ids + ", The",
                    np.where(style > 0.995, "Synthetic Movie " + ids + ' "Redux"', "Synthetic Movie " + ids))
    title = pd.Series(stem, dtype=object)
    title[~no_year] = title[~no_year] + " (" + pd.Series(year[~no_year]).astype(str).to_numpy() + ")"
    year_col = pd.array(year, dtype="Int64")
    year_col[no_year] = pd.NA
    items = pd.DataFrame({"item": movie_ids, "title": title.to_numpy(dtype=object), "year": year_col,
                          "genres": genres})
    return items, genre_ids, n_gen


# --------------------------------------------------------------------------------------------- generator
def generate_ml25m_like(scale: float = 1.0, seed: int = 0, progress: bool = False) -> MovieLensData:
    """A MovieLens-25M-shaped synthetic release (see the module docstring for what is modelled).

    Guarantees (any valid scale): exactly `ml25m_like_sizes(scale)` users, items and ratings (ratings ==
    round(25,000,095 * scale), no tolerance), every user >= 20 ratings, no duplicate (user, item), ratings in
    {0.5, 1.0, ..., 5.0}, timestamps in [T_MIN, T_MAX], rows sorted by (user, item); every item >= 1 rating
    for scale >= 0.0005; the same (scale, seed) gives the same data (seed >= 0). Raises ValueError for a scale
    that is not a positive finite number or too small to give every user 20 ratings (below ~1e-6).
    """
    n_users, n_items, n_ratings = ml25m_like_sizes(scale)
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    log = _Log(progress)
    rng = np.random.default_rng([GENERATOR_VERSION, int(seed)])

    # users and items
    counts = _user_counts(rng, n_users, n_ratings, int(MAX_USER_FRACTION * n_items))
    items, genre_ids, n_gen = _items_table(rng, n_items)
    pop_item = rng.permutation(n_items)          # popularity rank -> item index
    weights = _popularity_weights(n_items, counts)
    item_rank = np.empty(n_items, dtype=np.int64)
    item_rank[pop_item] = np.arange(n_items)
    log(f"{n_users:,} users, {n_items:,} items")

    keys = _sample_pairs(rng, counts, weights[item_rank])
    u = np.repeat(np.arange(n_users, dtype=np.int32), counts)
    i = (keys - u.astype(np.int64) * n_items).astype(np.int32)
    del keys
    log(f"{n_ratings:,} (user, item) pairs")

    rating = _ratings(rng, counts, weights[item_rank], u, i, genre_ids, n_gen)
    log("ratings")

    timestamp = _timestamps(rng, counts, u, i, items["year"], n_items)
    log("timestamps")

    interactions = pd.DataFrame({
        "user": u.astype(np.int64) + 1,
        "item": items["item"].to_numpy()[i],
        "rating": rating,
        "timestamp": timestamp,
    })
    del u, i
    items = items.reset_index(drop=True)
    fp = hashlib.sha256(f"{NAME}|v{GENERATOR_VERSION}|scale={float(scale)!r}|seed={int(seed)}".encode()).hexdigest()
    data = MovieLensData(
        name=NAME,
        source=f"synthetic: generate_ml25m_like(scale={float(scale)!r}, seed={int(seed)})",
        interactions=interactions,
        items=items,
        users=None,
        fingerprint=f"synthetic-v{GENERATOR_VERSION}-{fp[:16]}",
        rating_scale=(0.5, 5.0),
        notes=[f"scale={float(scale)!r}", f"seed={int(seed)}", f"generator_version={GENERATOR_VERSION}",
               f"synthetic data shaped like ML-25M: {n_users:,} users, {n_items:,} items, {n_ratings:,} ratings"],
    )
    log("frames")
    return data


def _ratings(rng: np.random.Generator, counts: np.ndarray, item_weights: np.ndarray, u: np.ndarray, i: np.ndarray,
             genre_ids: np.ndarray, n_gen: np.ndarray) -> np.ndarray:
    """Each pair's rating: a latent score (user and item biases tied to activity and popularity, genre affinity,
    noise) mapped onto ML-25M's rating histogram by quantile thresholds."""
    n_users, n_items, n_ratings = len(counts), len(item_weights), len(u)
    b_user = -0.25 * _zscore(np.log(counts.astype(np.float64))) + math.sqrt(1 - 0.25 ** 2) * rng.normal(size=n_users)
    b_item = 0.35 * _zscore(np.log(item_weights)) + math.sqrt(1 - 0.35 ** 2) * rng.normal(size=n_items)
    b_user = (math.sqrt(_VAR_USER) * b_user).astype(np.float32)
    b_item = (math.sqrt(_VAR_ITEM) * b_item).astype(np.float32)
    affinity = (math.sqrt(_VAR_GENRE) * rng.normal(size=(n_users, len(GENRES)))).astype(np.float32)
    inv_sqrt_k = (1 / np.sqrt(np.maximum(n_gen, 1))).astype(np.float32)
    gid = np.maximum(genre_ids, 0)
    has = genre_ids >= 0
    z = np.empty(n_ratings, dtype=np.float32)
    sd_noise = math.sqrt(_VAR_NOISE)
    for a in range(0, n_ratings, _CHUNK):
        uu, ii = u[a:a + _CHUNK], i[a:a + _CHUNK]
        s = b_user[uu] + b_item[ii]
        g = np.zeros(len(uu), dtype=np.float32)
        for j in range(3):
            g += np.where(has[ii, j], affinity[uu, gid[ii, j]], np.float32(0))
        s += g * inv_sqrt_k[ii]
        s += rng.normal(0.0, sd_noise, len(uu)).astype(np.float32)
        z[a:a + len(uu)] = s
    sample = z if n_ratings <= 2_000_000 else z[rng.integers(0, n_ratings, 2_000_000)]
    cdf = np.cumsum(ML25M_RATING_COUNTS)[:-1] / ML25M_RATING_COUNTS.sum()
    thresholds = np.quantile(sample, cdf).astype(np.float32)
    return RATING_VALUES[np.searchsorted(thresholds, z, side="right")]


def _timestamps(rng: np.random.Generator, counts: np.ndarray, u: np.ndarray, i: np.ndarray, year: pd.Series,
                n_items: int) -> np.ndarray:
    """Session-like int64 timestamps for rows sorted by (user, item)."""
    n = len(u)
    n_users = len(counts)
    # a release position per item (year + jitter, as a rank in [0, 1)); each user meets items roughly in that order
    y = year.to_numpy(dtype=np.float64, na_value=np.nan)
    y = np.where(np.isnan(y), rng.uniform(1874, 2020, n_items), y + rng.random(n_items))
    release = (np.argsort(np.argsort(y, kind="stable"), kind="stable") / max(1, n_items)).astype(np.float32)
    order_key = np.empty(n, dtype=np.int64)
    for a in range(0, n, _CHUNK):
        v = release[i[a:a + _CHUNK]] + rng.normal(0.0, _ORDER_NOISE, len(i[a:a + _CHUNK])).astype(np.float32)
        q = np.clip((v + 2.0) * (1 << 28), 0, (1 << 30) - 1).astype(np.int64)
        order_key[a:a + len(q)] = (u[a:a + _CHUNK].astype(np.int64) << 31) | q
    perm = np.argsort(order_key)  # position in time order -> row; the user blocks stay where they are
    del order_key

    starts = np.zeros(n_users, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    p_session = rng.beta(*_SESSION_P_BETA, n_users).astype(np.float32)
    gap = np.empty(n, dtype=np.int64)
    for a in range(0, n, _CHUNK):
        m = min(_CHUNK, n - a)
        inside = np.exp(rng.normal(math.log(_IN_SESSION_MEDIAN_S), _IN_SESSION_SIGMA, m))
        inside = np.clip(np.rint(inside), 1, _IN_SESSION_MAX_S).astype(np.int64)
        inside[rng.random(m) < _ZERO_GAP_P] = 0
        between = np.exp(rng.normal(math.log(_SESSION_MEDIAN_S), _SESSION_SIGMA, m))
        between = np.clip(np.rint(between), _SESSION_MIN_S, _SESSION_MAX_S).astype(np.int64)
        new_session = rng.random(m, dtype=np.float32) < p_session[u[a:a + m]]
        gap[a:a + m] = np.where(new_session, between, inside)
    gap[starts] = 0
    rel = np.cumsum(gap, out=gap)  # in place: gap becomes the running sum
    rel -= np.repeat(rel[starts], counts)
    span = rel[starts + counts - 1]
    avail = T_MAX - T_MIN
    too_long = span > avail
    if too_long.any():  # squeeze the few users whose sessions would not fit in 1995..2019
        rows = np.repeat(too_long, counts)
        fac = np.repeat(avail / span[too_long], counts[too_long])
        rel[rows] = np.floor(rel[rows] * fac).astype(np.int64)
        span = rel[starts + counts - 1]
    first = T_MIN + np.floor(rng.random(n_users) * (avail - span + 1)).astype(np.int64)
    rel += np.repeat(first, counts)
    out = np.empty(n, dtype=np.int64)
    out[perm] = rel
    return out


# --------------------------------------------------------------------------------------------- stats
if __name__ == "__main__":  # python -m recsys.data.synthetic --scale 1.0 --out DIR
    from recsys.data.synthetic_files import main

    raise SystemExit(main())
