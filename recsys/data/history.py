"""What a sequence model sees of a user: the one history cutter and the one definition of a time gap.

Evaluation cases, training windows, trajectories, live scoring, the analyses and the benchmarks all cut histories
with `history_positions` / `cut_history`, and every gap shown or fed to a model comes from the functions below, so
"the last max_len movies" and "the gap" mean the same thing everywhere.

Gap conventions (seconds, int64 in the data):
- `gaps_after`: dt_k = t_{k+1} - t_k, the gap AFTER item k, which is what SS4Rec's S5 layer integrates between
  item k and the next one. At the last item of a history it is the gap to the target (t_target - t_last) when the
  target's time is known, else 0; padding is 0.
- `gaps_before`: the gap since the same user's previous item (0 at the first): gaps_before[k] = gaps_after[k - 1].
- `gap_to_target`: t_target - t_last (0 for an empty history).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def history_positions(starts, ends, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """For histories ending (exclusively) at flat positions `ends` and starting no earlier than `starts`, the flat
    positions of their last `max_len` items, left-aligned in [n, max_len] (0 where padded), and their lengths."""
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, not {max_len}")
    first = np.maximum(starts, ends - max_len)
    lengths = (ends - first).astype(np.int64)
    cols = np.arange(max_len)
    valid = cols[None, :] < lengths[:, None]
    return np.where(valid, first[:, None] + cols[None, :], 0), lengths


@dataclass
class History:
    """One user's history as a model is fed it: the last max_len (item, time[, rating]) before "now"."""

    items: np.ndarray
    times: np.ndarray
    ratings: np.ndarray | None
    cut: int  # how many older interactions were left out


def cut_history(items, times, max_len: int, ratings=None, now: int | None = None) -> History:
    """Chronological copies of a history (stable by time) cut to its last `max_len` items before `now`.

    Raises ValueError for an empty history, mismatched lengths, or a `now` before the last item."""
    items = np.array(items, dtype=np.int64)  # copies: torch needs writable arrays
    times = np.array(times, dtype=np.int64)
    if len(items) == 0:
        raise ValueError("the history is empty: add at least one movie")
    if len(items) != len(times) or (ratings is not None and len(ratings) != len(items)):
        raise ValueError("every movie in the history needs a time (and a rating, when ratings are given)")
    order = np.argsort(times, kind="stable")
    items, times = items[order], times[order]
    ratings = None if ratings is None else np.asarray(ratings)[order]
    if now is not None and int(now) < int(times[-1]):
        raise ValueError("'now' is before the last movie of the history")
    pos, lengths = history_positions([0], [len(items)], max_len)
    keep = pos[0, :lengths[0]]
    return History(items[keep], times[keep], None if ratings is None else ratings[keep], len(items) - int(lengths[0]))


def _backend(x):
    return torch if isinstance(x, torch.Tensor) else np


def gaps_after(timestamps, lengths, target_times=None):
    """dt [B, L]: t_{k+1} - t_k after each valid item; at the last valid item t_target - t_last (0 without
    target_times); 0 on padding. Works on numpy arrays and torch tensors alike (in their dtype)."""
    xp = _backend(timestamps)
    if xp is torch:
        length = timestamps.shape[1]
        nxt = torch.cat([timestamps[:, 1:], torch.zeros_like(timestamps[:, :1])], dim=1)
        pos = torch.arange(length, device=timestamps.device)[None, :]
        last = (lengths - 1)[:, None]
        at_end = timestamps if target_times is None else target_times.to(timestamps.dtype)[:, None]
        nxt = torch.where(pos == last, at_end, nxt)
        return torch.where(pos <= last, nxt - timestamps, torch.zeros_like(timestamps))
    timestamps = np.asarray(timestamps)
    lengths = np.asarray(lengths)
    nxt = np.concatenate([timestamps[:, 1:], np.zeros_like(timestamps[:, :1])], axis=1)
    pos = np.arange(timestamps.shape[1])[None, :]
    last = (lengths - 1)[:, None]
    at_end = timestamps if target_times is None else np.asarray(target_times, timestamps.dtype)[:, None]
    nxt = np.where(pos == last, at_end, nxt)
    return np.where(pos <= last, nxt - timestamps, 0)


def gaps_before(times, users=None) -> np.ndarray:
    """Seconds since the previous item of the same history (0 at each history's first). `times` is one
    chronological history, or, with `users`, many histories laid end to end (sorted by user, then time)."""
    times = np.asarray(times, dtype=np.int64)
    gaps = np.diff(times, prepend=times[:1]) if len(times) else times.copy()
    if users is not None and len(times):
        users = np.asarray(users)
        gaps[1:][users[1:] != users[:-1]] = 0
    return gaps


def gap_to_target(timestamps, lengths, target_times) -> np.ndarray:
    """t_target - t_last per history ([B, L] left-aligned timestamps); 0 where the history is empty."""
    timestamps, lengths = np.asarray(timestamps), np.asarray(lengths)
    rows = np.arange(len(lengths))
    last = timestamps[rows, np.maximum(lengths - 1, 0)] if timestamps.size else np.zeros(len(lengths), np.int64)
    return np.where(lengths > 0, np.asarray(target_times) - last, 0)
