"""Preparation: k-core filtering, contiguous indices (0 = padding) with reversible id maps, and per-user
chronological sequences with a stable tie-break (timestamp, then source-file order).

Everything is vectorised numpy so that ML-25M (25M rows) prepares quickly (docs/benchmarks.md has the figures).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.schema import DataValidationError, MovieLensData

PAD = 0


def timestamped_users_only(interactions: pd.DataFrame) -> pd.DataFrame:
    """Drop every user with at least one rating that lacks a timestamp (the shared ML-1M copy's caveat)."""
    ts = interactions["timestamp"]
    if not ts.isna().any():
        return interactions
    bad_users = interactions.loc[ts.isna(), "user"].unique()
    kept = interactions[~interactions["user"].isin(bad_users)].copy()
    kept["timestamp"] = kept["timestamp"].astype(np.int64)
    return kept


def kcore_filter(interactions: pd.DataFrame, user_k: int = 5, item_k: int = 5, max_iter: int = 1000) -> pd.DataFrame:
    """Iteratively drop users with < user_k and items with < item_k interactions until both hold (row order kept)."""
    if user_k <= 1 and item_k <= 1:
        return interactions
    u_codes, _ = pd.factorize(interactions["user"].to_numpy())
    i_codes, _ = pd.factorize(interactions["item"].to_numpy())
    keep = np.ones(len(interactions), dtype=bool)
    for _ in range(max_iter):
        uc = np.bincount(u_codes[keep], minlength=u_codes.max(initial=-1) + 1)
        ic = np.bincount(i_codes[keep], minlength=i_codes.max(initial=-1) + 1)
        new_keep = keep & (uc[u_codes] >= user_k) & (ic[i_codes] >= item_k)
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
    return interactions[keep]


@dataclass
class IdMap:
    """Raw MovieLens ids <-> contiguous model indices 1..n (index 0 is padding and maps to no raw id)."""

    raw: np.ndarray  # raw[idx - 1] is the raw id of model index idx; sorted ascending, unique

    @classmethod
    def fit(cls, raw_ids) -> IdMap:
        return cls(np.unique(np.asarray(raw_ids, dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def n_with_padding(self) -> int:
        return len(self.raw) + 1

    def to_index(self, raw_ids, unknown: str = "error") -> np.ndarray:
        """Raw ids -> indices; unknown ids raise KeyError (unknown='error') or map to PAD (unknown='pad')."""
        raw_ids = np.asarray(raw_ids, dtype=np.int64)
        pos = np.searchsorted(self.raw, raw_ids)
        pos_c = np.minimum(pos, max(len(self.raw) - 1, 0))
        found = self.raw[pos_c] == raw_ids if len(self.raw) else np.zeros(raw_ids.shape, bool)
        if not np.all(found):
            if unknown == "error":
                missing = raw_ids[~found]
                raise KeyError(f"{len(np.unique(missing))} unknown id(s), e.g. {missing[:5].tolist()}")
            return np.where(found, pos_c + 1, PAD).astype(np.int64)
        return (pos + 1).astype(np.int64)

    def to_raw(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if np.any(idx < 1) or np.any(idx > len(self.raw)):
            raise KeyError(f"index 0 is padding and has no raw id; valid indices are 1..{len(self.raw)}")
        return self.raw[idx - 1]

    def to_list(self) -> list[int]:
        return self.raw.tolist()


@dataclass
class Sequences:
    """Per-user chronological sequences in CSR form.

    Row r holds user `users[r]` (model index) and positions indptr[r]:indptr[r+1] of the flat arrays, ordered by
    (timestamp, source-file order). `row_ids` are positions in the interactions table the sequences came from.
    """

    users: np.ndarray
    indptr: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    ratings: np.ndarray
    row_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row(self, r: int) -> dict:
        s = slice(self.indptr[r], self.indptr[r + 1])
        return {"user": int(self.users[r]), "items": self.items[s], "timestamps": self.timestamps[s],
                "ratings": self.ratings[s]}


@dataclass
class PreparedData:
    """A dataset after filtering and indexing: what models and protocols consume."""

    name: str
    interactions: pd.DataFrame  # filtered canonical rows + user_idx, item_idx (int64); original row order kept
    user_map: IdMap
    item_map: IdMap
    items: pd.DataFrame  # canonical item table restricted to indexed items, with item_idx, sorted by item_idx
    filters: dict

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def sequences(self) -> Sequences:
        return build_sequences(self.interactions)


def chronological_order(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Positions sorting rows by (user, timestamp), equal timestamps kept in source-file (row) order.

    A stable sort of one composite int64 key is much faster than a three-key lexsort at 25M rows; lexsort is the
    fallback when the key could overflow (ids or time spans far beyond MovieLens)."""
    user = np.asarray(user, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    if not len(ts):
        return np.zeros(0, dtype=np.int64)
    lo = int(ts.min())
    span = int(ts.max()) - lo + 1
    if int(user.min()) >= 0 and int(user.max()) < (2**62) // span:
        return np.argsort(user * span + (ts - lo), kind="stable")
    return np.lexsort((np.arange(len(ts)), ts, user))


def build_sequences(interactions: pd.DataFrame) -> Sequences:
    """Sort by (user, timestamp, source order) and cut into per-user CSR rows; needs every timestamp."""
    if interactions["timestamp"].isna().any():
        raise DataValidationError(
            "chronological sequences need a timestamp on every rating; filter with timestamped_users_only first")
    user = interactions["user_idx"].to_numpy()
    ts = interactions["timestamp"].to_numpy(dtype=np.int64)
    perm = chronological_order(user, ts)
    su = user[perm]
    boundaries = np.flatnonzero(np.diff(su)) + 1
    indptr = np.concatenate([[0], boundaries, [len(su)]]).astype(np.int64)
    users = su[indptr[:-1]] if len(su) else np.zeros(0, np.int64)
    return Sequences(
        users=users.astype(np.int64),
        indptr=indptr if len(su) else np.zeros(1, np.int64),
        items=interactions["item_idx"].to_numpy()[perm].astype(np.int64),
        timestamps=ts[perm],
        ratings=interactions["rating"].to_numpy()[perm].astype(np.float32),
        row_ids=interactions.index.to_numpy()[perm].astype(np.int64),
    )


def _sorted_codes(raw_ids: np.ndarray) -> tuple[IdMap, np.ndarray]:
    """IdMap plus each row's index, by hashing (factorize) and sorting only the distinct ids: at 25M rows this is
    several times faster than np.unique's full sort."""
    codes, uniques = pd.factorize(raw_ids)
    order = np.argsort(uniques, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    return IdMap(np.asarray(uniques)[order].astype(np.int64)), rank[codes]


def prepare(data: MovieLensData, user_k: int = 5, item_k: int = 5, timestamped_only: bool = False,
            require_timestamps: bool = False, shuffle_ties: bool = False) -> PreparedData:
    """Filter (optionally timestamped users only, then k-core) and index a dataset.

    Sequences order a user's ratings by time, then by source-file row. `shuffle_ties` puts the rows in a seeded
    random order first, so ratings sharing a second come in random order instead of the file's (ml-latest-small's
    file is sorted by movie id, which a model can learn from same-second runs of ratings)."""
    inter = data.interactions
    if timestamped_only:
        inter = timestamped_users_only(inter)
    elif require_timestamps:
        data.require_timestamps("this chronological protocol")
    n_before = len(inter)
    inter = kcore_filter(inter, user_k, item_k)
    if len(inter) == 0:
        raise DataValidationError(
            f"{data.name}: nothing is left after the {user_k}-core (users) / {item_k}-core (items) filter")
    inter = inter.reset_index(drop=True)
    if shuffle_ties:
        inter = inter.iloc[np.random.default_rng(0).permutation(len(inter))].reset_index(drop=True)
    user_map, inter["user_idx"] = _sorted_codes(inter["user"].to_numpy())
    item_map, inter["item_idx"] = _sorted_codes(inter["item"].to_numpy())
    items = data.items[data.items["item"].isin(item_map.raw)].copy()
    items["item_idx"] = item_map.to_index(items["item"].to_numpy())
    items = items.sort_values("item_idx").reset_index(drop=True)
    filters: dict[str, int | bool | str] = {
        "user_k": user_k, "item_k": item_k, "timestamped_users_only": bool(timestamped_only),
        "ratings_before_filter": int(n_before), "ratings_after_filter": int(len(inter))}
    if shuffle_ties:
        filters["tie_order"] = "shuffled (seeded random order among ratings of one user in the same second)"
    return PreparedData(data.name, inter, user_map, item_map, items, filters)


def load_prepared(train, download: bool = True, data_dir: str | None = None):
    """The dataset and its filtered, indexed form exactly as a run with these settings sees them."""
    from recsys.data.loader import load_dataset

    data = load_dataset(train.dataset, data_dir or train.data_dir, download=download)
    prepared = prepare(data, train.user_k, train.item_k, timestamped_only=bool(train.timestamped_users_only),
                       require_timestamps=train.objective == "ranking" or train.split == "chronological",
                       shuffle_ties=getattr(train, "tie_order", "file") == "shuffled")
    return data, prepared
