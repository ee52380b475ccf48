"""Evaluation metrics for recommenders: rating errors, full-catalogue ranking, and bootstrap confidence intervals.

Ranking conventions (every ranking function here follows them):

* Scores are a full-catalogue matrix ``[B, n_items]``. Item index 0 is padding and is never ranked: its score is
  treated as -inf, i.e. it never competes with the target, whatever value the model put there.
* Tie rule, PESSIMISTIC: the rank of the target is ``1 + number of OTHER real items whose score is >= the
  target's score``. A model that gives every item the same score therefore ranks every target last
  (rank = number of real candidate items), never first. Optimistic or random tie-breaking would reward degenerate
  (constant, collapsed, saturated) models, so ties always count against the model.
* Excluded items (e.g. items the user has already seen) are removed from the candidate set, which is equivalent to
  setting their scores to -inf; the target itself is never excluded, even if it appears in the exclude list.
* NaN scores are an error (ValueError): a NaN compares false with everything and would silently rank a target
  first or last depending on where it sits.
* Ranks are 1-based. With one relevant item per row, IDCG = 1, so NDCG@K = 1/log2(rank+1) if rank <= K else 0,
  HR@K = 1[rank <= K] and MRR@K = 1/rank if rank <= K else 0.

The full-catalogue ranking itself (``target_ranks``, ``rank_all``, exclude formats) is in ``recsys.evaluation.ranking``
(torch); it is re-exported here. Everything else in this module is numpy only.

Bootstrap (``paired_bootstrap``, ``bootstrap_ci``): users are resampled with replacement; the resampling is done in
chunks of replicates so memory is O(chunk * n_users), and the result depends only on ``seed`` (not on the chunk
size), because indices come from one stream of uniform doubles consumed in a fixed order. A resample's statistic is
its ``mean``, ``median`` or ``rmse`` (``sqrt(mean)`` of squared errors: an RMSE is not a mean of per-row values).
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch

__all__ = [
    "rmse",
    "mae",
    "rating_errors",
    "ranking_metrics_from_ranks",
    "per_user_ranking",
    "paired_bootstrap",
    "two_level_bootstrap",
    "holm_adjust",
    "bootstrap_ci",
]



def _is_tensor(x: object) -> TypeGuard[torch.Tensor]:
    """isinstance(x, torch.Tensor) without importing torch: the bootstrap and rating metrics (the dashboard's
    answer page) need no torch, and nothing can be a tensor before torch is imported."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
# Budget (in elements) for one chunk of bootstrap indices: 2**22 float64/intp values is ~32 MiB per array,
# which keeps n=162k users x n_boot=2000 at a few hundred MiB peak instead of ~2.6 GiB.
_BOOT_CHUNK_ELEMS = 2**22


# ----------------------------------------------------------------------------------------------------------------
# Rating-prediction errors
# ----------------------------------------------------------------------------------------------------------------


def _as_float64(x: object) -> np.ndarray:
    """Convert a numpy array / torch tensor / sequence to a 1-D float64 numpy array."""
    if _is_tensor(x):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(-1) if arr.ndim != 1 else arr


