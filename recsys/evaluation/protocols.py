"""Evaluation protocols: which interactions train, which validate, which test, and what a model may see.

Ranking protocol (RecBole-compatible, what the SS4Rec paper used): 5-core users and items, leave-one-out by time
(each user's last interaction is the test target, the second-to-last the validation target, the rest train), full
ranking over every item, seen items NOT masked unless asked, histories cut to the last `max_len` items.

Rating protocol: the same chronological hold-out, predicting the held-out ratings from strictly earlier history;
plus the literature splits for RMSE (random 90/10 with a seed, k-fold, the official ML-100K u1..u5 folds).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.batch import SequenceBatch, evaluation_cases
from recsys.data.prepare import PreparedData, Sequences
from recsys.data.schema import DataValidationError

STAGES = ("valid", "test")


@dataclass(frozen=True)
class RankingProtocol:
    """Settings of the leave-one-out full-ranking protocol; `describe()` is what run.json records. No defaults of its
    own: the resolved configuration (`TrainConfig`) is the one owner of every setting (`from_config`)."""

    user_k: int
    item_k: int
    max_len: int
    mask_seen: bool
    timestamped_users_only: bool
    ks: tuple[int, ...]

    @classmethod
    def from_config(cls, t) -> RankingProtocol:
        """The protocol of a resolved `TrainConfig`."""
        return cls(user_k=int(t.user_k), item_k=int(t.item_k), max_len=int(t.max_len), mask_seen=bool(t.mask_seen),
                   timestamped_users_only=bool(t.timestamped_users_only), ks=tuple(int(k) for k in t.ks))

    def describe(self) -> dict:
        d = asdict(self)
        d.update(name="ranking", split="leave_one_out_by_time", candidates="all items (full ranking)",
                 ties="pessimistic: rank = 1 + #other items scoring >= the target",
                 history_order="timestamp, then source-file order", ks=list(self.ks))
        return d


@dataclass(frozen=True)
class RatingProtocol:
    """Settings of a rating-prediction split; `describe()` is what run.json records.

    split: 'chronological' (leave-one-out by time, as the ranking protocol), 'random' (test_frac, seed),
    'kfold' (k folds, fold 1..k, seed) or 'ml100k-folds' (official u{fold}.base/.test, needs the original files).
    For the literature splits, `valid_frac` of the training rows (seeded) is held out for early stopping, so the
    test rows are never used to pick a model.
    """

    split: str
    user_k: int
    item_k: int
    test_frac: float
    valid_frac: float
    k: int
    fold: int
    seed: int
    timestamped_users_only: bool

    @classmethod
    def from_config(cls, t) -> RatingProtocol:
        """The protocol of a resolved `TrainConfig` (its defaults are the only ones)."""
        return cls(split=str(t.split), user_k=int(t.user_k), item_k=int(t.item_k), test_frac=float(t.test_frac),
                   valid_frac=float(t.valid_frac), k=int(t.k), fold=int(t.fold), seed=int(t.seed),
                   timestamped_users_only=bool(t.timestamped_users_only))

    def describe(self) -> dict:
        d = asdict(self)
        d["name"] = "rating"
        return d


@dataclass
class LeaveOneOut:
    """Leave-one-out by time over per-user sequences.

    For sequence row r with n = length >= 3: positions [start, start+n-2) train, start+n-2 validation target,
    start+n-1 test target. Users with fewer than 3 interactions only train (none remain after a 5-core filter).
    """

    seqs: Sequences
    valid_pos: np.ndarray  # flat position of each evaluable row's validation target
    test_pos: np.ndarray
    eval_rows: np.ndarray  # sequence rows that have valid and test targets

    @classmethod
    def from_sequences(cls, seqs: Sequences) -> LeaveOneOut:
        lengths = seqs.lengths
        eval_rows = np.flatnonzero(lengths >= 3)
        ends = seqs.indptr[1:][eval_rows]
        return cls(seqs, ends - 2, ends - 1, eval_rows)

    def target_pos(self, stage: str) -> np.ndarray:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        return self.valid_pos if stage == "valid" else self.test_pos

    def train_mask(self) -> np.ndarray:
        """Boolean mask over flat sequence positions that are training interactions."""
        mask = np.ones(len(self.seqs.items), dtype=bool)
        mask[self.valid_pos] = False
        mask[self.test_pos] = False
        return mask

    def train_row_ids(self) -> np.ndarray:
        """Row ids (in PreparedData.interactions) of the training interactions: what NCF may fit."""
        return self.seqs.row_ids[self.train_mask()]

    def holdout_row_ids(self, stage: str) -> np.ndarray:
        return self.seqs.row_ids[self.target_pos(stage)]

    def train_sequences(self) -> Sequences:
        """The training part of every sequence (each user's last two interactions removed)."""
        mask = self.train_mask()
        s = self.seqs
        row_of_pos = np.repeat(np.arange(len(s)), s.lengths)
        counts = np.bincount(row_of_pos[mask], minlength=len(s))
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Sequences(s.users, indptr, s.items[mask], s.timestamps[mask], s.ratings[mask], s.row_ids[mask])

    def cases(self, stage: str, max_len: int) -> SequenceBatch:
        """Evaluation cases: for each evaluable user, the last `max_len` items strictly before the target
        (validation histories end before the validation target, test histories include it)."""
        return evaluation_cases(self.seqs, self.eval_rows, self.target_pos(stage), max_len)

    def seen_items(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, items) of every item each evaluable user interacted with before the target (for masking)."""
        tpos = self.target_pos(stage)
        starts = self.seqs.indptr[:-1][self.eval_rows]
        lengths = tpos - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return indptr, self.seqs.items[flat]


def leave_one_out(prepared: PreparedData) -> LeaveOneOut:
    """Leave-one-out by time on a prepared (filtered, indexed) dataset."""
    return LeaveOneOut.from_sequences(prepared.sequences())


@dataclass
class RatingSplit:
    """Row ids (into PreparedData.interactions) of the train, validation and test interactions."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    protocol: RatingProtocol
    notes: list[str] = field(default_factory=list)

    def frames(self, prepared: PreparedData) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        inter = prepared.interactions
        return inter.loc[self.train], inter.loc[self.valid], inter.loc[self.test]


def _carve_valid(train: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 7919)  # a different stream from the one that drew the test rows
    perm = rng.permutation(train)
    n_valid = int(round(frac * len(train)))
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def random_split(n_rows: int, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of row ids into (train, test)."""
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), not {test_frac}")
    perm = np.random.default_rng(seed).permutation(n_rows)
    n_test = int(round(test_frac * n_rows))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def kfold_split(n_rows: int, k: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-fold: fold f (1..k) is the test part; every row is tested in exactly one fold."""
    if not 1 <= fold <= k:
        raise ValueError(f"fold must be in 1..{k}, not {fold}")
    assignment = np.random.default_rng(seed).permutation(n_rows) % k
    return np.flatnonzero(assignment != fold - 1), np.flatnonzero(assignment == fold - 1)


def ml100k_official_fold(prepared: PreparedData, data_dir: str | Path, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """The original u{fold}.base / u{fold}.test files (80/20 per fold), matched to rows by (user, item)."""
    data_dir = Path(data_dir)
    if not 1 <= fold <= 5:
        raise ValueError(f"ML-100K official folds are u1..u5, not u{fold}")
    out = []
    inter = prepared.interactions
    key = pd.MultiIndex.from_arrays([inter["user"].to_numpy(), inter["item"].to_numpy()])
    for part in ("base", "test"):
        path = data_dir / f"u{fold}.{part}"
        if not path.exists():
            raise DataValidationError(
                f"{path}: missing; the official ML-100K folds need the original GroupLens files "
                f"(e.g. --data-dir ../shared/movielens/ml-100k), not the embedded RecBole copy")
        df = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "timestamp"])
        pos = key.get_indexer(pd.MultiIndex.from_arrays([df["user"].to_numpy(), df["item"].to_numpy()]))
        if (pos < 0).any():
            i = int(np.argmax(pos < 0))
            raise DataValidationError(f"{path}:{i + 1}: (user {df['user'].iloc[i]}, item {df['item'].iloc[i]}) is "
                                      f"not in the dataset (filtered out, or the fold is from another release)")
        out.append(np.sort(pos))
    return out[0], out[1]


def rating_split(prepared: PreparedData, protocol: RatingProtocol, data_dir: str | Path | None = None) -> RatingSplit:
    """Build the train/valid/test rows of a rating protocol."""
    n = len(prepared.interactions)
    if protocol.split == "chronological":
        loo = leave_one_out(prepared)
        return RatingSplit(np.sort(loo.train_row_ids()), np.sort(loo.holdout_row_ids("valid")),
                           np.sort(loo.holdout_row_ids("test")), protocol,
                           ["valid/test: each user's second-to-last / last rating by time; train: all earlier ones"])
    if protocol.split == "random":
        train, test = random_split(n, protocol.test_frac, protocol.seed)
    elif protocol.split == "kfold":
        train, test = kfold_split(n, protocol.k, protocol.fold, protocol.seed)
    elif protocol.split == "ml100k-folds":
        if data_dir is None:
            raise DataValidationError("the ml100k-folds split needs --data-dir with the original ML-100K files")
        train, test = ml100k_official_fold(prepared, data_dir, protocol.fold)
    else:
        raise ValueError(f"unknown rating split {protocol.split!r}; use chronological, random, kfold or ml100k-folds")
    train, valid = _carve_valid(train, protocol.valid_frac, protocol.seed)
    return RatingSplit(train, valid, test, protocol,
                       [f"validation: {protocol.valid_frac:.0%} of the training rows (seeded), for early stopping"])
