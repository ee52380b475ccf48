"""The answer for rating prediction (RMSE): the best rating model against the best floor per comparability group,
built from the runs (the rating half of recsys.compare.answer, which re-exports these names)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from recsys.compare.answer import (
    Comparison,
    Contender,
    _best,
    _contenders,
    _fmt,
    _groups,
    _no_comparison,
    mean_sd_text,
)
from recsys.compare.describe import protocol_summary
from recsys.compare.discovery import info_of
from recsys.compare.paired import ComparisonError, compare_pair
from recsys.compare.seeds import SeedAlignmentError, per_user_mean, pooled_rating_rows, seed_groups
from recsys.compare.variants import is_ablation


@dataclass
class RatingVerdict:
    title: str
    dataset: str
    protocol: str
    model: Contender | None
    floor: Contender | None
    comparison: Comparison | None
    contenders: list[Contender] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    headline: str = ""
    ss4rec: list[Comparison] = field(default_factory=list)  # the best SS4Rec vs the best other learned model / floor


def interval_over_users(frames: Sequence[pd.DataFrame], family: str, metric: str, n_boot: int = 1000
                        ) -> tuple[float, float]:
    """95% bootstrap interval, over the held-out users (ranking: per-user `metric` averaged over the seeds) or rows
    (rating: squared errors averaged over the seeds, RMSE recomputed per resample), of one configuration's test
    metric; (nan, nan) when its seeds cannot be pooled."""
    from recsys.compare.breakdowns import bucket_interval

    try:
        if family == "ranking":
            values = per_user_mean(list(frames), [metric])[metric].to_numpy(float)
            return bucket_interval(values, n_boot=n_boot)
        rows = pooled_rating_rows(list(frames))
        col = "sq_error" if metric == "rmse" else "abs_error"
        return bucket_interval(rows[col].to_numpy(float), sqrt=metric == "rmse", n_boot=n_boot)
    except (SeedAlignmentError, ComparisonError, KeyError, ValueError):
        return math.nan, math.nan


def rating_verdicts(runs: Sequence[Any], load_results: Callable[[Any], pd.DataFrame], n_boot: int = 2000,
                    seed: int = 0) -> list[RatingVerdict]:
    out = []
    for group in _groups(runs, "rating"):
        contenders = _contenders(seed_groups(group.members), "rmse", ["rmse", "mae"], lower_is_better=True)
        model = _best(contenders, lambda c: not c.floor and not is_ablation(c.seeds.info))
        floor = _best(contenders, lambda c: c.floor)
        ss4rec = _best(contenders, lambda c: c.model == "ss4rec" and not is_ablation(c.seeds.info))
        info = info_of(group.members[0])
        split = (info.get("protocol") or {}).get("split")
        v = RatingVerdict(title=f"{info['dataset'].get('name')}, {split} hold-out",
                          dataset=str(info["dataset"].get("name")), protocol=protocol_summary(info, "rating"),
                          model=model, floor=floor, comparison=None, contenders=contenders)
        if model is not None and floor is not None:
            model.beats_floor = bool(model.test["rmse"][0] < floor.test["rmse"][0])
            v.comparison = _compare_rating(model, floor, load_results, n_boot, seed)
        if ss4rec is not None:  # "on which metric": SS4Rec's own rating number against its rivals, whoever won
            learned = [c for c in contenders if c.model != "ss4rec" and not c.floor and not is_ablation(c.seeds.info)]
            rivals = (_best(learned, lambda c: True), _best(contenders, lambda c: c.model == "ncf"), floor)
            v.ss4rec = [_compare_rating(ss4rec, b, load_results, n_boot, seed) for i, b in enumerate(rivals)
                        if b is not None and all(b is not x for x in rivals[:i])]
        v.caveats = _rating_caveats(v)
        v.headline = _rating_headline(v)
        out.append(v)
    return out


def _compare_rating(a: Contender, b: Contender, load_results, n_boot: int, seed: int) -> Comparison:
    """Paired bootstrap of RMSE(a) - RMSE(b) on the same held-out rows, squared errors averaged over seeds."""
    try:
        fa = pooled_rating_rows([load_results(m) for m in a.seeds.members], a.name)
        fb = pooled_rating_rows([load_results(m) for m in b.seeds.members], b.name)
        r = compare_pair(fa, fb, "rating", "rmse", n_boot=n_boot, seed=seed, names=(a.name, b.name))
    except Exception as exc:  # an unreadable or misaligned result is a message on the page, never a traceback
        return _no_comparison(a, b, "rmse", n_boot, str(exc), lower_is_better=True)
    return Comparison(a.name, b.name, "rmse", r["mean_a"], r["mean_b"], r["diff"], r["ci_low"], r["ci_high"],
                      r["p_value"], int(r["n"]), int(r["n_boot"]), lower_is_better=True)


def _config(c: Contender) -> dict:
    return info_of(c.seeds.members[0]).get("config") or {}


def _rating_caveats(v: RatingVerdict) -> list[str]:
    caveats = ["Each configuration's epoch was selected on validation RMSE; test RMSE is read once. The paired "
               "interval uses each held-out row's squared error averaged over the seeds (RMSE pooled over seeds)."]
    if v.model is not None and v.model.n_seeds < 2:
        caveats.append(f"One seed only for {v.model.name}.")
    if v.model is not None and v.model.beats_floor is False and v.floor is not None:  # set against a floor
        caveats.append(f"{v.model.name} does not beat the {v.floor.name} floor on test RMSE.")
    if not any(_config(c).get("rating_input") for c in v.contenders):
        caveats.append("No rating-aware sequence model (one that reads the history's ratings) is among these runs: "
                       "SS4Rec's shipped ranking configuration has no rating head.")
    if any(c.model == "ss4rec" and _config(c).get("rating_input") and _config(c).get("target_gap", "given") == "given"
           for c in v.contenders):
        caveats.append("Rating-aware SS4Rec is told the time of the rating it predicts (its S5 integrates the gap to "
                       "it), as released SS4Rec is for ranking; NCF, the floors and SASRec are not.")
    if any(c.model == "ss4rec" and not _config(c).get("rating_input") for c in v.contenders):
        caveats.append("An SS4Rec without rating input predicts ratings from movies and times only (its rating head "
                       "never sees a rating): its RMSE shows what order and time alone say about the next rating.")
    return caveats


def _rating_headline(v: RatingVerdict) -> str:
    if v.model is None:
        return f"No learned rating model on {v.title}."
    c = v.comparison
    if c is None or c.problem or v.floor is None:  # (a comparison is made only with a floor)
        return f"{v.model.name} ({v.model.seeds_text}): test RMSE {mean_sd_text(v.model.test['rmse'])}; no floor to " \
               f"compare with."
    verb = ("beats" if c.a_better else "loses to") if c.reliable else "does not reliably differ from"
    return (f"On {v.title}, {v.model.name} ({v.model.seeds_text}) {verb} {c.b} on test RMSE: "
            f"{mean_sd_text(v.model.test['rmse'])} vs {_fmt(v.floor.test['rmse'][0])} (pooled difference "
            f"{c.diff:+.4f}, 95% CI {c.ci_low:+.4f} … {c.ci_high:+.4f}; lower is better).")


__all__ = ["RatingVerdict", "interval_over_users", "rating_verdicts"]
