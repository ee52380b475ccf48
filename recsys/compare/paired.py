"""Paired comparisons of two runs on the same held-out rows: row alignment (refused when the runs were not evaluated
on the same users, items and ratings), the paired bootstrap of a metric's difference, and a plain-language sentence.

The bootstrap itself is recsys.evaluation.metrics.paired_bootstrap (one implementation for every metric; the RMSE is
its ``statistic="rmse"``, sqrt of the mean squared error on each resample).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recsys.compare.describe import is_floor, metric_display
from recsys.compare.discovery import info_of
from recsys.evaluation.metrics import paired_bootstrap


class ComparisonError(ValueError):
    """Two runs cannot be compared row by row (different users, items or ratings); the message says why."""


def _user_col(a: pd.DataFrame, b: pd.DataFrame) -> str:
    for col in ("user_id", "user"):
        if col in a and col in b:
            return col
    raise ComparisonError("the per-user results have no user column (user_id or user) in both runs")


def _rating_rows(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Per-rating rows in one layout: user, item, rating, sq_error, abs_error (from a rating run or a rating head)."""
    if "pred_rating" in df:  # the rating head of a ranking run: target = item, target_rating = the true rating
        need = ("target", "target_rating", "pred_rating")
        if any(c not in df for c in need):
            raise ComparisonError(f"{name}: per-user results lack {', '.join(c for c in need if c not in df)}")
        out = pd.DataFrame({"item": df["target"], "rating": df["target_rating"].astype(float)})
        pred = df["pred_rating"].astype(float)
    elif "sq_error" in df and "item" in df:
        out = pd.DataFrame({"item": df["item"], "rating": df["target"].astype(float) if "target" in df else np.nan})
        pred = df["pred"].astype(float) if "pred" in df else None
    else:
        raise ComparisonError(f"{name}: these results hold no per-rating errors (a ranking run without a rating "
                              f"head?)")
    out["sq_error"] = df["sq_error"].astype(float) if "sq_error" in df else (pred - out["rating"]) ** 2
    out["abs_error"] = df["abs_error"].astype(float) if "abs_error" in df else np.sqrt(out["sq_error"])
    for col in ("user_id", "user"):
        if col in df:
            out.insert(0, col, df[col].to_numpy())
    for col in ("history_length", "gap_before_target"):
        if col in df:
            out[col] = df[col].to_numpy()
    return out


def _examples(values: Iterable, n: int = 3) -> str:
    vals = sorted(values, key=str)[:n]
    return ", ".join(str(v) for v in vals)


def align_pair(a: pd.DataFrame, b: pd.DataFrame, family: str, names: tuple[str, str] = ("A", "B")) -> pd.DataFrame:
    """Rows of two runs' results matched by user (ranking) or by (user, item) (rating), as one frame with columns
    suffixed ``_a`` / ``_b``. Refuses (ComparisonError) unless both runs hold exactly the same users (and the same
    held-out item per user, and the same true rating per row)."""
    na, nb = names
    if family == "rating":
        a, b = _rating_rows(a, na), _rating_rows(b, nb)
    ucol = _user_col(a, b)
    keys = [ucol] if family == "ranking" else [ucol, "item"]
    for df, name in ((a, na), (b, nb)):
        dup = df.duplicated(keys)
        if dup.any():
            what = "users" if family == "ranking" else "(user, item) pairs"
            raise ComparisonError(f"{name} lists {int(dup.sum())} {what} more than once; rows cannot be paired")
    ka = set(map(tuple, a[keys].to_numpy().tolist()))
    kb = set(map(tuple, b[keys].to_numpy().tolist()))
    if ka != kb:
        unit = "users" if family == "ranking" else "held-out (user, item) rows"
        only_a, only_b = ka - kb, kb - ka
        ex = lambda s: _examples([k[0] if len(k) == 1 else k for k in s])  # noqa: E731
        raise ComparisonError(
            f"{na} and {nb} were not evaluated on the same {unit}: {len(ka):,} vs {len(kb):,}; "
            f"{len(only_a):,} only in {na}" + (f" (e.g. {ex(only_a)})" if only_a else "") +
            f", {len(only_b):,} only in {nb}" + (f" (e.g. {ex(only_b)})" if only_b else "") +
            ". A paired comparison needs the same held-out data: check dataset, filters and split.")
    merged = a.merge(b, on=keys, suffixes=("_a", "_b"), validate="one_to_one").sort_values(keys)
    if family == "ranking" and "target_a" in merged and "target_b" in merged:
        bad = merged[merged["target_a"] != merged["target_b"]]
        if len(bad):
            u, ta, tb = (bad[c].iloc[0] for c in (ucol, "target_a", "target_b"))
            raise ComparisonError(
                f"{na} and {nb} hold the same users but a different held-out item for {len(bad):,} of them (e.g. "
                f"user {u}: item {ta} vs {tb}): different data or protocol.")
    if family == "rating" and merged["rating_a"].notna().all() and merged["rating_b"].notna().all():
        bad = merged[(merged["rating_a"] - merged["rating_b"]).abs() > 1e-6]
        if len(bad):
            raise ComparisonError(f"{na} and {nb} hold the same (user, item) rows but {len(bad):,} true ratings "
                                  f"differ: different data.")
    return merged.reset_index(drop=True)


