"""Training tasks: what a batch is, what the loss is, and how a stage (valid/test) is evaluated.

A task owns the data of one protocol; models only have to offer `forward(users, items)` (rating / pointwise
ranking) or `score_cases(batch) -> [b, n_items]` (full ranking), so NCF, the floors and SS4Rec all train and
evaluate through the same code.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from recsys.data.prepare import PreparedData
from recsys.evaluation import metrics as M
from recsys.evaluation.protocols import LeaveOneOut, RatingSplit


def epoch_rng(seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, epoch): a resumed run draws exactly what an unbroken one would."""
    return np.random.default_rng([seed, epoch, salt])


def shard(n: int, rng: np.random.Generator, rank: int, world: int, batch_size: int, shuffle: bool = True):
    """This rank's batches of a permutation all ranks agree on (equal batch counts, so DDP never hangs)."""
    order = rng.permutation(n) if shuffle else np.arange(n)
    per_rank = n // world if world > 1 else n
    mine = order[rank * per_rank:(rank + 1) * per_rank] if world > 1 else order
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


class RatingTask:
    """Rating regression on (user, item, rating) rows of a RatingSplit; monitored by validation RMSE."""

    monitor, mode = "rmse", "min"

    def __init__(self, prepared: PreparedData, split: RatingSplit):
        inter = prepared.interactions
        self.prepared, self.split = prepared, split
        self.arrays = {}
        for stage, rows in (("train", split.train), ("valid", split.valid), ("test", split.test)):
            part = inter.loc[rows]
            self.arrays[stage] = {
                "users": torch.tensor(part["user_idx"].to_numpy(), dtype=torch.long),
                "items": torch.tensor(part["item_idx"].to_numpy(), dtype=torch.long),
                "ratings": torch.tensor(part["rating"].to_numpy(), dtype=torch.float32),
            }
        self.train_mean = float(self.arrays["train"]["ratings"].mean())
        self.rating_scale = (float(inter["rating"].min()), float(inter["rating"].max()))

    def n_train(self) -> int:
        return len(self.arrays["train"]["users"])

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[dict]:
        a = self.arrays["train"]
        for idx in shard(self.n_train(), epoch_rng(seed, epoch), rank, world, batch_size):
            idx = torch.from_numpy(idx)
            yield {k: v[idx] for k, v in a.items()}

    def loss(self, model, batch: dict) -> torch.Tensor:
        return F.mse_loss(model(batch["users"], batch["items"]).float(), batch["ratings"])

    @torch.no_grad()
    def predict(self, model, stage: str, device, batch_size: int = 65536) -> np.ndarray:
        a = self.arrays[stage]
        out = []
        for s in range(0, len(a["users"]), batch_size):
            out.append(model(a["users"][s:s + batch_size].to(device), a["items"][s:s + batch_size].to(device))
                       .float().cpu())
        pred = torch.cat(out).numpy() if out else np.zeros(0, np.float32)
        return np.clip(pred, *self.rating_scale)  # a prediction outside the scale is never better than its edge

    def evaluate(self, model, stage: str, device, **_) -> tuple[dict, pd.DataFrame]:
        pred = self.predict(model, stage, device)
        a = self.arrays[stage]
        target = a["ratings"].numpy()
        per_row = M.rating_errors(pred, target, users=a["users"].numpy())
        per_row.insert(1, "item", a["items"].numpy())
        return {"rmse": M.rmse(pred, target), "mae": M.mae(pred, target), "n": int(len(target))}, per_row


