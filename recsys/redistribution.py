"""Which datasets' runs may be shipped as they are, and what a run of the others leaves out.

GroupLens's ML-1M, ML-10M, ML-20M and ML-25M licences forbid redistributing the data, so nothing shipped may let
anyone read back one of their ratings, timestamps or (user, movie) pairs. A run trained on them is written
licence-safe from the start: `id_maps.npz` holds the number of users and movies and a sha256 of each raw-id list
(enough to check that a copy of the data given later is the one the run saw, not to read an id back), and the
per-user test results are keyed by the model's contiguous user index, without the raw user id or the held-out
movie. Weights, metrics, ranks, history lengths and gaps (durations, not dates) stay. Pages that need the raw ids
(Live, Trajectories, Explore) rebuild them from the data folder and check them against the digests.
The embedded ML-100K (from the recbole wheel) and ml-latest-small (redistributable with its README) keep raw ids.
"""
from __future__ import annotations

import hashlib

import numpy as np

RESTRICTED = frozenset({"ml-1m", "ml-10m", "ml-20m", "ml-25m"})
WITHHELD_COLUMNS = ("user_id", "target")  # per-user test results: the raw user id and the held-out movie's index


def restricted(dataset: str | None) -> bool:
    """True for a release whose ratings may not be redistributed (its runs are written licence-safe)."""
    return str(dataset or "").lower() in RESTRICTED


def ids_digest(ids) -> str:
    """sha256 of a raw-id list (int64, in index order): the same list always gives the same digest."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(ids, dtype=np.int64)).tobytes()).hexdigest()
