"""Full-catalogue ranking of a model's scores: the rank of each target among all real items (torch).

Exclude formats accepted by ``target_ranks`` / ``rank_all`` (row i of the format belongs to row i of the batch):

* a CSR tuple ``(offsets, items)`` of 1-D integer numpy arrays; row i excludes ``items[offsets[i]:offsets[i+1]]``
  (``len(offsets) == n_rows + 1``; offsets need not start at 0, so slices of a bigger CSR work as they are);
  ``csr_from_lists`` builds one from per-row lists. This is the efficient format for large catalogues because it
  stores only the seen items.
* a list (or other sequence) of per-row integer sequences;
* a boolean tensor ``[n_rows, n_items]`` (True = exclude). Convenient for small tests; for ``rank_all`` over many
  users it is a dense matrix, so prefer CSR there.

Conventions (padding, the pessimistic tie rule, excluded items, NaN) are those of ``recsys.evaluation.metrics``,
which re-exports these functions.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence, Sized
from typing import TypeGuard, cast

import numpy as np
import torch

__all__ = ["csr_from_lists", "target_ranks", "rank_all"]

Csr = tuple[np.ndarray, np.ndarray]
Exclude = Csr | torch.Tensor | Sequence[Sequence[int]] | None
PADDING_ITEM = 0


def csr_from_lists(item_lists: Sequence[Sequence[int]]) -> Csr:
    """Build an ``(offsets, items)`` CSR exclude structure from per-row item lists."""
    lengths = np.fromiter((len(x) for x in item_lists), dtype=np.int64, count=len(item_lists))
    offsets = np.zeros(len(item_lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] == 0:
        return offsets, np.zeros(0, dtype=np.int64)
    items = np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1) for x in item_lists])
    return offsets, items


def _is_csr(exclude: object) -> TypeGuard[Csr]:
    """True when ``exclude`` is an ``(offsets, items)`` tuple of numpy arrays."""
    return (
        isinstance(exclude, tuple)
        and len(exclude) == 2
        and isinstance(exclude[0], np.ndarray)
        and isinstance(exclude[1], np.ndarray)
    )


def _exclude_mask(exclude: Exclude, n_rows: int, n_items: int, device: torch.device) -> torch.Tensor | None:
    """Turn any supported exclude format into a boolean ``[n_rows, n_items]`` mask on ``device``."""
    if exclude is None:
        return None
    if isinstance(exclude, torch.Tensor):
        if exclude.dtype != torch.bool:
            raise ValueError(f"an exclude tensor must be boolean [B, n_items], got dtype {exclude.dtype}")
        if tuple(exclude.shape) != (n_rows, n_items):
            raise ValueError(
                f"exclude mask has shape {tuple(exclude.shape)}, expected {(n_rows, n_items)} to match the scores"
            )
        return exclude.to(device)
    if _is_csr(exclude):
        offsets, items = exclude
    else:  # what is left: per-row sequences
        offsets, items = csr_from_lists(cast(Sequence[Sequence[int]], exclude))
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.shape[0] != n_rows + 1:
        raise ValueError(f"exclude offsets must have length n_rows + 1 = {n_rows + 1}, got {offsets.shape}")
    lengths = np.diff(offsets)
    if (lengths < 0).any():
        raise ValueError("exclude offsets must be non-decreasing")
    if offsets[0] < 0 or offsets[-1] > items.shape[0]:
        raise ValueError(f"exclude offsets point outside items (offsets span [{offsets[0]}, {offsets[-1]}], "
                         f"len(items) = {items.shape[0]})")
    cols = np.asarray(items[offsets[0]:offsets[-1]], dtype=np.int64)
    mask = torch.zeros((n_rows, n_items), dtype=torch.bool, device=device)
    if cols.size == 0:
        return mask
    if cols.min() < 0 or cols.max() >= n_items:
        raise ValueError(f"exclude items must lie in [0, {n_items - 1}], got range [{cols.min()}, {cols.max()}]")
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
    mask[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)] = True
    return mask


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: Exclude = None) -> torch.Tensor:
    """1-based PESSIMISTIC rank of each row's target: 1 + #other real, non-excluded items scoring >= the target.

    ``scores`` is ``[B, n_items]`` with column 0 = padding (never ranked, treated as -inf); ``targets`` is ``[B]``
    with values in ``[1, n_items - 1]``. ``exclude`` (CSR ``(offsets, items)``, per-row lists, or a bool tensor
    ``[B, n_items]``) removes items from the candidates as if scored -inf; the target is never excluded. All-equal
    scores give every target rank ``n_items - 1 - #excluded`` (last), never 1. NaN scores raise ValueError.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, n_items], got shape {tuple(scores.shape)}")
    n_rows, n_items = scores.shape
    if n_items < 2:
        raise ValueError(f"scores need at least one real item besides padding column 0, got n_items={n_items}")
    targets = torch.as_tensor(targets).to(device=scores.device, dtype=torch.long).reshape(-1)
    if targets.shape[0] != n_rows:
        raise ValueError(f"targets has {targets.shape[0]} rows but scores has {n_rows}")
    if n_rows == 0:
        return torch.zeros(0, dtype=torch.long)
    if scores.is_floating_point() or scores.is_complex():
        # Column 0 is ignored, so only NaNs among real items are an error.
        nan_rows = torch.isnan(scores[:, 1:]).any(dim=1)
        if bool(nan_rows.any()):
            bad = torch.nonzero(nan_rows).reshape(-1)[:5].tolist()
            raise ValueError(
                f"scores contain NaN in {int(nan_rows.sum())} of {n_rows} rows (first rows: {bad}); "
                "NaN cannot be ranked, fix the model output"
            )
    t_min, t_max = int(targets.min()), int(targets.max())
    if t_min < 1 or t_max >= n_items:
        raise ValueError(
            f"targets must be real items in [1, {n_items - 1}] (0 is padding), got range [{t_min}, {t_max}]"
        )
    target_score = scores.gather(1, targets[:, None])
    # Counting ">=" over candidates (instead of writing -inf into a copy of scores) never mutates the caller's
    # tensor and stays correct even when the target itself scores -inf.
    beats = scores >= target_score
    beats[:, PADDING_ITEM] = False
    mask = _exclude_mask(exclude, n_rows, n_items, scores.device)
    if mask is not None:
        beats &= ~mask
    # The target always ties with itself; drop it so it is counted exactly once (the "1 +"), excluded or not.
    beats.scatter_(1, targets[:, None], False)
    return beats.sum(dim=1, dtype=torch.long) + 1