class RankingTask:
    """Leave-one-out full ranking; trains pointwise on (user, item) with sampled negatives (BCE) or a full softmax.

    Monitored by validation NDCG@10. Models score evaluation cases through `score_cases(batch)`.
    """

    monitor, mode = "ndcg@10", "max"

    def __init__(self, prepared: PreparedData, loo: LeaveOneOut, max_len: int, mask_seen: bool = False,
                 ks=(5, 10, 20), loss: str = "bce", num_negatives: int = 4):
        self.prepared, self.loo = prepared, loo
        self.max_len, self.mask_seen, self.ks = max_len, mask_seen, tuple(ks)
        self.loss_name, self.num_negatives = loss, num_negatives
        self.n_items = prepared.n_items + 1  # with padding
        train = loo.train_row_ids()
        inter = prepared.interactions.loc[train]
        self.train_users = torch.tensor(inter["user_idx"].to_numpy(), dtype=torch.long)
        self.train_items = torch.tensor(inter["item_idx"].to_numpy(), dtype=torch.long)
        self._cases = {stage: loo.cases(stage, max_len) for stage in ("valid", "test")}

    def n_train(self) -> int:
        return len(self.train_users)

    def cases(self, stage: str) -> dict:
        return self._cases[stage]

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[dict]:
        rng = epoch_rng(seed, epoch)
        for idx in shard(self.n_train(), rng, rank, world, batch_size):
            t = torch.from_numpy(idx)
            batch = {"users": self.train_users[t], "items": self.train_items[t]}
            if self.loss_name == "bce":
                # uniform negatives over real items (1..n); a rare collision with a positive is tolerated, as in
                # the NCF paper's sampler, and keeps sampling O(batch)
                batch["negatives"] = torch.from_numpy(
                    rng.integers(1, self.n_items, size=(len(idx), self.num_negatives)))
            yield batch

    def loss(self, model, batch: dict) -> torch.Tensor:
        users, items = batch["users"], batch["items"]
        if self.loss_name == "softmax":
            logits = model(users, None).float()
            logits[:, 0] = float("-inf")
            return F.cross_entropy(logits.float(), items)
        pos = model(users, items).float()
        neg = model(users[:, None].expand_as(batch["negatives"]), batch["negatives"]).float()
        return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="sum")
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="sum")) / len(users)

    @torch.no_grad()
    def ranks(self, model, stage: str, device, batch_size: int = 1024, progress: bool = False) -> np.ndarray:
        c = self.cases(stage)
        keys = ("users", "items", "timestamps", "lengths", "target_times")
        tensors = {k: torch.as_tensor(c[k]) for k in keys}

        def score_fn(rows: torch.Tensor) -> torch.Tensor:
            rows = rows.cpu()
            return model.score_cases({k: v[rows].to(device) for k, v in tensors.items()}).float()

        exclude = self.loo.seen_items(stage) if self.mask_seen else None
        return M.rank_all(score_fn, np.arange(len(c["targets"])), c["targets"], batch_size=batch_size,
                          exclude=exclude, device=device, progress=progress)

    def evaluate(self, model, stage: str, device, batch_size: int = 1024, progress: bool = False):
        ranks = self.ranks(model, stage, device, batch_size, progress)
        c = self.cases(stage)
        metrics = M.ranking_metrics_from_ranks(ranks, self.ks)
        metrics["n"] = int(len(ranks))
        per_user = M.per_user_ranking(ranks, c["users"], self.ks)
        per_user.insert(1, "target", c["targets"])
        full_history = self.loo.seqs.lengths[self.loo.eval_rows] - (2 if stage == "valid" else 1)
        per_user.insert(2, "history_length", full_history)
        gap = c["target_times"] - np.where(c["lengths"] > 0, c["timestamps"][np.arange(len(ranks)),
                                                                                np.maximum(c["lengths"] - 1, 0)], 0)
        per_user.insert(3, "gap_before_target", gap)
        return metrics, per_user


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    return value < best if mode == "min" else value > best


