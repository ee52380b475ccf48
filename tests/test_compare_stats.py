"""Compare's statistics: paired alignment and bootstrap (incl. RMSE), plain-language sentences, breakdown bins and
their intervals, seeds pooled per configuration."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys import charts
from recsys import compare as C
from recsys.evaluation.metrics import paired_bootstrap
from tests.helpers import (
    info_for,
    ranking_results,
    rating_results,
)

# ---------------------------------------------------------------------------------------------- paired bootstrap


def test_ranking_alignment_by_user_and_refusal_on_mismatch():
    a = ranking_results(ndcg=(0.5, 0.0, 1.0, 0.25))
    b = ranking_results(ndcg=(0.25, 0.0, 0.5, 0.25)).iloc[::-1].reset_index(drop=True)  # other row order
    merged = C.align_pair(a, b, "ranking")
    assert list(merged["user_id"]) == [1, 2, 3, 4]
    assert list(merged["ndcg@10_a"] - merged["ndcg@10_b"]) == [0.25, 0.0, 0.5, 0.0]
    res = C.compare_pair(a, b, "ranking", "ndcg@10", n_boot=500, names=("SS4Rec", "NCF"))
    assert res["diff"] == pytest.approx(0.1875) and res["n"] == 4 and res["unit"] == "users"
    assert res["ci_low"] >= 0 and res["ci_high"] <= 0.5

    with pytest.raises(C.ComparisonError, match=r"not evaluated on the same users: 4 vs 3; 1 only in A \(e.g. 4\)"):
        C.align_pair(a, b.iloc[1:], "ranking")
    with pytest.raises(C.ComparisonError, match="different held-out item for 1"):
        C.align_pair(a, ranking_results(targets=(10, 20, 30, 41)), "ranking")
    with pytest.raises(C.ComparisonError, match="more than once"):
        C.align_pair(pd.concat([a, a.iloc[:1]]), b, "ranking")


def test_rating_alignment_by_user_and_item_across_a_rating_head_and_a_rating_run():
    rating = rating_results()
    head = ranking_results().assign(pred_rating=[4.0, 2.0, 5.0, 1.0], target_rating=[4.0, 3.0, 5.0, 1.0])
    head["sq_error"] = (head["pred_rating"] - head["target_rating"]) ** 2
    res = C.compare_pair(head, rating, "rating", "rmse", n_boot=300)
    assert res["mean_a"] == pytest.approx(math.sqrt(1 / 4)) and res["mean_b"] == pytest.approx(math.sqrt(6 / 4))
    assert res["unit"] == "held-out ratings" and res["lower_is_better"]
    mae = C.compare_pair(head, rating, "rating", "mae", n_boot=300)  # abs_error derived for the rating head
    assert mae["mean_a"] == pytest.approx(0.25) and mae["mean_b"] == pytest.approx(1.0)

    with pytest.raises(C.ComparisonError, match=r"same held-out \(user, item\) rows"):
        C.align_pair(head, rating_results(items=(10, 20, 30, 99)), "rating")
    with pytest.raises(C.ComparisonError, match="true ratings differ"):
        C.align_pair(head, rating_results(ratings=(4.0, 3.0, 5.0, 2.0)), "rating")
    with pytest.raises(C.ComparisonError, match="no per-rating errors"):
        C.align_pair(ranking_results(), rating, "rating")


def rmse_bootstrap(sq_a, sq_b, **kw):
    """The RMSE statistic of the one paired bootstrap (what compare_pair uses for metric="rmse")."""
    return paired_bootstrap(sq_a, sq_b, statistic="rmse", **kw)


def test_rmse_bootstrap_on_hand_computable_cases():
    # every row: sq_a = 1, sq_b = 0.25 -> every resample has RMSE 1 vs 0.5: diff 0.5 exactly, no spread
    res = rmse_bootstrap(np.ones(7), np.full(7, 0.25), n_boot=200)
    assert (res["mean_a"], res["mean_b"], res["diff"]) == (1.0, 0.5, 0.5)
    assert res["ci_low"] == res["ci_high"] == 0.5 and res["p_value"] == 0.0 and res["n_users"] == 7

    # two rows, sq_a = [4, 0], sq_b = [0, 0]: RMSE is sqrt(mean) = sqrt(2), not mean(sqrt) = 1. A resample picks
    # (row0, row0) p=1/4 -> 2, one of each p=1/2 -> sqrt(2), (row1, row1) p=1/4 -> 0.
    res = rmse_bootstrap([4.0, 0.0], [0.0, 0.0], n_boot=20000, seed=1)
    assert res["diff"] == pytest.approx(math.sqrt(2)) and res["mean_b"] == 0.0
    assert res["ci_low"] == 0.0 and res["ci_high"] == 2.0
    assert res["p_value"] == pytest.approx(2 * 0.25, abs=0.03)  # P(diff* <= 0) = P(both row 1) = 1/4
    again = rmse_bootstrap([4.0, 0.0], [0.0, 0.0], n_boot=20000, seed=1, chunk_size=333)
    assert again == res  # depends on the seed, not on the chunking
    with pytest.raises(ValueError, match="same rows"):
        rmse_bootstrap([1.0, 2.0], [1.0], n_boot=10)

    # compare_pair's RMSE is that statistic on the aligned rows' squared errors
    a, b = rating_results(preds=(3.0, 3.0, 4.0, 3.0)), rating_results(preds=(4.5, 2.0, 5.0, 1.5))
    pair = C.compare_pair(a, b, "rating", "rmse", n_boot=300, seed=2)
    direct = rmse_bootstrap(a["sq_error"].to_numpy(), b["sq_error"].to_numpy(), n_boot=300, seed=2)
    assert {k: pair[k] for k in direct} == direct


def test_comparison_sentence_is_plain_language():
    res = {"metric": "ndcg@10", "diff": 0.012, "ci_low": 0.004, "ci_high": 0.020, "alpha": 0.05, "n": 943,
           "unit": "users", "lower_is_better": False}
    s = C.comparison_sentence(res, "SS4Rec", "NCF")
    assert s.startswith("SS4Rec's NDCG@10 is higher than NCF's by 0.012 (95% CI 0.004 to 0.020, 943 users)")
    assert "SS4Rec is better" in s
    tiny = C.comparison_sentence({**res, "metric": "rmse", "diff": -0.00013, "ci_low": -0.004, "ci_high": 0.003,
                                  "lower_is_better": True, "unit": "held-out ratings"}, "A", "B")
    assert "lower than B's by 0.00013" in tiny and "includes 0" in tiny
    assert C.format_p(0.0, 2000) == "< 0.0005" and C.format_p(0.0123, 2000) == "0.012"
    order = C.preferred_order([info_for("popular"), info_for("ncf"), info_for("ss4rec")])
    assert order == [2, 1, 0]  # SS4Rec is run A by default, floors last


# ---------------------------------------------------------------------------------------------- breakdowns


def test_breakdown_bins():
    gaps = [0, 59, 60, 3599, 3600, 86399, 86400, 7 * 86400 - 1, 7 * 86400, 30 * 86400 - 1, 30 * 86400, 10 ** 9]
    assert list(C.gap_buckets(gaps)) == ["<1 min", "<1 min", "1 min–1 h", "1 min–1 h", "1 h–1 d", "1 h–1 d",
                                         "1 d–1 w", "1 d–1 w", "1 w–1 mo", "1 w–1 mo", ">1 mo", ">1 mo"]
    hist = [4, 20, 21, 50, 51, 100, 101, 200, 201, 5000]
    assert list(C.activity_buckets(hist)) == ["≤20", "≤20", "21–50", "21–50", "51–100", "51–100",
                                              "101–200", "101–200", ">200", ">200"]
    q = C.activity_buckets([1, 2, 3, 4, 5, 6, 7, 8], "quantile", q=4)
    assert list(q.categories) == ["1–2", "3–4", "5–6", "7–8"] and list(q.codes) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(C.activity_buckets([5, 5, 5], "quantile").categories) == ["5"]


def test_breakdown_per_run_with_counts_and_skips_rating_runs_without_gaps():
    frames = {"A": ranking_results(ndcg=(0.5, 0.0, 1.0, 0.25)), "B": ranking_results(ndcg=(0.0, 0.0, 0.5, 0.5))}
    df, skipped, borrowed = C.breakdown(frames, "gap", "ranking", "ndcg@10")
    a = df[df["run"] == "A"].set_index("bucket")
    assert a.loc["<1 min", "value"] == 0.5 and a.loc["1 min–1 h", "count"] == 1 and a.loc["1 d–1 w", "count"] == 0
    assert math.isnan(a.loc["1 d–1 w", "value"]) and len(df) == 12 and not skipped and borrowed is None
    df, _, _ = C.breakdown(frames, "activity", "ranking", "hr@10")
    assert df[df["run"] == "B"].set_index("bucket").loc[">200", "value"] == 1.0
    charts.breakdown_chart(df, "HR@10", "activity").to_dict()

    # a rating run records no gap: skipped with a reason ...
    df, skipped, borrowed = C.breakdown({"bias": rating_results()}, "gap", "rating", "rmse")
    assert df.empty and "no time gap" in skipped["bias"]
    # ... unless a rating head in the group holds the same (user, item) rows: RMSE per bucket = sqrt(mean sq)
    head = ranking_results().assign(pred_rating=[4.0, 3.0, 5.0, 1.0], target_rating=[4.0, 3.0, 5.0, 1.0],
                                    sq_error=0.0)
    df, skipped, borrowed = C.breakdown({"ss4rec": head, "bias": rating_results()}, "gap", "rating", "rmse")
    bias = df[df["run"] == "bias"].set_index("bucket")
    assert borrowed == "ss4rec" and not skipped
    assert bias.loc["<1 min", "value"] == 1.0 and bias.loc[">1 mo", "value"] == 2.0  # user 4: (3 - 1)^2 = 4


def test_breakdown_buckets_carry_a_bootstrap_interval():
    v = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.0, 1.0])
    lo, hi = C.bucket_interval(v, n_boot=4000, seed=1)
    # the mean 0.5 lies inside; the width is about 2 x 1.96 x sd/sqrt(n) of the mean
    half = 1.96 * v.std() / math.sqrt(len(v))
    assert lo < 0.5 < hi and (hi - lo) == pytest.approx(2 * half, rel=0.2)
    assert C.bucket_interval(np.array([0.3])) == (0.3, 0.3)
    assert all(math.isnan(x) for x in C.bucket_interval(np.array([])))
    lo, hi = C.bucket_interval(np.array([4.0, 0.0, 1.0, 9.0]), sqrt=True)  # RMSE of squared errors
    assert 0 <= lo < math.sqrt(3.5) < hi <= 3.0
    frames = {"A": ranking_results(ndcg=(0.5, 0.0, 1.0, 0.25))}
    df, _, _ = C.breakdown(frames, "gap", "ranking", "ndcg@10")
    full = df.dropna(subset=["value"])
    assert ((full["ci_low"] <= full["value"]) & (full["value"] <= full["ci_high"])).all()
    spec = charts.breakdown_chart(df, "NDCG@10", "gap").to_dict()
    assert len(spec["layer"]) == 3  # bars, interval rules, counts
    # the rules and counts sit at the middle of their own bar, not at its left edge
    assert all(layer["encoding"]["xOffset"].get("bandPosition") == 0.5 for layer in spec["layer"][1:])


def test_breakdown_pools_the_seeds_of_a_configuration():
    runs = {"s0": info_for("sasrec", run_id="s0"), "s1": info_for("sasrec", run_id="s1"),
            "pop": info_for("popular", run_id="pop")}
    runs["s0"]["config"]["seed"], runs["s1"]["config"]["seed"] = 0, 1
    frames = {"s0": ranking_results(ndcg=(0.5, 0.0, 1.0, 0.25)), "s1": ranking_results(ndcg=(0.3, 0.2, 0.0, 0.25)),
              "pop": ranking_results(ndcg=(0.0, 0.0, 0.1, 0.0))}
    pooled, problems = C.pooled_breakdown_frames(runs, frames)
    assert not problems and set(pooled) == {"SASRec · len50 (2 seeds)", "Popular (floor)"}
    assert pooled["SASRec · len50 (2 seeds)"]["ndcg@10"].tolist() == pytest.approx([0.4, 0.1, 0.5, 0.25])
    df, _, _ = C.breakdown(pooled, "gap", "ranking", "ndcg@10")
    assert set(df["run"]) == {"SASRec · len50 (2 seeds)", "Popular (floor)"}  # one bar per configuration
    frames["s1"] = ranking_results(users=(1, 2, 3, 5), ndcg=(0.3, 0.2, 0.0, 0.25))
    pooled, problems = C.pooled_breakdown_frames(runs, frames)
    assert "seeds shown apart" in problems[0] and {"s0", "s1"} <= set(pooled)
