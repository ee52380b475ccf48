"""Seeds of one configuration: runs that differ only in their seed are one row (mean +- sd over seeds, how many),
and two configurations are compared on per-user metrics averaged over their seeds.

A *configuration* is (model, variant, dataset and its fingerprint, objective, protocol, every recorded setting) with
the settings that do not change what is learned left out: the seed itself and where/how it ran (`SEED_FREE`). Two
runs with the same `variant` name but another setting changed are two configurations, never silently pooled.

Floors fitted in closed form (popularity, Markov, bias) do not depend on the seed: one run is the whole answer and
is shown as "deterministic", with no sd.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.compare.describe import history_length, is_floor, metric_columns, model_label, run_metrics
from recsys.compare.discovery import info_of, label_of, objective
from recsys.evaluation.metrics import paired_bootstrap, two_level_bootstrap

SEED_FREE = frozenset({"seed", "cpu_threads", "device", "eval_batch_size", "data_dir"})
_PROTOCOL_FREE = frozenset({"notes", "sizes", "seed"})
DETERMINISTIC = frozenset({"global-mean", "bias", "recent-residual", "popular", "markov"})


def variant_of(info: dict) -> str:
    cfg = info.get("config") or {}
    return str(cfg.get("variant") or info.get("variant") or "default")


def seed_of(info: dict) -> int | None:
    seed = (info.get("config") or {}).get("seed")
    return int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None


# settings added after runs were shipped, with the value those runs had without recording it: a run that records
# the default and one that predates the setting are the same configuration
ADDED_DEFAULTS = {"gap_ablation": "none", "target_gap": "given", "blocks": "s5+mamba", "target_gap_embedding": False,
                  "tie_order": "file", "rating_input": False, "ce_weight": 1.0, "rating_weight": 1.0,
                  "rating_skip": True, "rating_bias_init": False}


def configuration_key(info: dict) -> str:
    """Equal for runs that differ only in seed (and where they ran)."""
    ds = info.get("dataset") or {}
    cfg = {k: v for k, v in (info.get("config") or {}).items()
           if k not in SEED_FREE and not (k in ADDED_DEFAULTS and v == ADDED_DEFAULTS[k])}
    proto = {k: v for k, v in (info.get("protocol") or {}).items() if k not in _PROTOCOL_FREE}
    return json.dumps({"model": info.get("model"), "objective": objective(info), "variant": variant_of(info),
                       "dataset": [ds.get("name"), ds.get("fingerprint"), ds.get("filters")],
                       "protocol": proto, "config": cfg}, sort_keys=True, default=str)


@dataclass
class SeedGroup:
    """The runs of one configuration, ordered by seed."""

    key: str
    members: list = field(default_factory=list)

    @property
    def info(self) -> dict:
        return info_of(self.members[0])

    @property
    def model(self) -> str:
        return str(self.info.get("model"))

    @property
    def variant(self) -> str:
        return variant_of(self.info)

    @property
    def seeds(self) -> list[int | None]:
        return [seed_of(info_of(m)) for m in self.members]

    @property
    def deterministic(self) -> bool:
        return self.model in DETERMINISTIC

    @property
    def label(self) -> str:
        v = self.variant
        return model_label(self.info) + ("" if v == "default" else f" · {v}")

    def seeds_text(self) -> str:
        if self.deterministic:
            return "deterministic"
        n = len(self.members)
        return f"{n} seed{'s' if n != 1 else ''}"


def seed_groups(items: Sequence[Any]) -> list[SeedGroup]:
    """Runs grouped by configuration (first appearance order); duplicates of one seed are kept as members."""
    groups: dict[str, SeedGroup] = {}
    for item in items:
        key = configuration_key(info_of(item))
        groups.setdefault(key, SeedGroup(key)).members.append(item)
    for g in groups.values():
        g.members.sort(key=lambda m: (seed_of(info_of(m)) is None, seed_of(info_of(m)) or 0, label_of(m)))
    return list(groups.values())


def mean_sd(values: Sequence[float | None]) -> tuple[float, float, int]:
    """(mean, sample sd, n) of the finite values (None: missing); sd is NaN for fewer than two."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, int(len(v))