def sequence_windows(seqs, max_len: int) -> dict:
    """Cut each training sequence into consecutive windows of max_len inputs and their next-item targets.

    A user's items i_0..i_{n-1} give targets i_1..i_{n-1}, each predicted exactly once; windows are cut from the
    end, so the most recent history is always whole. Arrays are [W, max_len], inputs left-aligned and 0-padded.
    """
    lengths = seqs.lengths
    n_targets = np.maximum(lengths - 1, 0)
    n_windows = -(-n_targets // max_len)
    row = np.repeat(np.arange(len(lengths)), n_windows)
    k = np.arange(len(row)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)  # window index from the end
    starts = seqs.indptr[:-1][row]
    end = starts + lengths[row] - k * max_len           # exclusive end of this window's targets (absolute)
    first_target = np.maximum(starts + 1, end - max_len)
    n_in = end - first_target                           # inputs == targets in count
    cols = np.arange(max_len)
    valid = cols[None, :] < n_in[:, None]
    inp = np.where(valid, first_target[:, None] - 1 + cols[None, :], 0)
    tgt = np.where(valid, first_target[:, None] + cols[None, :], 0)
    take = lambda a, idx: np.where(valid, a[idx], 0)  # noqa: E731
    return {
        "items": take(seqs.items, inp).astype(np.int64),
        "timestamps": take(seqs.timestamps, inp).astype(np.int64),
        "lengths": n_in.astype(np.int64),
        "targets": take(seqs.items, tgt).astype(np.int64),
        "target_ratings": take(seqs.ratings, tgt).astype(np.float32),
        "target_times": seqs.timestamps[end - 1].astype(np.int64),
        "users": seqs.users[row].astype(np.int64),
    }


class SequenceTask(RankingTask):
    """SS4Rec's task: all-positions next-item training on windows of each user's training sequence; evaluated by
    full ranking (HR/NDCG/MRR) and, with a rating head, RMSE/MAE on the same held-out interactions, which are
    exactly the rows of the chronological rating protocol."""

    def __init__(self, prepared: PreparedData, loo: LeaveOneOut, max_len: int, mask_seen: bool = False,
                 ks=(5, 10, 20), rating_weight: float = 1.0):
        super().__init__(prepared, loo, max_len, mask_seen, ks)
        self.rating_weight = rating_weight
        train = loo.train_sequences()
        self.windows = {k: torch.from_numpy(v) for k, v in sequence_windows(train, max_len).items()}
        self.train_mean = float(train.ratings.mean())
        self.rating_scale = (float(prepared.interactions["rating"].min()),
                             float(prepared.interactions["rating"].max()))

    def n_train(self) -> int:
        return len(self.windows["lengths"])

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[dict]:
        for idx in shard(self.n_train(), epoch_rng(seed, epoch), rank, world, batch_size):
            t = torch.from_numpy(idx)
            batch = {k: v[t] for k, v in self.windows.items() if k != "users"}
            width = int(batch["lengths"].max())  # trim the padding every row of this batch shares
            for k in ("items", "timestamps", "targets", "target_ratings"):
                batch[k] = batch[k][:, :width]
            yield batch

    def loss(self, model, batch: dict) -> torch.Tensor:
        out = model(batch)
        return out["loss"] + self.rating_weight * out["mse"] if "mse" in out else out["loss"]

    @torch.no_grad()
    def evaluate(self, model, stage: str, device, batch_size: int = 1024, progress: bool = False):
        metrics, per_user = super().evaluate(model, stage, device, batch_size, progress)
        if getattr(model, "has_rating_head", False):
            c = self.cases(stage)
            preds = []
            for s in range(0, len(c["targets"]), batch_size):
                sl = slice(s, s + batch_size)
                batch = {k: torch.as_tensor(c[k][sl]).to(device)
                         for k in ("items", "timestamps", "lengths", "target_times")}
                preds.append(model.predict_rating(batch, torch.as_tensor(c["targets"][sl]).to(device)).float().cpu())
            pred = np.clip(torch.cat(preds).numpy(), *self.rating_scale)
            target = c["target_ratings"]
            metrics.update(rmse=M.rmse(pred, target), mae=M.mae(pred, target))
            per_user["pred_rating"] = pred
            per_user["target_rating"] = target
            per_user["sq_error"] = (pred.astype(np.float64) - target) ** 2
        return metrics, per_user