def comparison_metrics(family: str, ks: Sequence[int]) -> list[str]:
    """Metrics offered for a paired comparison in a family."""
    if family == "rating":
        return ["rmse", "mae"]
    return [f"{m}@{k}" for k in ks for m in ("ndcg", "hr", "mrr")]


def _valid_value(info: dict) -> float:
    """The run's validation value of the metric its epochs were chosen on, signed so that larger is better."""
    from recsys.compare.curves import monitored_metric

    name, mode = monitored_metric(info)
    raw = ((info.get("metrics") or {}).get("valid") or {}).get(name)
    if raw is None:
        return -math.inf
    try:
        v = float(raw)
    except (TypeError, ValueError):
        return -math.inf
    return -v if mode == "min" else v if math.isfinite(v) else -math.inf


def preferred_order(items: Sequence[Any]) -> list[int]:
    """Indices of items: SS4Rec first, then the other learned models, then floors; within each, the best on
    validation first (the metric the run's epoch was chosen on), so run A defaults to the best SS4Rec run."""
    def rank(i: int):
        info = info_of(items[i])
        return (is_floor(info), info.get("model") != "ss4rec", -_valid_value(info), i)
    return sorted(range(len(items)), key=rank)


def default_pair(items: Sequence[Any]) -> tuple[int, int]:
    """Indices of the default run A and run B of a paired comparison: the best SS4Rec run on validation against the
    best run of another model (a learned baseline before a floor), never two seeds of one model when another model
    is there. Needs two items."""
    if len(items) < 2:
        raise ValueError("a paired comparison needs two runs")
    order = preferred_order(items)
    a = order[0]
    model_a = info_of(items[a]).get("model")
    b = next((i for i in order[1:] if info_of(items[i]).get("model") != model_a), order[1])
    return a, b


def compare_pair(a: pd.DataFrame, b: pd.DataFrame, family: str, metric: str, n_boot: int = 2000,
                 alpha: float = 0.05, seed: int = 0, names: tuple[str, str] = ("A", "B")) -> dict:
    """Paired bootstrap of metric(A) - metric(B) on aligned rows (see align_pair, which refuses mismatched runs).

    Ranking: per-user ``ndcg@K`` / ``hr@K`` / ``mrr@K``; rating: ``rmse`` (per-row squared errors, the RMSE
    recomputed on each resample: paired_bootstrap's ``statistic="rmse"``) or ``mae`` (per-row absolute errors).
    Adds ``metric``, ``n`` (rows), ``unit``, ``lower_is_better`` and ``family`` to the bootstrap's result."""
    merged = align_pair(a, b, family, names)
    if family == "ranking":
        if f"{metric}_a" not in merged or f"{metric}_b" not in merged:
            raise ComparisonError(f"{metric} is not in the per-user results of both runs")
        res = paired_bootstrap(merged[f"{metric}_a"].to_numpy(float), merged[f"{metric}_b"].to_numpy(float),
                               n_boot=n_boot, alpha=alpha, seed=seed)
        lower, unit = False, "users"
    elif metric == "rmse":
        res = paired_bootstrap(merged["sq_error_a"].to_numpy(), merged["sq_error_b"].to_numpy(), n_boot=n_boot,
                               alpha=alpha, seed=seed, statistic="rmse")
        lower, unit = True, "held-out ratings"
    elif metric == "mae":
        res = paired_bootstrap(merged["abs_error_a"].to_numpy(), merged["abs_error_b"].to_numpy(),
                               n_boot=n_boot, alpha=alpha, seed=seed)
        lower, unit = True, "held-out ratings"
    else:
        raise ComparisonError(f"unknown metric {metric!r} for the {family} family")
    return {**res, "metric": metric, "n": int(res["n_users"]), "unit": unit, "lower_is_better": lower,
            "family": family}


def comparison_sentence(res: dict, name_a: str, name_b: str, digits: int = 3) -> str:
    """Plain language, e.g. "SS4Rec's NDCG@10 is higher than NCF's by 0.012 (95% CI 0.004 to 0.020, 943 users)".

    Uses `digits` decimals, more when the difference would otherwise print as 0.000."""
    m = metric_display(res["metric"])
    level = f"{1 - res['alpha']:.0%}"
    d, lo, hi = res["diff"], res["ci_low"], res["ci_high"]
    if d != 0 and abs(d) < 10 ** -digits:
        digits = min(8, 1 - int(math.floor(math.log10(abs(d)))))
    f = lambda x: f"{x:.{digits}f}"  # noqa: E731
    ci = f"{level} CI {f(lo)} to {f(hi)}, {res['n']:,} {res['unit']}"
    if d == 0:
        core = f"{name_a}'s {m} equals {name_b}'s ({ci})"
    else:
        core = f"{name_a}'s {m} is {'higher' if d > 0 else 'lower'} than {name_b}'s by {f(abs(d))} ({ci})"
    better = (d < 0) == res["lower_is_better"]
    if lo <= 0 <= hi:
        tail = "; the interval includes 0, so these data show no reliable difference."
    else:
        tail = f"; {name_a if better else name_b} is better ({'lower' if res['lower_is_better'] else 'higher'} is " \
               f"better)."
    return core + tail