def configuration_labels(groups: Sequence[SeedGroup]) -> list[str]:
    """A distinct name per configuration: model (and variant), the history length of sequence models, and a number
    where two configurations would still share a name (they differ in another setting; see `runs`)."""
    names = [_row(g) for g in groups]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n} #{seen[n]}")
    return out


def seed_table(groups: Sequence[SeedGroup], k: int = 10, split: str = "test",
               family: str | None = None) -> pd.DataFrame:
    """One row per configuration: each metric's mean and sd over seeds, the number of seeds, the runs."""
    rows = []
    for g, name in zip(groups, configuration_labels(groups)):
        per_run = [run_metrics(info_of(m), k, split, family) for m in g.members]
        row: dict[str, Any] = {"model": name, "floor": is_floor(g.info), "seeds": g.seeds_text(),
                               "n seeds": len(g.members)}
        for col in metric_columns(k):
            mean, sd, n = mean_sd([r.get(col) for r in per_run])
            row[col] = mean
            row[f"{col} sd"] = sd if not g.deterministic else math.nan
        row["runs"] = ", ".join(label_of(m) for m in g.members)
        rows.append(row)
    cols = ["model", *[c for m in metric_columns(k) for c in (m, f"{m} sd")], "seeds", "n seeds", "floor", "runs"]
    return pd.DataFrame(rows, columns=cols)


def format_mean_sd(mean: float, sd: float, digits: int = 4) -> str:
    if mean is None or not np.isfinite(mean):
        return ""
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None and np.isfinite(sd) else "")


def format_seed_table(df: pd.DataFrame, k: int = 10, digits: int = 4) -> pd.DataFrame:
    """Display strings: "mean ± sd" per metric (no sd for one seed or a deterministic floor); empty metrics dropped."""
    out = pd.DataFrame({"model": df["model"]})
    for col in metric_columns(k):
        if col in df and not df[col].isna().all():
            out[col] = [format_mean_sd(m, s, digits) for m, s in zip(df[col], df[f"{col} sd"])]
    out["seeds"] = df["seeds"]
    out["floor"] = ["floor" if f else "" for f in df["floor"]]
    out["runs"] = df["runs"]
    return out


def floor_flags(df: pd.DataFrame, column: str, lower_is_better: bool = False) -> list[str]:
    """For each row of a table with "model", "floor" and `column` (seed_table or metrics_table): "" for floors and
    blanks, "yes" when the row is better than the best floor on `column`, "NO (floor <name>: <value>)" otherwise."""
    if column not in df or "floor" not in df:
        return [""] * len(df)
    floors = df[df["floor"].astype(bool) & df[column].notna()]
    if floors.empty:
        return [""] * len(df)
    best = floors.loc[floors[column].idxmin() if lower_is_better else floors[column].idxmax()]
    out = []
    for _, row in df.iterrows():
        v = row[column]
        if bool(row["floor"]) or v is None or not np.isfinite(v):
            out.append("")
        elif (v < best[column]) if lower_is_better else (v > best[column]):
            out.append("yes")
        else:
            out.append(f"NO (floor {best['model']}: {best[column]:.4f})")
    return out


def interval_floor_flags(df: pd.DataFrame, frames: Sequence[Sequence[pd.DataFrame] | None], column: str,
                         metric: str, interval: str = "seeds+users", n_boot: int = 1000) -> list[str]:
    """floor_flags judged by the paired interval instead of the means (ranking, test): for each row of a seed_table
    (`frames[i]`: its seeds' per-user results, None when missing) the interval of (row - best floor) on `metric`:
    "yes" when it lies above 0, "NO (below …)" when below, "not reliably (…)" when it holds 0; the means' flag, marked
    "(means)", where per-user results are missing."""
    means = floor_flags(df, column)
    if column not in df or "floor" not in df:
        return means
    floors = df[df["floor"].astype(bool) & df[column].notna()]
    if floors.empty:
        return means
    best = int(df.index.get_loc(floors[column].idxmax()))
    out = []
    for i in range(len(df)):
        if not means[i]:
            out.append("")
            continue
        mine, floor = frames[i], frames[best]
        if mine is None or floor is None:
            out.append(f"{means[i]} (means)")
            continue
        try:
            r = compare_configurations(mine, floor, metric, n_boot=n_boot, interval=interval)
        except (SeedAlignmentError, ValueError) as exc:
            out.append(f"not comparable ({exc})")
            continue
        text = f"{r['diff']:+.4f}, 95% CI {r['ci_low']:+.4f} … {r['ci_high']:+.4f}"
        out.append("yes" if r["ci_low"] > 0 else f"NO (below: {text})" if r["ci_high"] < 0
                   else f"not reliably ({text})")
    return out


