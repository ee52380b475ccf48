"""The one canonical in-memory form of every MovieLens release, and the errors the data layer raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# Column names and dtypes of the canonical tables. Raw MovieLens ids are kept as they are in the files;
# contiguous model indices are made later (recsys.data.prepare).
INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp")
ITEM_COLUMNS = ("item", "title", "year", "genres")


class DataError(Exception):
    """Base class for every data-layer error; its message is meant to be shown to a person as is."""


class DataValidationError(DataError):
    """A source file is malformed; the message names the file and, where it can, the line."""


class DataUnavailableError(DataError):
    """A dataset cannot be found locally and cannot be downloaded (no network, unknown name, ...)."""


@dataclass
class MovieLensData:
    """A MovieLens release in canonical form.

    interactions: one row per rating, in source-file order (the stable tie-break for equal timestamps):
        user int64, item int64, rating float32, timestamp int64 seconds (pandas nullable Int64 only when the
        source lacks some timestamps, as the shared ML-1M copy does).
    items: item int64, title str, year Int64 (nullable), genres str ('|'-separated, '' when none).
    users: the release's user table (user int64 + demographic columns) or None when it has none.
    source: where the data came from, as every run.json records it: never an absolute path of this machine
        (recsys.data.integrity.source_label: the embedded copy by package and version, a folder as the user gave it).
    """

    name: str
    source: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    fingerprint: str = ""
    rating_scale: tuple[float, float] = (1.0, 5.0)
    notes: list[str] = field(default_factory=list)

    @property
    def has_all_timestamps(self) -> bool:
        ts = self.interactions["timestamp"]
        return not bool(ts.isna().any()) if ts.dtype == "Int64" else True

    @property
    def n_missing_timestamps(self) -> int:
        return int(self.interactions["timestamp"].isna().sum())

    def require_timestamps(self, purpose: str) -> None:
        """Refuse a chronological protocol on data with rows that lack a timestamp."""
        missing = self.n_missing_timestamps
        if missing:
            users = self.interactions.loc[self.interactions["timestamp"].isna(), "user"].nunique()
            raise DataValidationError(
                f"{self.name}: {purpose} needs a timestamp on every rating, but {missing:,} ratings of "
                f"{users:,} users have none ({self.source}). Keep only users whose ratings are all timestamped "
                f"(scripts/train.py --set timestamped_users_only=true; in code prepare(..., timestamped_only=True)); "
                f"for the shared ML-1M "
                f"copy that is users 1..2999, which is not comparable to published full-ML-1M numbers."
            )

    def stats(self) -> dict:
        """Headline numbers: the ones `python -m recsys.data info` prints."""
        inter = self.interactions
        ts = inter["timestamp"].dropna()
        out: dict[str, Any] = {
            "dataset": self.name,
            "source": self.source,
            "ratings": int(len(inter)),
            "users": int(inter["user"].nunique()),
            "items": int(len(self.items)),
            "rated_items": int(inter["item"].nunique()),
            "rating_min": float(inter["rating"].min()) if len(inter) else None,
            "rating_max": float(inter["rating"].max()) if len(inter) else None,
            "rating_values": sorted(float(v) for v in np.unique(inter["rating"].to_numpy())),
            "timestamp_min": int(ts.min()) if len(ts) else None,
            "timestamp_max": int(ts.max()) if len(ts) else None,
            "missing_timestamps": self.n_missing_timestamps,
            "fingerprint": self.fingerprint,
        }
        if len(ts):
            out["time_min"] = pd.Timestamp(int(ts.min()), unit="s", tz="UTC").isoformat()
            out["time_max"] = pd.Timestamp(int(ts.max()), unit="s", tz="UTC").isoformat()
        out["density"] = out["ratings"] / max(1, out["users"] * out["rated_items"])
        return out
