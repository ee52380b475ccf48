"""Training tasks: what a batch is, which loss, and how a stage (valid/test) is evaluated.

A task owns the data of one protocol and hands models `SequenceBatch`es; models are only called through the
`Recommender` interface (`forward(batch)` = training loss, `score`, `predict_rating`), so NCF, the floors and
SS4Rec all train and evaluate through the same code.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from recsys.data.batch import SequenceBatch, rating_pairs, timed_cases, training_windows
from recsys.data.history import gap_to_target
from recsys.data.prepare import PreparedData, build_sequences
from recsys.evaluation import metrics as M
from recsys.evaluation.protocols import LeaveOneOut, RatingSplit, leave_one_out


def epoch_rng(seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, epoch): a resumed run draws exactly what an unbroken one would."""
    return np.random.default_rng([seed, epoch, salt])


def shard(n: int, rng: np.random.Generator, rank: int, world: int, batch_size: int, shuffle: bool = True):
    """This rank's batches of a permutation all ranks agree on (equal batch counts, so DDP never hangs)."""
    order = rng.permutation(n) if shuffle else np.arange(n)
    per_rank = n // world if world > 1 else n
    mine = order[rank * per_rank:(rank + 1) * per_rank] if world > 1 else order
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def n_batches(n: int, world: int, batch_size: int) -> int:
    """How many batches `shard` gives each rank (for a progress bar, without building them)."""
    per_rank = n // world if world > 1 else n
    return -(-per_rank // batch_size)


@torch.no_grad()
def predict_ratings(model, cases: SequenceBatch, device, batch_size: int, scale: tuple[float, float]) -> np.ndarray:
    """`model.predict_rating` over `cases` in batches, clipped to the rating scale (a prediction outside the scale is
    never better than its edge)."""
    out = [model.predict_rating(cases.take(slice(s, s + batch_size)).to(device)).float().cpu()
           for s in range(0, len(cases), batch_size)]
    pred = torch.cat(out).numpy() if out else np.zeros(0, np.float32)
    return np.clip(pred, *scale)


def window_batches(windows: SequenceBatch, epoch: int, seed: int, batch_size: int, rank: int, world: int):
    """This rank's shuffled batches of training windows, without the padding every row of a batch shares."""
    for idx in shard(len(windows), epoch_rng(seed, epoch), rank, world, batch_size):
        yield windows.take(idx).trimmed()


class RatingTask:
    """Rating regression on (user, item, rating) rows of a RatingSplit; monitored by validation RMSE."""

    monitor, mode = "rmse", "min"

    def __init__(self, prepared: PreparedData, split: RatingSplit):
        inter = prepared.interactions
        self.prepared, self.split = prepared, split
        self.pairs = {}
        for stage, rows in (("train", split.train), ("valid", split.valid), ("test", split.test)):
            part = inter.loc[rows]
            self.pairs[stage] = rating_pairs(part["user_idx"].to_numpy(), part["item_idx"].to_numpy(),
                                             part["rating"].to_numpy())
        self.train = self.pairs["train"]
        assert self.train.target_ratings is not None  # rating pairs carry their ratings
        self.train_mean = float(self.train.target_ratings.mean())
        self.rating_scale = (float(inter["rating"].min()), float(inter["rating"].max()))

    def n_train(self) -> int:
        return len(self.train)

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[SequenceBatch]:
        for idx in shard(self.n_train(), epoch_rng(seed, epoch), rank, world, batch_size):
            yield self.train.take(idx)

    def loss(self, model, batch: SequenceBatch) -> torch.Tensor:
        return model(batch)

    def predict(self, model, stage: str, device, batch_size: int = 65536) -> np.ndarray:
        return predict_ratings(model, self.pairs[stage], device, batch_size, self.rating_scale)

    def evaluate(self, model, stage: str, device, **_) -> tuple[dict, pd.DataFrame]:
        pred = self.predict(model, stage, device)
        pairs = self.pairs[stage]
        assert pairs.targets is not None and pairs.target_ratings is not None
        target = pairs.target_ratings.numpy()
        per_row = M.rating_errors(pred, target, users=pairs.users.numpy())
        per_row.insert(1, "item", pairs.targets.numpy())
        return {"rmse": M.rmse(pred, target), "mae": M.mae(pred, target), "n": int(len(target))}, per_row


class RankingTask:
    """Leave-one-out full ranking; trains on (user, item) pairs (with sampled negatives when the model needs them).

    Monitored by validation NDCG@10. Models score evaluation cases through `score(batch)`.
    """

    monitor, mode = "ndcg@10", "max"

    def __init__(self, prepared: PreparedData, loo: LeaveOneOut, max_len: int, mask_seen: bool = False,
                 ks=(5, 10, 20), num_negatives: int = 0):
        self.prepared, self.loo = prepared, loo
        self.max_len, self.mask_seen, self.ks = max_len, mask_seen, tuple(ks)
        self.num_negatives = num_negatives
        self.n_items = prepared.n_items + 1  # with padding
        train = loo.train_row_ids()
        inter = prepared.interactions.loc[train]
        self.train_users = torch.tensor(inter["user_idx"].to_numpy(), dtype=torch.long)
        self.train_items = torch.tensor(inter["item_idx"].to_numpy(), dtype=torch.long)
        self._cases = {stage: loo.cases(stage, max_len) for stage in ("valid", "test")}

    def n_train(self) -> int:
        return len(self.train_users)

    def cases(self, stage: str) -> SequenceBatch:
        return self._cases[stage]

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[SequenceBatch]:
        rng = epoch_rng(seed, epoch)
        for idx in shard(self.n_train(), rng, rank, world, batch_size):
            t = torch.from_numpy(idx)
            negatives = None
            if self.num_negatives:
                # uniform negatives over real items (1..n); a rare collision with a positive is tolerated, as in
                # the NCF paper's sampler, and keeps sampling O(batch)
                negatives = torch.from_numpy(rng.integers(1, self.n_items, size=(len(idx), self.num_negatives)))
            yield SequenceBatch(users=self.train_users[t], targets=self.train_items[t], negatives=negatives)

    def loss(self, model, batch: SequenceBatch) -> torch.Tensor:
        return model(batch)

    @torch.no_grad()
    def ranks(self, model, stage: str, device, batch_size: int = 1024, progress: bool = False) -> np.ndarray:
        c = self.cases(stage)

        def score_fn(rows: torch.Tensor) -> torch.Tensor:
            return model.score(c.take(rows.cpu()).to(device)).float()

        exclude = self.loo.seen_items(stage) if self.mask_seen else None
        assert c.targets is not None
        targets = c.targets.numpy()
        return M.rank_all(score_fn, np.arange(len(targets)), targets, batch_size=batch_size,
                          exclude=exclude, device=device, progress=progress)

    def evaluate(self, model, stage: str, device, batch_size: int = 1024, progress: bool = False):
        ranks = self.ranks(model, stage, device, batch_size, progress)
        c = self.cases(stage)
        assert (c.targets is not None and c.timestamps is not None and c.lengths is not None
                and c.target_times is not None)  # what every evaluation case carries
        metrics = M.ranking_metrics_from_ranks(ranks, self.ks)
        metrics["n"] = int(len(ranks))
        per_user = M.per_user_ranking(ranks, c.users.numpy(), self.ks)
        per_user.insert(1, "target", c.targets.numpy())
        full_history = self.loo.seqs.lengths[self.loo.eval_rows] - (2 if stage == "valid" else 1)
        per_user.insert(2, "history_length", full_history)
        per_user.insert(3, "gap_before_target",
                        gap_to_target(c.timestamps.numpy(), c.lengths.numpy(), c.target_times.numpy()))
        return metrics, per_user


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    return value < best if mode == "min" else value > best


class SequenceTask(RankingTask):
    """A sequence model's task: all-positions next-item training on windows of each user's training sequence
    (`training_windows`: non-overlapping, or overlapping with a stride so that every target sees its history);
    evaluated by full ranking (HR/NDCG/MRR) and, for a model with a rating, RMSE/MAE on the same held-out
    interactions, which are exactly the rows of the chronological rating protocol."""

    def __init__(self, prepared: PreparedData, loo: LeaveOneOut, max_len: int, mask_seen: bool = False,
                 ks=(5, 10, 20), window_stride: int | None = None):
        super().__init__(prepared, loo, max_len, mask_seen, ks)
        train = loo.train_sequences()
        self.train_seqs = train
        self.windows = training_windows(train, max_len, window_stride)
        self.train_mean = float(train.ratings.mean())
        self.rating_scale = (float(prepared.interactions["rating"].min()),
                             float(prepared.interactions["rating"].max()))

    def n_train(self) -> int:
        return len(self.windows)

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[SequenceBatch]:
        return window_batches(self.windows, epoch, seed, batch_size, rank, world)

    @torch.no_grad()
    def evaluate(self, model, stage: str, device, batch_size: int = 1024, progress: bool = False):
        metrics, per_user = super().evaluate(model, stage, device, batch_size, progress)
        if model.has_rating:
            c = self.cases(stage)
            pred = predict_ratings(model, c, device, batch_size, self.rating_scale)
            assert c.target_ratings is not None  # leave-one-out cases carry the rating of their target
            target = c.target_ratings.numpy()
            metrics.update(rmse=M.rmse(pred, target), mae=M.mae(pred, target))
            per_user["pred_rating"] = pred
            per_user["target_rating"] = target
            per_user["sq_error"] = (pred.astype(np.float64) - target) ** 2
        return metrics, per_user


class SequenceRatingTask:
    """Next-rating prediction for a model that reads a history (a rating-aware sequence model, the recent-residual
    floor): RMSE/MAE on the rows of a `RatingSplit`, each predicted from the same user's earlier ratings.

    - chronological: the rows of the leave-one-out split, each user's valid/test rating predicted from every earlier
      rating by time (ties in file order; the test history holds the validation rating), as `SequenceTask` does;
    - literature splits (random, kfold, ml100k-folds): each held-out rating predicted from the user's ratings in the
      training part (fit rows and validation rows) with a strictly earlier timestamp; same-second ratings are not
      history (`timed_cases`).
    Sequence training runs on windows of each user's fit rows in time order, every position's rating a target.
    `train` holds the fit rows as pairs (what the bias of a floor is fitted on). Monitored by validation RMSE."""

    monitor, mode = "rmse", "min"

    def __init__(self, prepared: PreparedData, split: RatingSplit, max_len: int, window_stride: int | None = None):
        inter = prepared.interactions
        self.prepared, self.split, self.max_len = prepared, split, max_len
        part = inter.loc[split.train]
        self.train = rating_pairs(part["user_idx"].to_numpy(), part["item_idx"].to_numpy(), part["rating"].to_numpy())
        assert self.train.target_ratings is not None  # rating pairs carry their ratings
        self.train_mean = float(self.train.target_ratings.mean())
        self.rating_scale = (float(inter["rating"].min()), float(inter["rating"].max()))
        self._cases, self._full_length = {}, {}
        if split.protocol.split == "chronological":
            loo = leave_one_out(prepared)
            self.train_seqs = loo.train_sequences()
            for stage in ("valid", "test"):
                self._cases[stage] = loo.cases(stage, max_len)
                self._full_length[stage] = loo.seqs.lengths[loo.eval_rows] - (2 if stage == "valid" else 1)
        else:
            self.train_seqs = build_sequences(part)
            pool = build_sequences(inter.loc[np.concatenate([split.train, split.valid])])
            for stage, rows in (("valid", split.valid), ("test", split.test)):
                t = inter.loc[rows]
                self._cases[stage], self._full_length[stage] = timed_cases(
                    pool, t["user_idx"].to_numpy(), t["item_idx"].to_numpy(), t["timestamp"].to_numpy(np.int64),
                    t["rating"].to_numpy(), max_len)
        self.windows = training_windows(self.train_seqs, max_len, window_stride)

    def n_train(self) -> int:
        return len(self.windows)

    def cases(self, stage: str) -> SequenceBatch:
        return self._cases[stage]

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[SequenceBatch]:
        return window_batches(self.windows, epoch, seed, batch_size, rank, world)

    def loss(self, model, batch: SequenceBatch) -> torch.Tensor:
        return model(batch)

    def predict(self, model, stage: str, device, batch_size: int = 1024) -> np.ndarray:
        return predict_ratings(model, self.cases(stage), device, batch_size, self.rating_scale)

    def evaluate(self, model, stage: str, device, batch_size: int = 1024, **_) -> tuple[dict, pd.DataFrame]:
        pred = self.predict(model, stage, device, batch_size)
        c = self.cases(stage)
        assert (c.targets is not None and c.timestamps is not None and c.lengths is not None
                and c.target_times is not None)  # what every evaluation case carries
        assert c.target_ratings is not None
        target = c.target_ratings.numpy()
        per_row = M.rating_errors(pred, target, users=c.users.numpy())
        per_row.insert(1, "item", c.targets.numpy())
        per_row["history_length"] = self._full_length[stage]
        per_row["gap_before_target"] = gap_to_target(c.timestamps.numpy(), c.lengths.numpy(),
                                                     c.target_times.numpy())
        return {"rmse": M.rmse(pred, target), "mae": M.mae(pred, target), "n": int(len(target))}, per_row