class SeedAlignmentError(ValueError):
    """The seeds of a configuration were not evaluated on the same users; the message says why."""


def aligned_seeds(frames: Sequence[pd.DataFrame], metrics: Sequence[str]) -> list[pd.DataFrame]:
    """Each seed's per-user results indexed by user (sorted), after checking that every seed was tested on the same
    users with the same held-out items (SeedAlignmentError otherwise)."""
    if not frames:
        raise SeedAlignmentError("no per-user results")
    col = "user_id" if all("user_id" in f for f in frames) else "user"
    indexed = []
    for f in frames:
        missing = [m for m in metrics if m not in f]
        if missing:
            raise SeedAlignmentError(f"per-user results lack {', '.join(missing)}")
        if f[col].duplicated().any():
            raise SeedAlignmentError("per-user results hold a user twice")
        indexed.append(f.set_index(col)[list(metrics) + (["target"] if "target" in f else [])].sort_index())
    first = indexed[0]
    for other in indexed[1:]:
        if not other.index.equals(first.index):
            raise SeedAlignmentError("the seeds were tested on different users")
        if "target" in first and "target" in other and not (other["target"] == first["target"]).all():
            raise SeedAlignmentError("the seeds were tested on different held-out items")
    return indexed


def per_user_mean(frames: Sequence[pd.DataFrame], metrics: Sequence[str]) -> pd.DataFrame:
    """Per-user metrics averaged over the seeds of one configuration (ranking results: one row per user)."""
    indexed = aligned_seeds(frames, metrics)
    first = indexed[0]
    mean = sum(f[list(metrics)] for f in indexed) / len(indexed)
    if "target" in first:
        mean["target"] = first["target"]
    return mean.reset_index()


# How an interval between two configurations is drawn (the page names the one it shows)
INTERVALS = {
    "seeds+users": "two-level bootstrap: each configuration's seeds resampled, then the users (paired), so the "
                   "interval includes training randomness as far as the seeds show it",
    "users": "users resampled (paired) over per-user values averaged over each configuration's seeds: training "
             "randomness is not in the interval",
}
DEFAULT_INTERVAL = "seeds+users"


