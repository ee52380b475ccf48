"""The answer page's logic (recsys.compare.answer): which configuration stands for a model (validation, never test),
paired differences against hand-computed values, the verdict's wording, floors flagged, caveats derived from the
runs, the rating verdict's pooled RMSE; and the page itself on the shipped runs and on an empty folder."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from recsys import charts
from recsys.compare import answer as A
from recsys.evaluation.metrics import paired_bootstrap, two_level_bootstrap
from tests.conftest import ROOT
from tests.helpers import TARGETS, USERS, info_for, pattern, ranking_run, rating_results


def per_user(values):
    v = np.asarray(values, float)
    return pd.DataFrame({"user_id": list(USERS), "target": list(TARGETS), "ndcg@10": v, "hr@10": (v > 0) * 1.0,
                         "mrr@10": v / 2})


def build(specs):
    """specs: (info, per-user ndcg values) -> (runs, loader)."""
    frames = {info["run_id"]: per_user(vals) for info, vals in specs}
    return [info for info, _ in specs], (lambda info: frames[info["run_id"]])


def test_each_model_is_represented_by_its_best_validation_configuration_never_by_test():
    specs = [
        (ranking_run("ss4rec", 0, valid=0.09, test=0.04, variant="released"), pattern(0.04)),
        (ranking_run("ss4rec", 0, valid=0.07, test=0.09, variant="no-time"), pattern(0.09)),
        (ranking_run("sasrec", 0, valid=0.06, test=0.08), pattern(0.08)),
        (ranking_run("gru4rec", 0, valid=0.07, test=0.05), pattern(0.05)),
        (ranking_run("popular", 0, valid=0.02, test=0.02), pattern(0.02)),
    ]
    runs, load = build(specs)
    (v,) = A.ranking_verdicts(runs, load, n_boot=200)
    assert v.ss4rec.variant == "released"          # best validation, although "no-time" is higher on test
    assert v.baseline.model == "gru4rec"           # 0.07 valid beats SASRec's 0.06, although SASRec tests higher
    assert v.floor.model == "popular"
    assert [c.metric for c in v.comparisons] == ["ndcg@10", "hr@10", "mrr@10", "ndcg@10"]
    assert [c.b for c in v.comparisons] == [v.baseline.name] * 3 + [v.floor.name]
    assert len(v.variants) == 1 and v.variants[0].a.endswith("no-time · len50")
    table = A.contender_table(v)
    assert table["role"].tolist()[0] == "chosen SS4Rec"  # ordered by validation
    roles = dict(zip(table["configuration"], table["role"]))
    assert roles["GRU4Rec · len50"] == "best baseline" and roles["SASRec · len50"] == ""


def test_paired_difference_averages_each_configurations_seeds_per_user():
    s0, s1 = pattern(0.3, 0.2, seed=1), pattern(0.2, 0.2, seed=2)
    base = pattern(0.25, 0.2, seed=3)
    specs = [(ranking_run("ss4rec", 0, 0.1, float(np.mean(s0)), "released"), s0),
             (ranking_run("ss4rec", 1, 0.1, float(np.mean(s1)), "released"), s1),
             (ranking_run("sasrec", 0, 0.05, float(np.mean(base))), base)]
    runs, load = build(specs)
    (v,) = A.ranking_verdicts(runs, load, n_boot=300, seed=4)
    main = v.comparisons[0]
    # the default interval: seeds, then users (two-level), on the per-seed per-user values
    ref = two_level_bootstrap(np.vstack([s0, s1]), base[None], n_boot=300, seed=4)
    assert main.interval == "seeds+users"
    assert main.diff == pytest.approx(float(np.mean((s0 + s1) / 2 - base)))
    assert (main.ci_low, main.ci_high, main.p_value) == pytest.approx((ref["ci_low"], ref["ci_high"],
                                                                       ref["p_value"]))
    # the named option: users only, over seed-averaged values (narrower: SS4Rec's two seeds differ)
    (u,) = A.ranking_verdicts(runs, load, n_boot=300, seed=4, interval="users")
    ref = paired_bootstrap((s0 + s1) / 2, base, n_boot=300, seed=4)
    assert (u.comparisons[0].ci_low, u.comparisons[0].ci_high) == pytest.approx((ref["ci_low"], ref["ci_high"]))
    assert u.comparisons[0].ci_high - u.comparisons[0].ci_low < main.ci_high - main.ci_low
    assert v.ss4rec.test["ndcg@10"][0] == pytest.approx((np.mean(s0) + np.mean(s1)) / 2)
    assert v.ss4rec.test["ndcg@10"][1] == pytest.approx(np.std([np.mean(s0), np.mean(s1)], ddof=1))
    assert v.ss4rec.n_seeds == 2 and v.baseline.n_seeds == 1
    assert any("One seed only for SASRec" in c for c in v.caveats)
    assert any("Unequal numbers of seeds" in c for c in v.caveats)


@pytest.mark.parametrize("ss4rec_level, word", [(0.5, "beats"), (0.1, "loses to"),
                                                (None, "does not reliably differ from")])
def test_the_headline_says_beats_or_loses_only_when_the_interval_excludes_zero(ss4rec_level, word):
    base = pattern(0.3, 0.05, seed=5)
    # None: the same mean, users alternately 0.1 above and below (a paired difference of exactly 0 on average)
    ours = base + (ss4rec_level - 0.3) if ss4rec_level is not None else base + np.where(np.arange(len(USERS)) % 2,
                                                                                        0.1, -0.1)
    specs = [(ranking_run("ss4rec", 0, 0.1, float(ours.mean()), "released"), ours),
             (ranking_run("gru4rec", 0, 0.05, float(base.mean())), base)]
    runs, load = build(specs)
    (v,) = A.ranking_verdicts(runs, load, n_boot=500)
    assert f"SS4Rec (1 seed) {word} GRU4Rec" in v.headline
    assert v.comparisons[0].reliable == (ss4rec_level is not None)
    assert "95% CI" in v.headline and "test NDCG@10" in v.headline


def test_models_below_the_floor_are_flagged_and_caveats_come_from_the_runs():
    specs = [(ranking_run("ss4rec", 0, 0.1, 0.06, "released"), pattern(0.06)),
             (ranking_run("ncf", 0, 0.1, 0.01), pattern(0.01)),
             (ranking_run("popular", 0, 0.02, 0.02), pattern(0.02))]
    runs, load = build(specs)
    (v,) = A.ranking_verdicts(runs, load, n_boot=100)
    by_model = {c.model: c for c in v.contenders}
    assert by_model["ncf"].beats_floor is False and by_model["ss4rec"].beats_floor is True
    assert by_model["popular"].beats_floor is None
    assert A.contender_table(v).set_index("configuration").loc["NCF", "beats best floor"].startswith("NO (below")
    text = " ".join(v.caveats)
    assert A.TARGET_TIME_CAVEAT in v.caveats
    assert "Not reliably above the best floor (Popular (floor), test NDCG@10 0.0200" in text and ": NCF." in text
    assert "No Markov floor" in text        # sequence models held only to popularity
    assert A.MASKED_CAVEAT not in v.caveats  # nothing here is a masked re-evaluation


def test_a_higher_mean_is_not_above_the_floor_unless_the_interval_says_so():
    """SS4Rec's mean is above the Markov floor's but the per-user difference is mostly noise: "beats best floor" and
    the headline say "not reliably", never "yes" (ML-100K: +0.0047, 95% CI -0.0049 ... +0.0150)."""
    floor = 0.3 + 0.1 * np.random.default_rng(0).random(len(USERS))
    ss4rec = floor + 0.004 + 0.05 * np.resize([1.0, -1.0], len(USERS))  # +0.004 on average, +-0.05 per user
    specs = [(ranking_run("ss4rec", 0, 0.1, float(ss4rec.mean()), "released"), ss4rec),
             (ranking_run("sasrec", 0, 0.05, float(floor.mean()) - 0.02), np.clip(floor - 0.02, 0, 1)),
             (ranking_run("markov", 0, 0.02, float(floor.mean())), floor)]
    runs, load = build(specs)
    (v,) = A.ranking_verdicts(runs, load, n_boot=500)
    s4 = v.ss4rec
    assert s4.test["ndcg@10"][0] > v.floor.test["ndcg@10"][0] and s4.vs_floor.ci_low < 0 < s4.vs_floor.ci_high
    assert s4.beats_floor is False
    assert A.contender_table(v).set_index("configuration").loc[s4.name, "beats best floor"].startswith(
        "not reliably")
    assert "SS4Rec is not reliably above the best floor, Markov (floor)" in v.headline
    holm = A.differences_table(v.comparisons)["p (Holm)"]
    assert holm.ne("").all() and (holm.str.lstrip("≤ ").astype(float) >= A.differences_table(v.comparisons)["p"]
                                  .str.lstrip("< ").astype(float) - 1e-9).all()


def test_masked_reevaluations_and_other_data_are_separate_verdicts_with_their_own_caveats():
    masked = ranking_run("ss4rec", 0, 0.12, 0.1, "released", mask_seen=True)
    masked["evaluated_from"] = {"run_id": "ss4rec-released-u-seed0", "changed": {"mask_seen": True}}
    other_data = ranking_run("sasrec", 0, 0.05, 0.05)
    other_data["dataset"]["fingerprint"] = "f" * 64
    other_data["run_id"] = "sasrec-other-data"
    running = ranking_run("gru4rec", 0, 0.5, 0.5)
    running["status"] = "running"
    specs = [(ranking_run("ss4rec", 0, 0.1, 0.06, "released"), pattern(0.06)), (masked, pattern(0.1)),
             (other_data, pattern(0.05)), (running, pattern(0.5))]
    runs, load = build(specs)
    verdicts = A.ranking_verdicts(runs, load, n_boot=100)
    assert [(v.masked, v.ss4rec is not None, v.baseline is not None) for v in verdicts] == [
        (False, True, False), (False, False, True), (True, True, False)]
    assert all(v.baseline is None or v.baseline.model != "gru4rec" for v in verdicts)  # a running run never counts
    assert A.MASKED_CAVEAT in verdicts[2].caveats and "seen items masked" in verdicts[2].title
    assert verdicts[1].headline.startswith("No SS4Rec run")
    assert any("No learned baseline" in c for c in verdicts[0].caveats)


def test_rating_verdict_pools_squared_errors_over_seeds():
    def rating_run(model, seed, valid, test):
        info = info_for(model, "rating", metrics={"rmse": test, "mae": test, "n": 4},
                        run_id=f"{model}-r-seed{seed}", split="chronological")
        info["metrics"]["valid"] = {"rmse": valid, "mae": valid, "n": 4}
        info["config"]["seed"] = seed
        return info
    p0, p1, pb = (3.0, 3.0, 4.0, 3.0), (4.0, 3.0, 5.0, 2.0), (3.5, 3.5, 3.5, 3.5)
    frames = {"ncf-r-seed0": rating_results(preds=p0), "ncf-r-seed1": rating_results(preds=p1),
              "bias-r-seed0": rating_results(preds=pb)}
    runs = [rating_run("ncf", 0, 0.9, 1.0), rating_run("ncf", 1, 0.9, 1.0), rating_run("bias", 0, 1.0, 1.1)]
    (v,) = A.rating_verdicts(runs, lambda info: frames[info["run_id"]], n_boot=200)
    truth = np.array([4.0, 3.0, 5.0, 1.0])
    pooled = ((np.array(p0) - truth) ** 2 + (np.array(p1) - truth) ** 2) / 2
    floor = (np.array(pb) - truth) ** 2
    assert v.model.model == "ncf" and v.floor.model == "bias"
    assert v.comparison.diff == pytest.approx(math.sqrt(pooled.mean()) - math.sqrt(floor.mean()))
    assert v.comparison.lower_is_better and "lower is better" in v.headline
    with pytest.raises(ValueError, match="different held-out ratings"):
        A.pooled_rating_rows([rating_results(), rating_results(items=(10, 20, 30, 41))])


def test_rating_verdict_compares_ss4rec_with_its_rivals_even_when_it_is_not_chosen():
    def rating_run(model, valid, run_id, **config):
        info = info_for(model, "rating", metrics={"rmse": 1.0, "mae": 1.0, "n": 4}, run_id=run_id,
                        split="chronological")
        info["metrics"]["valid"] = {"rmse": valid, "mae": valid, "n": 4}
        info["config"].update(seed=0, **config)
        return info
    truth = np.array([4.0, 3.0, 5.0, 1.0])
    preds = {"ncf": (4.0, 3.0, 4.5, 1.5), "ss": (3.0, 3.0, 4.0, 3.0), "rr": (3.5, 3.5, 4.5, 2.0)}
    frames = {k: rating_results(preds=p) for k, p in preds.items()}
    runs = [rating_run("ncf", 0.90, "ncf"), rating_run("ss4rec", 0.95, "ss", rating_input=True, rating_head=True),
            rating_run("recent-residual", 0.97, "rr")]
    (v,) = A.rating_verdicts(runs, lambda info: frames[info["run_id"]], n_boot=200)
    assert v.model.model == "ncf" and v.floor.model == "recent-residual"  # chosen on validation; a floor
    rmse = {k: math.sqrt(((np.array(p) - truth) ** 2).mean()) for k, p in preds.items()}
    vs_ncf, vs_floor = v.ss4rec
    assert (vs_ncf.b, vs_floor.b) == (v.model.name, v.floor.name)
    assert vs_ncf.diff == pytest.approx(rmse["ss"] - rmse["ncf"])
    assert vs_floor.diff == pytest.approx(rmse["ss"] - rmse["rr"])
    assert any("told the time of the rating it predicts" in c for c in v.caveats)
    assert not any("No rating-aware" in c for c in v.caveats)


def test_difference_chart_draws_intervals_and_accepts_nothing():
    frame = pd.DataFrame({"row": ["A − B · NDCG@10"], "metric": ["NDCG@10"], "diff": [0.01], "ci_low": [-0.01],
                          "ci_high": [0.03], "text": ["x"]})
    spec = charts.difference_chart(frame, "t").to_dict()
    assert len(spec["layer"]) == 3
    charts.difference_chart(pd.DataFrame(), "empty").to_dict()


def test_answer_page_renders_the_shipped_runs_and_an_empty_folder(tmp_path):
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "Does SS4Rec beat its baselines?"   # the first page a user sees
    boxes = [b.value for b in list(at.info) + list(at.success) + list(at.warning)]
    if any("SS4Rec (3 seeds)" in b for b in boxes):  # the shipped runs: headline with seeds, interval and caveats
        assert any("95% CI" in b and "test NDCG@10" in b for b in boxes)
        assert any(A.TARGET_TIME_CAVEAT in m.value for m in at.markdown)
    if list((ROOT / "checkpoints").glob("ss4rec-*-no-target-time-seed*")):  # the shipped ablations: evidence only
        assert "Why: what SS4Rec's result rests on (ablations)" in [h.value for h in at.subheader]
        assert any(" · SS4Rec · released" in c.value for c in at.caption)  # never an ablation as the headline
        assert any("no-target-time" in m.value for m in at.markdown)
    assert any("**Masked or unmasked.**" in c.value for c in at.caption)
    if any(m.label.startswith("SS4Rec · ") for m in at.metric):  # the big number fits at 800 px: the mean alone
        big = [m.value for m in at.metric if m.label.startswith("SS4Rec · ")][0]
        assert float(big) > 0 and any(c.value.startswith("± ") and "seeds" in c.value for c in at.caption)
    if any(h.value.startswith("ml-1m, leave-one-out, seen items not masked") for h in at.header):
        assert any(e.label == "Published numbers beside this reproduction" for e in at.expander)
    # the page says which interval it shows; users-only is a named option, and the choice holds on What matters
    assert any("Intervals shown: **seeds+users**" in c.value for c in at.caption)
    at.radio[0].set_value("users").run()
    assert not at.exception and any("Intervals shown: **users**" in c.value for c in at.caption)
    at.switch_page("app_pages/ablations.py").run()
    assert not at.exception and at.radio[0].value == "users"
    at.switch_page("app_pages/answer.py").run()
    at.text_input(key="runs-folder").set_value(str(tmp_path)).run()
    assert not at.exception and any("No runs found" in i.value for i in at.info)


def test_published_numbers_sit_beside_ours_only_for_their_dataset():
    from recsys.compare import published as P

    t = P.published_table("ml-1m", {"ss4rec": (0.31, 0.17, 0.13)})
    row = t.set_index("model").loc["SS4Rec, released code (third-party run)"]
    assert (row["published NDCG@10"], row["ours NDCG@10"]) == (0.2022, 0.17) and "unmasked" in row["published under"]
    assert t.set_index("model")["ours NDCG@10"].isna().sum() == len(t) - 1  # no number of ours invented
    assert P.published_table("ml-100k").empty and "users 1..2999" in P.WHY_THEY_DIFFER["ml-1m"]


def test_interval_over_users_pools_seeds_then_resamples_users():
    from recsys.compare.breakdowns import bucket_interval

    a, b = per_user(pattern(0.3, 0.2, seed=1)), per_user(pattern(0.2, 0.2, seed=2))
    lo, hi = A.interval_over_users([a, b], "ranking", "ndcg@10")
    assert (lo, hi) == bucket_interval((a["ndcg@10"].to_numpy() + b["ndcg@10"].to_numpy()) / 2)
    assert lo < (a["ndcg@10"].mean() + b["ndcg@10"].mean()) / 2 < hi
    r = A.interval_over_users([rating_results(), rating_results(preds=(4.0, 3.0, 5.0, 1.0))], "rating", "rmse")
    assert 0 <= r[0] <= r[1]
    bad = per_user(pattern(0.3)).assign(user_id=lambda d: d["user_id"] + 1000)
    assert all(math.isnan(x) for x in A.interval_over_users([a, bad], "ranking", "ndcg@10"))


def test_a_run_stopped_while_still_improving_is_named_in_the_caveats():
    capped = ranking_run("gru4rec", 0, 0.05, 0.05)
    capped.update(best_epoch=40, epochs_run=40)
    stopped = ranking_run("ss4rec", 0, 0.1, 0.06, "released")
    stopped.update(best_epoch=12, epochs_run=22)  # early stopping after 10 epochs without improvement
    runs, load = build([(stopped, pattern(0.06)), (capped, pattern(0.05))])
    (v,) = A.ranking_verdicts(runs, load, n_boot=100)
    text = " ".join(v.caveats)
    assert "Still improving when training stopped" in text and "GRU4Rec · len50 (best epoch 40 of 40)" in text
    assert "SS4Rec · released · len50 (best" not in text
