"""Breakdowns: a metric per bucket of user activity or of the time gap before the held-out interaction, per run
(the numbers behind recsys.charts.breakdown_chart).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from recsys.compare.paired import ComparisonError, _rating_rows

ACTIVITY_EDGES = (20, 50, 100, 200)
ACTIVITY_LABELS = ("≤20", "21–50", "51–100", "101–200", ">200")
_MIN, _HOUR, _DAY = 60, 3600, 86400
# The one rule for the gap to a predicted interaction, in seconds: bins [lower, upper) on these edges (a gap of
# exactly 60 s is "1 min or more" everywhere). Every bucketing a page or a document shows is a coarsening of it: it
# picks a subset of the edges, so no two tables can put one gap in different places.
GAP_RULE_EDGES = (1, _MIN, _HOUR, _DAY, 7 * _DAY, 30 * _DAY)
GAP_SCHEMES = {
    # Compare's breakdowns: how long since the user's previous rating
    "detail": ((_MIN, _HOUR, _DAY, 7 * _DAY, 30 * _DAY),
               ("<1 min", "1 min–1 h", "1 h–1 d", "1 d–1 w", "1 w–1 mo", ">1 mo")),
    # What matters: the regimes that matter for a model told the target's time
    "regime": ((1, _MIN, _DAY), ("same second", "1 s – 1 min", "1 min – 1 day", "over a day")),
}
GAP_EDGES, GAP_LABELS = GAP_SCHEMES["detail"]


def activity_buckets(history_length, scheme: str = "fixed", q: int = 4, reference=None) -> pd.Categorical:
    """User activity (interactions before the held-out one) in buckets.

    fixed: ≤20, 21–50, 51–100, 101–200, >200 (with 5-core data every test user has at least 4). quantile: `q`
    buckets of equal size with edges from `reference` (default: the values themselves), labelled by their integer
    ranges, so several runs of the same users get the same buckets."""
    v = np.asarray(history_length, dtype=np.float64)
    if scheme == "fixed":
        codes = np.searchsorted(np.asarray(ACTIVITY_EDGES, float), v, side="left")
        return pd.Categorical.from_codes(codes, categories=list(ACTIVITY_LABELS), ordered=True)
    if scheme != "quantile":
        raise ValueError(f"scheme must be fixed or quantile, not {scheme!r}")
    ref = np.asarray(v if reference is None else reference, dtype=np.float64)
    edges = np.unique(np.floor(np.quantile(ref, np.linspace(0, 1, int(q) + 1))))
    if len(edges) < 2:
        edges = np.array([edges[0], edges[0]])
    inner = edges[1:-1]
    labels = []
    for i in range(len(edges) - 1):
        lo = int(edges[0]) if i == 0 else int(edges[i]) + 1
        hi = int(edges[i + 1])
        labels.append(str(lo) if lo == hi else f"{lo}–{hi}")
    if len(set(labels)) < len(labels):  # degenerate (all values equal): one bucket
        labels, inner = [labels[0]], np.array([])
    codes = np.searchsorted(inner, v, side="left")
    return pd.Categorical.from_codes(codes, categories=labels, ordered=True)


def gap_buckets(gap_seconds, scheme: str = "detail") -> pd.Categorical:
    """Time between a user's previous interaction and the held-out one, in one of GAP_SCHEMES (default `detail`:
    <1 min, 1 min–1 h, 1 h–1 d, 1 d–1 w, 1 w–1 mo (30 days), >1 mo). Bins are [lower, upper) on GAP_RULE_EDGES:
    exactly 1 h goes to 1 h–1 d."""
    edges, labels = GAP_SCHEMES[scheme]
    v = np.asarray(gap_seconds, dtype=np.float64)
    codes = np.searchsorted(np.asarray(edges, float), v, side="right")
    return pd.Categorical.from_codes(codes, categories=list(labels), ordered=True)


def _borrow_context(frames: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], str | None]:
    """For rating rows: history_length / gap_before_target from a run that has them for the same (user, item)
    (the rating head of a ranking run holds them; the chronological rating rows are the same interactions)."""
    donors = [(n, f) for n, f in frames.items() if "history_length" in f and "gap_before_target" in f]
    if not donors:
        return frames, None
    dname, donor = donors[0]
    ctx = donor[[c for c in ("user_id", "user") if c in donor][:1] + ["item", "history_length",
                                                                        "gap_before_target"]]
    out = {}
    for n, f in frames.items():
        if "history_length" in f or not set(ctx.columns[:2]) <= set(f.columns):
            out[n] = f
            continue
        out[n] = f.merge(ctx.drop_duplicates(list(ctx.columns[:2])), on=list(ctx.columns[:2]), how="left")
    return out, dname


def breakdown(frames: dict[str, pd.DataFrame], by: str, family: str, metric: str, scheme: str = "fixed",
              q: int = 4) -> tuple[pd.DataFrame, dict[str, str], str | None]:
    """Metric per bucket of user activity (`by="activity"`) or of the gap before the held-out interaction
    (`by="gap"`), per run.

    `frames` maps a run name to its test results. Ranking: mean per-user `metric`; rating: RMSE (`metric="rmse"`,
    sqrt of the mean squared error in the bucket) or MAE. Returns (long frame with run, bucket, value, count;
    every bucket of every run, value NaN where empty), {run: why it was skipped}, and the run whose context was
    borrowed for rating runs without it (or None)."""
    col = {"activity": "history_length", "gap": "gap_before_target"}[by]
    borrowed = None
    if family == "rating":
        rows = {}
        skipped: dict[str, str] = {}
        for n, f in frames.items():
            try:
                rows[n] = _rating_rows(f, n)
            except ComparisonError as exc:
                skipped[n] = str(exc)
        rows, borrowed = _borrow_context(rows)
    else:
        rows, skipped = dict(frames), {}
    usable = {}
    for n, f in rows.items():
        if col not in f or f[col].isna().all():
            what = "history length" if by == "activity" else "time gap"
            skipped[n] = f"no {what} per held-out row in its results (rating runs do not record it)"
        elif family == "ranking" and metric not in f:
            skipped[n] = f"no per-user {metric}"
        else:
            usable[n] = f[f[col].notna()]
    reference = np.concatenate([f[col].to_numpy(float) for f in usable.values()]) if usable else None
    parts = []
    for n, f in usable.items():
        buckets = (activity_buckets(f[col], scheme, q, reference) if by == "activity" else gap_buckets(f[col]))
        if family == "ranking":
            vals = f[metric].astype(float)
        else:
            vals = f["sq_error" if metric == "rmse" else "abs_error"].astype(float)
        g = pd.DataFrame({"bucket": buckets, "v": vals.to_numpy()}).groupby("bucket", observed=False)["v"]
        agg = g.agg(["mean", "count"]).reset_index()
        root = family == "rating" and metric == "rmse"
        bounds = [bucket_interval(v.to_numpy(float), sqrt=root) for _, v in g]
        if root:
            agg["mean"] = np.sqrt(agg["mean"])
        parts.append(pd.DataFrame({"run": n, "bucket": agg["bucket"], "value": agg["mean"],
                                   "count": agg["count"].astype(int), "ci_low": [b[0] for b in bounds],
                                   "ci_high": [b[1] for b in bounds]}))
    out = (pd.concat(parts, ignore_index=True) if parts
           else pd.DataFrame({"run": pd.Series(dtype=str), "bucket": pd.Series(dtype=str),
                              "value": pd.Series(dtype=float), "count": pd.Series(dtype=int),
                              "ci_low": pd.Series(dtype=float), "ci_high": pd.Series(dtype=float)}))
    return out, skipped, borrowed


def bucket_interval(values: np.ndarray, sqrt: bool = False, n_boot: int = 1000, alpha: float = 0.05,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (of its square root with `sqrt`: RMSE from squared
    errors); NaNs for an empty bucket, the value itself (zero width) for a bucket of one. Fixed seed: the same
    chart every time."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    if sqrt:
        means = np.sqrt(means)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)



def pooled_breakdown_frames(runs: dict[str, Any], frames: dict[str, pd.DataFrame]
                            ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Per-user ranking results of each configuration (its seeds pooled: recsys.compare.seeds), named by the
    configuration, for `breakdown`: one bar per configuration instead of one per seed. `runs` and `frames` are keyed
    by run name. A configuration whose seeds cannot be pooled keeps its runs apart, with the reason returned."""
    from recsys.compare.seeds import SeedAlignmentError, configuration_labels, per_user_mean, seed_groups

    names = {id(r): n for n, r in runs.items()}
    groups = seed_groups(list(runs.values()))
    out, problems = {}, []
    for g, label in zip(groups, configuration_labels(groups)):
        members = [names[id(m)] for m in g.members]
        if len(members) == 1:
            out[label] = frames[members[0]]
            continue
        first = frames[members[0]]
        metrics = [c for c in first.columns if "@" in c and all(c in frames[n] for n in members)]
        try:
            mean = per_user_mean([frames[n] for n in members], metrics)
        except SeedAlignmentError as exc:
            problems.append(f"{label}: seeds shown apart ({exc}).")
            out.update({n: frames[n] for n in members})
            continue
        key = "user_id" if "user_id" in mean else "user"
        context = [c for c in ("history_length", "gap_before_target") if c in first]
        out[f"{label} ({len(members)} seeds)"] = mean.merge(first[[key, *context]], on=key, how="left")
    return out, problems