def compare_configurations(frames_a: Sequence[pd.DataFrame], frames_b: Sequence[pd.DataFrame], metric: str,
                           n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
                           interval: str = DEFAULT_INTERVAL) -> dict:
    """metric(A) - metric(B) of two configurations from their seeds' per-user results, with a 95% interval drawn
    as INTERVALS[interval] says; refused (SeedAlignmentError) unless every seed of both holds the same users with
    the same held-out items."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, not {interval!r}")
    ia, ib = aligned_seeds(frames_a, [metric]), aligned_seeds(frames_b, [metric])
    if not ia[0].index.equals(ib[0].index):
        raise SeedAlignmentError("the two configurations were tested on different users")
    if "target" in ia[0] and "target" in ib[0] and not (ia[0]["target"] == ib[0]["target"]).all():
        raise SeedAlignmentError("the two configurations were tested on different held-out items")
    A = np.vstack([f[metric].to_numpy(float) for f in ia])
    B = np.vstack([f[metric].to_numpy(float) for f in ib])
    if interval == "users":
        res = paired_bootstrap(A.mean(0), B.mean(0), n_boot=n_boot, alpha=alpha, seed=seed)
    else:
        res = two_level_bootstrap(A, B, n_boot=n_boot, alpha=alpha, seed=seed)
    return {**res, "metric": metric, "n": int(res["n_users"]), "unit": "users", "lower_is_better": False,
            "family": "ranking", "interval": interval}


def compare_groups(a: pd.DataFrame, b: pd.DataFrame, metric: str, n_boot: int = 2000, seed: int = 0,
                   alpha: float = 0.05) -> dict:
    """Paired bootstrap of metric(A) - metric(B) on per-user values averaged over each configuration's seeds,
    on the users both hold (refused unless they hold the same users with the same held-out items)."""
    col = "user_id" if "user_id" in a and "user_id" in b else "user"
    ia, ib = a.set_index(col).sort_index(), b.set_index(col).sort_index()
    if not ia.index.equals(ib.index):
        raise SeedAlignmentError("the two configurations were tested on different users")
    if "target" in ia and "target" in ib and not (ia["target"] == ib["target"]).all():
        raise SeedAlignmentError("the two configurations were tested on different held-out items")
    res = paired_bootstrap(ia[metric].to_numpy(float), ib[metric].to_numpy(float), n_boot=n_boot, alpha=alpha,
                           seed=seed)
    return {**res, "metric": metric, "n": int(res["n_users"]), "unit": "users", "lower_is_better": False,
            "family": "ranking"}




def _column(info: dict) -> str:
    ds = str((info.get("dataset") or {}).get("name", "?"))
    return ds + (" (masked)" if (info.get("protocol") or {}).get("mask_seen") else "")


def _row(g: SeedGroup) -> str:
    length = history_length(g.info)
    return g.label + (f" · len{length}" if length else "")


def per_user_differences(frames_a: Sequence[pd.DataFrame], frames_b: Sequence[pd.DataFrame], metric: str
                         ) -> pd.Series:
    """Per user: metric(A) - metric(B), each averaged over its configuration's seeds (indexed by user; refused,
    SeedAlignmentError, unless both were tested on the same users and held-out items)."""
    a, b = per_user_mean(frames_a, [metric]), per_user_mean(frames_b, [metric])
    col = "user_id" if "user_id" in a and "user_id" in b else "user"
    ia, ib = a.set_index(col)[metric].sort_index(), b.set_index(col)[metric].sort_index()
    if not ia.index.equals(ib.index):
        raise SeedAlignmentError("the two configurations were tested on different users")
    return (ia - ib).rename(f"{metric} A - B")


def win_tie_loss(differences: pd.Series, tol: float = 1e-12) -> dict[str, int]:
    """How many users A serves better (difference > 0), equally (|difference| <= tol: both miss the top-K, say)
    and worse."""
    d = np.asarray(differences, dtype=np.float64)
    return {"wins": int((d > tol).sum()), "ties": int((np.abs(d) <= tol).sum()), "losses": int((d < -tol).sum())}


def default_configuration_pair(groups: Sequence[SeedGroup]) -> tuple[int, int]:
    """Indices of the default A and B among configurations: the SS4Rec configuration with the best mean validation
    NDCG@10 against the best configuration of another learned model (a floor only when there is none)."""
    if len(groups) < 2:
        raise ValueError("a comparison needs two configurations")

    def valid(g: SeedGroup) -> float:
        raw = [((info_of(m).get("metrics") or {}).get("valid") or {}).get("ndcg@10") for m in g.members]
        vals = [float(v) for v in raw if isinstance(v, (int, float))]
        return float(np.mean(vals)) if vals else -math.inf

    order = sorted(range(len(groups)), key=lambda i: (groups[i].model != "ss4rec", -valid(groups[i])))
    a = order[0]
    rest = [i for i in order[1:] if groups[i].model != groups[a].model] or order[1:]
    b = min(rest, key=lambda i: (is_floor(groups[i].info), -valid(groups[i])))
    return a, b


def ranking_matrix(items: Sequence[Any], metric: str = "ndcg@10", split: str = "test") -> pd.DataFrame:
    """Model x dataset: `metric` as "mean ± sd (n seeds)" of each configuration of the complete ranking runs."""
    groups = seed_groups([m for m in items if objective(info_of(m)) == "ranking"
                          and info_of(m).get("status") == "complete"])
    cells: dict[str, dict[str, str]] = {}
    for g in groups:
        vals = [((info_of(m).get("metrics") or {}).get(split) or {}).get(metric) for m in g.members]
        mean, sd, _ = mean_sd(vals)
        cell = format_mean_sd(mean, math.nan if g.deterministic else sd) + f" ({g.seeds_text()})"
        cells.setdefault(_row(g), {})[_column(g.info)] = cell
    df = pd.DataFrame.from_dict(cells, orient="index").fillna("")
    df.index.name = "model"
    return df


def reference_comparisons(items: Sequence[Any], load_results, reference: tuple[str, str] = ("ss4rec", "released"),
                          metrics: Sequence[str] = ("ndcg@10", "hr@10", "mrr@10"), n_boot: int = 2000,
                          seed: int = 0, interval: str = DEFAULT_INTERVAL) -> pd.DataFrame:
    """For each dataset (column of `ranking_matrix`), the reference configuration (model, variant) against every
    other configuration (compare_configurations, its interval drawn as INTERVALS[interval] says).
    `load_results(item)` returns a run's per-user test results."""
    groups = seed_groups([m for m in items if objective(info_of(m)) == "ranking"
                          and info_of(m).get("status") == "complete"])
    rows = []
    for col in sorted({_column(g.info) for g in groups}):
        here = [g for g in groups if _column(g.info) == col]
        for ref in [g for g in here if (g.model, g.variant) == reference]:
            ref_frames = [load_results(m) for m in ref.members]
            for other in here:
                if other is ref:
                    continue
                other_frames = [load_results(m) for m in other.members]
                base = {"dataset": col, "reference": _row(ref), "other": _row(other)}
                for metric in metrics:
                    try:
                        r = compare_configurations(ref_frames, other_frames, metric, n_boot=n_boot, seed=seed,
                                                   interval=interval)
                    except SeedAlignmentError as exc:
                        rows.append({**base, "metric": metric, "problem": str(exc)})
                        continue
                    rows.append({**base, "metric": metric, "reference value": r["mean_a"], "other value": r["mean_b"],
                                 "diff": r["diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                                 "p_value": r["p_value"], "n_users": r["n"], "interval": interval,
                                 "seeds": f"{ref.seeds_text()} vs {other.seeds_text()}"})
    return pd.DataFrame(rows)


def pooled_rating_rows(frames: Sequence[pd.DataFrame], name: str = "run") -> pd.DataFrame:
    """The held-out rating rows of a configuration's seeds, with squared and absolute errors averaged over seeds
    (refused unless every seed holds the same (user, item) rows with the same true ratings)."""
    from recsys.compare.paired import _rating_rows
    rows = [_rating_rows(f, name) for f in frames]
    ucol = "user_id" if all("user_id" in r for r in rows) else "user"
    keyed = [r.set_index([ucol, "item"]).sort_index() for r in rows]
    first = keyed[0]
    if first.index.duplicated().any():
        raise SeedAlignmentError(f"{name}: a held-out (user, item) row appears twice")
    for other in keyed[1:]:
        if not other.index.equals(first.index):
            raise SeedAlignmentError(f"{name}: the seeds were tested on different held-out ratings")
    out = first[["rating"]].copy()
    out["sq_error"] = sum(k["sq_error"] for k in keyed) / len(keyed)
    out["abs_error"] = sum(k["abs_error"] for k in keyed) / len(keyed)
    out = out.reset_index().rename(columns={"rating": "target"})
    return out


__all__ = ["DETERMINISTIC", "SEED_FREE", "SeedAlignmentError", "SeedGroup", "compare_groups", "configuration_key",
           "configuration_labels", "floor_flags", "format_mean_sd", "format_seed_table", "mean_sd", "per_user_mean",
           "pooled_rating_rows", "ranking_matrix", "reference_comparisons", "seed_groups", "seed_of", "seed_table",
           "variant_of", "interval_floor_flags",
           "per_user_differences", "win_tie_loss", "default_configuration_pair", "aligned_seeds",
           "compare_configurations", "INTERVALS", "DEFAULT_INTERVAL"]
