"""The one batch type every model reads, and its producers side by side: training windows, evaluation cases and
(user, item, rating) pairs.

Sequence fields are left-aligned and 0-padded ([B, L]); `lengths` says how many positions are real. Training
windows carry a target per position ([B, L], all-positions training); evaluation cases one target per row ([B]).
A model that only knows users (NCF, the floors) reads `users` and `targets`; a sequence model reads the history.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from recsys.data.history import history_positions
from recsys.data.prepare import Sequences


@dataclass
class SequenceBatch:
    users: torch.Tensor                        # [B] user index (0: unknown user)
    items: torch.Tensor | None = None          # [B, L] history item indices, 0 = padding
    timestamps: torch.Tensor | None = None     # [B, L] int64 seconds, 0 on padding
    lengths: torch.Tensor | None = None        # [B] real history length
    targets: torch.Tensor | None = None        # [B] (cases, pairs) or [B, L] (windows); 0 = no target
    target_times: torch.Tensor | None = None   # [B] time of the (last) target
    target_ratings: torch.Tensor | None = None  # like targets, float32
    negatives: torch.Tensor | None = None      # [B, K] sampled negative items (pointwise ranking losses)
    ratings: torch.Tensor | None = None        # [B, L] the history's own ratings (0 on padding), float32: what a
                                               # rating-aware model reads; never the rating it predicts

    def __len__(self) -> int:
        return len(self.users)

    def _map(self, fn) -> SequenceBatch:
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def take(self, rows) -> SequenceBatch:
        """The rows `rows` (index tensor, array or slice) of every field."""
        if isinstance(rows, np.ndarray):
            rows = torch.from_numpy(rows)
        return self._map(lambda t: t[rows])

    def to(self, device, non_blocking: bool = False) -> SequenceBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> SequenceBatch:
        return self._map(lambda t: t.pin_memory())

    def trimmed(self) -> SequenceBatch:
        """The same batch without the padding columns every row shares."""
        if self.items is None or not len(self):
            return self
        assert self.lengths is not None, "a batch with histories says how long they are"
        width = max(int(self.lengths.max()), 1)
        per_position = {"items", "timestamps", "targets", "target_ratings", "ratings"}  # [B, L] (targets: windows)
        return replace(self, **{name: getattr(self, name)[:, :width] for name in per_position
                                if getattr(self, name) is not None and getattr(self, name).dim() == 2})


def _t(a, dtype=None) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a if dtype is None else np.asarray(a).astype(dtype)))


def training_windows(seqs: Sequences, max_len: int, stride: int | None = None) -> SequenceBatch:
    """Training windows of up to max_len inputs and their next-item targets, each target in the loss exactly once.

    A user's items i_0..i_{n-1} give targets i_1..i_{n-1}. Target t's history in RecBole's per-prefix samples is
    i_{max(0, t-max_len)}..i_{t-1}.

    - `stride=None` (non-overlapping, what runs before issue 11 used): consecutive windows cut from the end, every
      position in the loss. A target early in a later window sees fewer than max_len items although more exist.
    - `stride=s` (1 <= s <= max_len): the first window holds targets 1..min(n-1, max_len), each with its whole
      history; later targets come in windows of exactly max_len inputs that end at their last target, cut from the
      end every s targets, with only their last s positions (those not already covered) in the loss, so every
      target sees at least max_len - s + 1 items of history. `stride=1` gives each target after max_len its own
      window: exactly RecBole's per-prefix samples. Positions outside the loss have target 0.

    `target_times` is the time of each window's last input's target (the last position's gap to the target).
    """
    lengths = seqs.lengths
    n_targets = np.maximum(lengths - 1, 0)
    if stride is None:
        n_windows = -(-n_targets // max_len)
        row = np.repeat(np.arange(len(lengths)), n_windows)
        k = np.arange(len(row)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)  # window index from end
        last = n_targets[row] - k * max_len           # this window's last target (index within the sequence)
        loss_from = np.zeros(len(row), np.int64)      # first window position in the loss
    else:
        stride = int(stride)
        if not 1 <= stride <= max_len:
            raise ValueError(f"window stride must be in 1..max_len ({max_len}), not {stride}")
        extra = np.maximum(n_targets - max_len, 0)      # targets after the first window
        n_extra = -(-extra // stride)
        has_first = (n_targets > 0).astype(np.int64)
        row = np.concatenate([np.flatnonzero(has_first), np.repeat(np.arange(len(lengths)), n_extra)])
        k = np.arange(int(n_extra.sum())) - np.repeat(np.cumsum(n_extra) - n_extra, n_extra)
        extra_rows = row[int(has_first.sum()):]
        extra_last = n_targets[extra_rows] - k * stride
        last = np.concatenate([np.minimum(n_targets[row[:int(has_first.sum())]], max_len), extra_last])
        # a window's position j predicts target last - max_len + 1 + j; in the loss only targets > max(max_len,
        # last - stride), i.e. positions j >= max(max_len, last - stride) - last + max_len
        extra_from = np.maximum(max_len, extra_last - stride) - extra_last + max_len
        loss_from = np.concatenate([np.zeros(int(has_first.sum()), np.int64), extra_from])
        order = np.lexsort((-last, row))               # by user, then latest window first (like stride=None)
        row, last, loss_from = row[order], last[order], loss_from[order]
    starts = seqs.indptr[:-1][row]
    inp, n_in = history_positions(starts, starts + last, max_len)  # the max_len items before the last target
    cols = np.arange(max_len)[None, :]
    valid = cols < n_in[:, None]
    in_loss = valid & (cols >= loss_from[:, None])
    take = lambda a, idx, mask: np.where(mask, a[idx], 0)  # noqa: E731
    return SequenceBatch(
        users=_t(seqs.users[row], np.int64),
        items=_t(take(seqs.items, inp, valid), np.int64),
        timestamps=_t(take(seqs.timestamps, inp, valid), np.int64),
        lengths=_t(n_in, np.int64),
        targets=_t(take(seqs.items, inp + 1, in_loss), np.int64),
        target_times=_t(seqs.timestamps[starts + last] if len(row) else np.zeros(0), np.int64),
        target_ratings=_t(take(seqs.ratings, inp + 1, in_loss), np.float32),
        ratings=_t(take(seqs.ratings, inp, valid), np.float32),
    )


def evaluation_cases(seqs: Sequences, rows: np.ndarray, target_pos: np.ndarray, max_len: int) -> SequenceBatch:
    """One case per sequence row in `rows`: the last max_len items strictly before its target at flat position
    `target_pos` (RecBole's layout), the target, its time and its rating."""
    pos, lengths = history_positions(seqs.indptr[:-1][rows], target_pos, max_len)
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    n = len(target_pos)
    items = np.where(valid, seqs.items[pos], 0) if n else np.zeros((0, max_len), np.int64)
    times = np.where(valid, seqs.timestamps[pos], 0) if n else np.zeros((0, max_len), np.int64)
    ratings = np.where(valid, seqs.ratings[pos], 0) if n else np.zeros((0, max_len), np.float32)
    return SequenceBatch(
        users=_t(seqs.users[rows], np.int64), items=_t(items, np.int64), timestamps=_t(times, np.int64),
        lengths=_t(lengths, np.int64), targets=_t(seqs.items[target_pos], np.int64),
        target_times=_t(seqs.timestamps[target_pos], np.int64),
        target_ratings=_t(seqs.ratings[target_pos], np.float32), ratings=_t(ratings, np.float32),
    )


def timed_cases(pool: Sequences, users, items, times, ratings, max_len: int) -> tuple[SequenceBatch, np.ndarray]:
    """One case per (user, item, time, rating) target, its history the user's ratings in `pool` with a strictly
    earlier timestamp (ratings in the same second are not history), the last `max_len` of them.

    The rule of the literature rating splits for sequence models: `pool` holds the training ratings (u1.base ...),
    the targets are held-out rows. Returns the cases and each target's full history length (before the cut)."""
    users, times = np.asarray(users, np.int64), np.asarray(times, np.int64)
    lo = int(min(pool.timestamps.min(initial=0), times.min(initial=0)))
    span = int(max(pool.timestamps.max(initial=0), times.max(initial=0))) - lo + 1
    row_of_pos = np.repeat(pool.users, pool.lengths)
    keys = row_of_pos * span + (pool.timestamps - lo)  # ascending: pool is sorted by user, then time
    ends = np.searchsorted(keys, users * span + (times - lo), side="left")
    starts = np.searchsorted(keys, users * span, side="left")
    pos, lengths = history_positions(starts, ends, max_len)
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    n = len(users)
    pick = lambda a, fill_dtype: (np.where(valid, a[pos], 0) if n and len(a)  # noqa: E731
                                  else np.zeros((n, max_len), fill_dtype))
    batch = SequenceBatch(
        users=_t(users, np.int64), items=_t(pick(pool.items, np.int64), np.int64),
        timestamps=_t(pick(pool.timestamps, np.int64), np.int64), lengths=_t(lengths, np.int64),
        targets=_t(items, np.int64), target_times=_t(times, np.int64), target_ratings=_t(ratings, np.float32),
        ratings=_t(pick(pool.ratings, np.float32), np.float32))
    return batch, (ends - starts).astype(np.int64)


def rating_pairs(users, items, ratings) -> SequenceBatch:
    """(user, item, rating) rows without a history: what NCF and the floors train and are evaluated on."""
    return SequenceBatch(users=_t(users, np.int64), targets=_t(items, np.int64),
                         target_ratings=_t(ratings, np.float32))


def single_history(items, times, target_time: int | None = None, user: int = 0) -> SequenceBatch:
    """A batch of one history (already cut), e.g. for trajectories and live scoring."""
    n = len(items)
    return SequenceBatch(users=torch.tensor([user]), items=_t(np.asarray(items)[None], np.int64),
                         timestamps=_t(np.asarray(times)[None], np.int64), lengths=torch.tensor([n]),
                         target_times=None if target_time is None else torch.tensor([int(target_time)]))