def _slice_exclude(exclude: Exclude, start: int, stop: int) -> Exclude:
    """Rows ``start:stop`` of an exclude structure, in the same format (CSR slices need no copy of items)."""
    if exclude is None:
        return None
    if _is_csr(exclude):
        offsets, items = exclude
        return offsets[start:stop + 1], items
    return cast(torch.Tensor | Sequence[Sequence[int]], exclude)[start:stop]  # not CSR, not None


def _n_rows(x: Sized) -> int:
    """Number of rows of a numpy array, torch tensor or sequence."""
    return int(x.shape[0]) if hasattr(x, "shape") else len(x)


def rank_all(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    rows: np.ndarray | torch.Tensor | Sequence[int],
    targets: np.ndarray | torch.Tensor | Sequence[int],
    batch_size: int = 1024,
    exclude: Exclude = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """PESSIMISTIC target ranks for all rows, scoring ``batch_size`` rows at a time; returns numpy int64 ``[n]``.

    ``score_fn(batch_rows) -> [b, n_items]`` receives ``rows[i:i+b]`` as a tensor on ``device`` (rows may be user
    ids ``[n]`` or e.g. padded sequences ``[n, L]``). Only one ``[b, n_items]`` block is alive at a time, so the full
    ``[n_users, n_items]`` matrix is never built. ``exclude`` is aligned with ``rows`` (CSR ``(offsets, items)`` with
    ``len(offsets) == n + 1``, per-row lists, or a bool tensor ``[n, n_items]``). Tie rule, padding and NaN handling
    as in ``target_ranks``. ``progress=True`` shows a tqdm bar.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    if isinstance(rows, (list, tuple)):
        rows = np.asarray(rows)
    tgt = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    tgt = tgt.astype(np.int64, copy=False).reshape(-1)
    n = _n_rows(rows)
    if tgt.shape[0] != n:
        raise ValueError(f"targets has {tgt.shape[0]} rows but rows has {n}")
    if exclude is not None:
        n_ex = _n_rows(exclude[0]) - 1 if _is_csr(exclude) else _n_rows(exclude)
        if n_ex != n:
            raise ValueError(f"exclude covers {n_ex} rows but rows has {n}")
    out = np.empty(n, dtype=np.int64)
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=math.ceil(n / batch_size), desc="ranking", unit="batch")
    n_items: int | None = None
    with torch.inference_mode():
        for start in starts:
            stop = min(start + batch_size, n)
            batch = rows[start:stop]
            batch_t = batch.to(device) if isinstance(batch, torch.Tensor) else torch.as_tensor(batch, device=device)
            scores = score_fn(batch_t)
            if scores.dim() != 2 or scores.shape[0] != stop - start:
                raise ValueError(
                    f"score_fn returned shape {tuple(scores.shape)} for a batch of {stop - start} rows; "
                    "expected [batch, n_items]"
                )
            # A catalogue that changes size between batches means score_fn is not scoring the same items.
            if n_items is None:
                n_items = int(scores.shape[1])
            elif scores.shape[1] != n_items:
                raise ValueError(f"score_fn returned {scores.shape[1]} items, earlier batches had {n_items}")
            batch_targets = torch.from_numpy(tgt[start:stop]).to(scores.device)
            ranks = target_ranks(scores, batch_targets, _slice_exclude(exclude, start, stop))
            out[start:stop] = ranks.cpu().numpy()
    return out
