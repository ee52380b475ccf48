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

    def __len__(self) -> int:
        return len(self.users)

    def _map(self, fn) -> "SequenceBatch":
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def take(self, rows) -> "SequenceBatch":
        """The rows `rows` (index tensor, array or slice) of every field."""
        if isinstance(rows, np.ndarray):
            rows = torch.from_numpy(rows)
        return self._map(lambda t: t[rows])

    def to(self, device, non_blocking: bool = False) -> "SequenceBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "SequenceBatch":
        return self._map(lambda t: t.pin_memory())

    def trimmed(self) -> "SequenceBatch":
        """The same batch without the padding columns every row shares."""
        if self.items is None or not len(self):
            return self
        width = max(int(self.lengths.max()), 1)
        per_position = {"items", "timestamps", "targets", "target_ratings"}  # [B, L] fields (targets: windows)
        return replace(self, **{name: getattr(self, name)[:, :width] for name in per_position
                                if getattr(self, name) is not None and getattr(self, name).dim() == 2})


def _t(a, dtype=None) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a if dtype is None else np.asarray(a).astype(dtype)))


def training_windows(seqs: Sequences, max_len: int) -> SequenceBatch:
    """Cut each training sequence into consecutive windows of max_len inputs and their next-item targets.

    A user's items i_0..i_{n-1} give targets i_1..i_{n-1}, each predicted exactly once; windows are cut from the
    end, so the most recent history is always whole. `target_times` is the time of each window's last target.
    """
    lengths = seqs.lengths
    n_targets = np.maximum(lengths - 1, 0)
    n_windows = -(-n_targets // max_len)
    row = np.repeat(np.arange(len(lengths)), n_windows)
    k = np.arange(len(row)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)  # window index from the end
    starts = seqs.indptr[:-1][row]
    end = starts + lengths[row] - k * max_len           # exclusive end of this window's targets (absolute)
    inp, n_in = history_positions(starts, end - 1, max_len)  # inputs: the max_len items before the last target
    valid = np.arange(max_len)[None, :] < n_in[:, None]
    tgt = np.where(valid, inp + 1, 0)
    take = lambda a, idx: np.where(valid, a[idx], 0)  # noqa: E731
    return SequenceBatch(
        users=_t(seqs.users[row], np.int64),
        items=_t(take(seqs.items, inp), np.int64),
        timestamps=_t(take(seqs.timestamps, inp), np.int64),
        lengths=_t(n_in, np.int64),
        targets=_t(take(seqs.items, tgt), np.int64),
        target_times=_t(seqs.timestamps[end - 1] if len(end) else np.zeros(0), np.int64),
        target_ratings=_t(take(seqs.ratings, tgt), np.float32),
    )


def evaluation_cases(seqs: Sequences, rows: np.ndarray, target_pos: np.ndarray, max_len: int) -> SequenceBatch:
    """One case per sequence row in `rows`: the last max_len items strictly before its target at flat position
    `target_pos` (RecBole's layout), the target, its time and its rating."""
    pos, lengths = history_positions(seqs.indptr[:-1][rows], target_pos, max_len)
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    n = len(target_pos)
    items = np.where(valid, seqs.items[pos], 0) if n else np.zeros((0, max_len), np.int64)
    times = np.where(valid, seqs.timestamps[pos], 0) if n else np.zeros((0, max_len), np.int64)
    return SequenceBatch(
        users=_t(seqs.users[rows], np.int64), items=_t(items, np.int64), timestamps=_t(times, np.int64),
        lengths=_t(lengths, np.int64), targets=_t(seqs.items[target_pos], np.int64),
        target_times=_t(seqs.timestamps[target_pos], np.int64),
        target_ratings=_t(seqs.ratings[target_pos], np.float32),
    )


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