def _check_pair(pred: object, target: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate predictions and targets as equal-length, non-empty, NaN-free float64 vectors."""
    p, t = _as_float64(pred), _as_float64(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same length, got {p.shape[0]} and {t.shape[0]}")
    if p.size == 0:
        raise ValueError("pred and target are empty; an error over no ratings is undefined")
    # A NaN prediction would turn the whole metric into NaN (or, after nan-skipping, hide a broken model).
    for name, arr in (("pred", p), ("target", t)):
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            raise ValueError(f"{name} contains {n_nan} NaN value(s)")
    return p, t


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared error, accumulated in float64."""
    p, t = _check_pair(pred, target)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error, accumulated in float64."""
    p, t = _check_pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def rating_errors(pred: np.ndarray, target: np.ndarray, users: np.ndarray | None = None) -> pd.DataFrame:
    """Per-row errors: columns ``user`` (if given), ``pred``, ``target``, ``sq_error``, ``abs_error``."""
    p, t = _check_pair(pred, target)
    cols: dict[str, np.ndarray] = {}
    if users is not None:
        u = users.detach().cpu().numpy() if _is_tensor(users) else np.asarray(users)
        u = u.reshape(-1)
        if u.shape[0] != p.shape[0]:
            raise ValueError(f"users has {u.shape[0]} rows but pred has {p.shape[0]}")
        cols["user"] = u
    cols["pred"] = p
    cols["target"] = t
    diff = p - t
    cols["sq_error"] = diff * diff
    cols["abs_error"] = np.abs(diff)
    return pd.DataFrame(cols)


# ----------------------------------------------------------------------------------------------------------------
# Ranking
# ----------------------------------------------------------------------------------------------------------------


def _check_ranks(ranks: object) -> np.ndarray:
    """Validate 1-based integer ranks and return them as int64 numpy."""
    r = ranks.detach().cpu().numpy() if _is_tensor(ranks) else np.asarray(ranks)
    r = r.reshape(-1)
    if r.size == 0:
        raise ValueError("ranks are empty; ranking metrics over no users are undefined")
    if not np.issubdtype(r.dtype, np.integer) and (not np.all(np.isfinite(r)) or not np.all(r == np.round(r))):
        raise ValueError("ranks must be whole numbers (1-based), got non-integer or non-finite values")
    r = r.astype(np.int64)
    if r.min() < 1:
        raise ValueError(f"ranks are 1-based, got minimum {r.min()}")
    return r


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validate cutoffs as positive ints."""
    out = tuple(int(k) for k in ks)
    if not out or min(out) < 1:
        raise ValueError(f"ks must be a non-empty list of positive cutoffs, got {ks!r}")
    return out


def _per_row_metrics(r: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """HR/NDCG/MRR@K per row for 1-based ranks (one relevant item, so IDCG = 1)."""
    rf = r.astype(np.float64)
    ndcg_full = 1.0 / np.log2(rf + 1.0)
    mrr_full = 1.0 / rf
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, ndcg_full, 0.0)
        out[f"mrr@{k}"] = np.where(hit, mrr_full, 0.0)
    return out


def ranking_metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean ``hr@K``, ``ndcg@K``, ``mrr@K`` over rows from 1-based (pessimistic) ranks."""
    r, ks_t = _check_ranks(ranks), _check_ks(ks)
    return {name: float(np.mean(v)) for name, v in _per_row_metrics(r, ks_t).items()}


def per_user_ranking(ranks: np.ndarray, users: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> pd.DataFrame:
    """Per-user table: columns ``user``, ``rank``, then ``hr@k``, ``ndcg@k``, ``mrr@k`` for each k."""
    r, ks_t = _check_ranks(ranks), _check_ks(ks)
    u = users.detach().cpu().numpy() if _is_tensor(users) else np.asarray(users)
    u = u.reshape(-1)
    if u.shape[0] != r.shape[0]:
        raise ValueError(f"users has {u.shape[0]} rows but ranks has {r.shape[0]}")
    cols: dict[str, np.ndarray] = {"user": u, "rank": r}
    cols.update(_per_row_metrics(r, ks_t))
    return pd.DataFrame(cols)


# ----------------------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------------------

# The statistic of a sample (axis=None) or of each resample (axis=1); rmse takes squared errors: sqrt of their mean.
_REDUCERS: dict[str, Callable[..., Any]] = {
    "mean": np.mean, "median": np.median, "rmse": lambda v, axis=None: np.sqrt(np.mean(v, axis=axis))}
_STATISTICS = tuple(_REDUCERS)


def _check_values(x: object, name: str, statistic: str = "mean") -> np.ndarray:
    """Validate per-user values as a non-empty, finite float64 vector (non-negative for the RMSE's squared errors)."""
    v = _as_float64(x)
    if v.size == 0:
        raise ValueError(f"{name} is empty; a bootstrap over no users is undefined")
    n_bad = int((~np.isfinite(v)).sum())
    if n_bad:
        raise ValueError(f"{name} contains {n_bad} NaN/inf value(s); per-user metrics must be finite")
    if statistic == "rmse" and (v < 0).any():
        raise ValueError(f"{name} holds {int((v < 0).sum())} negative value(s); the rmse statistic takes squared "
                         f"errors, which are never negative")
    return v


def _check_boot_args(n_boot: int, alpha: float, statistic: str, chunk_size: int | None) -> None:
    """Validate shared bootstrap arguments."""
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if statistic not in _STATISTICS:
        raise ValueError(f"statistic must be one of {_STATISTICS}, got {statistic!r}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _boot_chunk_rows(n: int, chunk_size: int | None) -> int:
    """Replicates per chunk: caller's choice, else as many as fit the element budget (at least 1)."""
    if chunk_size is not None:
        return int(chunk_size)
    return max(1, _BOOT_CHUNK_ELEMS // max(n, 1))


def _draw(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """[rows, n] indices in 0..n-1 drawn with replacement, from uniform doubles."""
    idx = (rng.random((rows, n)) * n).astype(np.intp)
    return np.minimum(idx, n - 1, out=idx)  # u*n can round up to n for u just below 1


def _interval_and_p(diff_boot: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Percentile interval of the resampled differences and the sign-consistency p-value (resolution 1/n_boot)."""
    ci_low, ci_high = np.quantile(diff_boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    p = 2.0 * min(float(np.mean(diff_boot <= 0.0)), float(np.mean(diff_boot >= 0.0)))
    return float(ci_low), float(ci_high), min(1.0, p)


def _bootstrap_replicates(
    arrays: Sequence[np.ndarray], n_boot: int, seed: int, statistic: str, chunk_size: int | None
) -> list[np.ndarray]:
    """Statistic of each array on ``n_boot`` shared resamples of row indices, computed chunk by chunk."""
    n = arrays[0].shape[0]
    reduce = _REDUCERS[statistic]
    rng = np.random.default_rng(seed)
    per_chunk = _boot_chunk_rows(n, chunk_size)
    outs = [np.empty(n_boot, dtype=np.float64) for _ in arrays]
    for start in range(0, n_boot, per_chunk):
        c = min(per_chunk, n_boot - start)
        # Indices from uniform doubles: each value consumes exactly one 64-bit draw in C order, so the index
        # stream (hence the result) depends only on the seed, never on how replicates are split into chunks.
        idx = _draw(rng, c, n)
        for arr, out in zip(arrays, outs):
            out[start:start + c] = reduce(arr[idx], axis=1)
    return outs


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    statistic: str = "mean",
    chunk_size: int | None = None,
) -> dict[str, float | int | str]:
    """Paired bootstrap of ``stat(a) - stat(b)`` over users (``a[i]``, ``b[i]`` = same user, two runs).

    Users are resampled with replacement, the same resample for both runs (that pairing is what removes
    between-user variance); ``statistic="rmse"`` takes per-row squared errors: ``sqrt(mean(a*)) - sqrt(mean(b*))``.
    Returns ``mean_a``, ``mean_b`` (the chosen statistic; key names are fixed),
    ``diff = mean_a - mean_b``, ``ci_low``/``ci_high`` (percentile CI of the resampled difference at level
    ``1 - alpha``), ``p_value`` = ``min(1, 2 * min(frac(diff_boot <= 0), frac(diff_boot >= 0)))`` (a bootstrap
    sign-consistency p-value, resolution 1/n_boot), ``n_users``, ``n_boot``, ``alpha``, ``statistic``.
    Memory is O(chunk * n_users); results depend on ``seed`` only, not on ``chunk_size``.
    """
    _check_boot_args(n_boot, alpha, statistic, chunk_size)
    va, vb = _check_values(a, "a", statistic), _check_values(b, "b", statistic)
    if va.shape[0] != vb.shape[0]:
        raise ValueError(
            f"paired bootstrap needs the same users in both runs (the same rows of a and b, in the same order): "
            f"a has {va.shape[0]} values, b has {vb.shape[0]}"
        )
    n_boot = int(n_boot)
    if statistic == "mean":
        # For the mean, stat(a*) - stat(b*) == mean(d*), so resampling the difference alone halves the work.
        d = va - vb
        (diff_boot,) = _bootstrap_replicates([d], n_boot, seed, statistic, chunk_size)
    else:
        boot_a, boot_b = _bootstrap_replicates([va, vb], n_boot, seed, statistic, chunk_size)
        diff_boot = boot_a - boot_b
    stat_a, stat_b = float(_REDUCERS[statistic](va)), float(_REDUCERS[statistic](vb))
    ci_low, ci_high, p = _interval_and_p(diff_boot, alpha)
    return {
        "mean_a": stat_a,
        "mean_b": stat_b,
        "diff": stat_a - stat_b,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": p,
        "n_users": int(va.shape[0]),
        "n_boot": n_boot,
        "alpha": float(alpha),
        "statistic": statistic,
    }


def _seed_weights(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    """[rows, k]: the share of each of k seeds in a resample of k seeds drawn with replacement."""
    idx = _draw(rng, rows, k)
    return (idx[:, :, None] == np.arange(k)).sum(axis=1) / k


def two_level_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    chunk_size: int | None = None,
) -> dict[str, float | int | str]:
    """Two-level (hierarchical) paired bootstrap of mean(A) - mean(B) that includes training randomness.

    ``a`` [S_a, U] and ``b`` [S_b, U]: per-user values of each seed (row) of two configurations on the same U users
    (columns, same order). Each replicate resamples the seeds of each configuration with replacement, independently
    (seed i of A and seed i of B are different trainings), averages the drawn seeds per user, then resamples the
    users with replacement, the same users for both (the pairing that removes between-user variance). With one seed
    per configuration it reduces to the users-only paired bootstrap. With few seeds the seed level is a coarse
    estimate (resampling 3 seeds understates their spread by about (S-1)/S): the interval is honest about training
    randomness only as far as the seeds run show it.

    Returns the keys of ``paired_bootstrap`` (``mean_a``/``mean_b``: the mean over seeds and users) plus
    ``n_seeds_a``, ``n_seeds_b`` and ``interval = "seeds+users"``; depends on ``seed`` only, not on ``chunk_size``.
    """
    _check_boot_args(n_boot, alpha, "mean", chunk_size)
    mats = []
    for x, name in ((a, "a"), (b, "b")):
        m = np.asarray(x, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
            raise ValueError(f"{name} must be a non-empty [seeds, users] matrix, got shape {m.shape}")
        _check_values(m.ravel(), name)
        mats.append(m)
    A, B = mats
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"two-level bootstrap needs the same users in both configurations: a has {A.shape[1]}, "
                         f"b has {B.shape[1]}")
    (sa, n), sb, n_boot = A.shape, B.shape[0], int(n_boot)
    # one stream per level, each consumed one uniform double per draw in C order: chunking never changes a result
    rng_a, rng_b, rng_u = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    per_chunk = _boot_chunk_rows(n, chunk_size)
    diff_boot = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, per_chunk):
        c = min(per_chunk, n_boot - start)
        wa, wb = (_seed_weights(r, c, k) for r, k in ((rng_a, sa), (rng_b, sb)))   # [c, S] drawn-seed shares
        d = wa @ A - wb @ B                                                         # [c, U] per-user difference
        diff_boot[start:start + c] = np.take_along_axis(d, _draw(rng_u, c, n), axis=1).mean(axis=1)
    mean_a, mean_b = float(A.mean()), float(B.mean())
    ci_low, ci_high, p = _interval_and_p(diff_boot, alpha)
    return {"mean_a": mean_a, "mean_b": mean_b, "diff": mean_a - mean_b, "ci_low": ci_low,
            "ci_high": ci_high, "p_value": p, "n_users": int(n), "n_boot": n_boot,
            "alpha": float(alpha), "statistic": "mean", "n_seeds_a": int(sa), "n_seeds_b": int(sb),
            "interval": "seeds+users"}


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are not tests and stay NaN): the i-th
    smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j)). Controls the family-wise error rate."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out


def bootstrap_ci(
    values: np.ndarray,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    statistic: str = "mean",
    chunk_size: int | None = None,
) -> dict[str, float | int | str]:
    """Percentile bootstrap CI of one run's per-user statistic: ``mean``, ``ci_low``, ``ci_high``, ``n_users``, ...

    ``mean`` holds the chosen statistic of ``values`` (key name fixed). Same resampling, memory bound and seed
    determinism as ``paired_bootstrap``.
    """
    _check_boot_args(n_boot, alpha, statistic, chunk_size)
    v = _check_values(values, "values", statistic)
    n_boot = int(n_boot)
    (boot,) = _bootstrap_replicates([v], n_boot, seed, statistic, chunk_size)
    ci_low, ci_high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    est = float(_REDUCERS[statistic](v))
    return {
        "mean": est,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "n_users": int(v.shape[0]),
        "n_boot": n_boot,
        "alpha": float(alpha),
        "statistic": statistic,
    }


_RANKING = ("csr_from_lists", "target_ranks", "rank_all", "Csr", "Exclude", "PADDING_ITEM")


def __getattr__(name: str):
    """The ranking functions live in recsys.evaluation.ranking (torch), imported on first use: the bootstrap and
    rating metrics (the dashboard's answer page) then need no torch."""
    if name in _RANKING:
        from recsys.evaluation import ranking

        return getattr(ranking, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
