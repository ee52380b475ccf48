"""Compare runs: comparability groups, metrics table, paired bootstrap (incl. RMSE), breakdown bins, load errors,
and the page itself (AppTest, through streamlit_app.py's navigation)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from recsys import charts
from recsys import compare as C
from recsys.app import state
from recsys.evaluation.metrics import paired_bootstrap
from recsys.runs import RunDirectory, RunError
from tests.conftest import ROOT
from tests.helpers import (
    FILTERS,
    compare_page,
    info_for,
    ranking_results,
    rating_results,
    write_run,
)

# ---------------------------------------------------------------------------------------------- comparability


def test_grouping_separates_different_data_and_protocols_and_keeps_comparable_runs():
    runs = {
        "ncf": info_for("ncf"),
        "pop_len200": info_for("popular", max_len=200),        # max_len is not part of the key
        "ss4rec": info_for("ss4rec", rating_head=True, max_len=200),
        "ncf_masked": info_for("ncf", mask_seen=True),
        "ncf_other_data": info_for("ncf", fingerprint="b" * 64),
        "ncf_other_name": info_for("ncf", name="ml-1m"),
        "ncf_10core": info_for("ncf", filters={**FILTERS, "user_k": 10}),
        "ncf_ks": info_for("ncf", ks=[10]),
        "ncf_nofp": info_for("ncf", fingerprint=None, run_id="nofp"),
        "bias_chrono_seed0": info_for("bias", "rating"),
        "ncf_chrono_seed1": info_for("ncf", "rating", seed=1, fold=3),   # unused by the chronological split
        "ncf_random_seed0": info_for("ncf", "rating", split="random", seed=0),
        "ncf_random_seed1": info_for("ncf", "rating", split="random", seed=1),
        "ncf_kfold1": info_for("ncf", "rating", split="kfold", fold=1),
        "ncf_kfold2": info_for("ncf", "rating", split="kfold", fold=2),
    }
    names = list(runs)
    groups = C.group_runs(list(runs.values()))
    member_names = [sorted(names[[id(x) for x in runs.values()].index(id(m))] for m in g.members) for g in groups]
    assert sorted(["ncf", "pop_len200", "ss4rec"]) in member_names
    assert sorted(["bias_chrono_seed0", "ncf_chrono_seed1", "ss4rec"]) in member_names  # ss4rec's rating head
    for alone in ("ncf_masked", "ncf_other_data", "ncf_other_name", "ncf_10core", "ncf_ks", "ncf_nofp",
                  "ncf_random_seed0", "ncf_random_seed1", "ncf_kfold1", "ncf_kfold2"):
        assert [alone] in member_names, alone
    assert len(groups) == 12
    assert [g.family for g in groups] == ["ranking"] * 7 + ["rating"] * 5  # ranking groups first

    # an SS4Rec run without a rating head has no rating key; a ranking run never has one
    assert C.comparability_key(info_for("ss4rec"), "rating") is None
    assert C.comparability_key(runs["ncf"], "rating") is None
    assert C.comparability_key(runs["ss4rec"]) == C.comparability_key(runs["ncf"])
    assert C.comparability_key(runs["ss4rec"], "rating") == C.comparability_key(runs["bias_chrono_seed0"])
    # the rating head of a non-chronological split is not the chronological protocol
    assert C.comparability_key(info_for("ss4rec", rating_head=True, split="random_users"), "rating") != \
        C.comparability_key(runs["bias_chrono_seed0"])

    why = " ".join(C.explain_differences(groups))
    assert "mask_seen: False vs True" in why and "measure different things" in why
    assert "seed: 0 vs 1" in why and "fold: 1 vs 2" in why and "user_k: 5 vs 10" in why
    assert "dataset: ml-100k vs ml-1m" in why and "aaaaaaaaaaaa vs bbbbbbbbbbbb" in why


def test_max_len_is_shown_and_noted_but_does_not_split_a_group():
    g = C.group_runs([info_for("sasrec", run_id="a"), info_for("ss4rec", max_len=200, run_id="b"),
                      info_for("ncf", run_id="c")])
    assert len(g) == 1
    note = C.max_len_note(g[0])
    assert "max_len 200: b" in note and "max_len 50: a" in note and ": c" not in note
    # NCF reads no history: its protocol records a max_len, but the pages show none for it (one reader:
    # history_length) and it cannot make lengths "differ"
    assert list(C.metrics_table(g[0].members, 10, family="ranking")["max_len"].astype(object).where(
        lambda x: x.notna(), None)) == [50, 200, None]
    assert C.max_len_note(C.group_runs([info_for("ncf", run_id="c"), info_for("ss4rec", max_len=200)])[0]) is None


def test_floor_models_match_the_trainer():
    from recsys.models import MODELS  # the floors are the models fitted in closed form (not trainable)

    floors = {name: cls.objectives for name, cls in MODELS.items() if not cls.trainable}
    assert {name: (objective,) for name, objective in C.FLOOR_MODELS.items()} == floors


# ---------------------------------------------------------------------------------------------- metrics table


def test_metrics_table_leaves_non_applicable_metrics_blank_never_zero():
    ranking = info_for("ncf", metrics={"hr@10": 0.0, "ndcg@10": 0.0, "mrr@10": 0.0, "n": 4}, run_id="r")
    rating = info_for("bias", "rating", run_id="b")
    running = info_for("ss4rec", status="running", run_id="s", rating_head=True)
    table = C.metrics_table([ranking, rating, running], k=10)
    r, b, s = (table.iloc[i] for i in range(3))
    assert math.isnan(r["RMSE"]) and math.isnan(r["MAE"]) and r["HR@10"] == 0.0  # a real zero stays a zero
    assert math.isnan(b["HR@10"]) and math.isnan(b["NDCG@10"]) and math.isnan(b["MRR@10"]) and b["RMSE"] == 1.0
    assert all(math.isnan(s[c]) for c in C.metric_columns(10))  # still training: nothing to show yet
    assert b["floor"] and b["model"] == "Bias (floor)" and not r["floor"]
    assert math.isnan(b["best epoch"]) and r["best epoch"] == 3 and math.isnan(s["best epoch"])
    assert pd.isna(b["mask_seen"]) and pd.isna(b["max_len"]) and r["split"] == "leave-one-out by time"

    shown = C.format_table(table)
    assert shown.loc[0, "RMSE"] == "" and shown.loc[0, "HR@10"] == "0.0000"
    assert shown.loc[1, "HR@10"] == "" and shown.loc[1, "RMSE"] == "1.0000" and shown.loc[1, "floor"] == "floor"
    assert (shown.loc[2, C.metric_columns(10)] == "").all()
    assert not shown.isin(["nan", "None", "NaN"]).any().any()

    # within a group only the group's family is filled: SS4Rec's RMSE belongs to its rating group
    head = info_for("ss4rec", rating_head=True)
    ranking_row = C.metrics_table([head], 10, family="ranking").iloc[0]
    rating_row = C.metrics_table([head], 10, family="rating").iloc[0]
    assert math.isnan(ranking_row["RMSE"]) and ranking_row["NDCG@10"] == 0.05
    assert rating_row["RMSE"] == 0.95 and math.isnan(rating_row["NDCG@10"])
    assert rating_row["split"] == "chronological (rating head)"


def test_captions_name_dataset_split_and_protocol():
    g = C.group_runs([info_for("ncf", mask_seen=True), info_for("bias", "rating", split="random", seed=7)])
    ranking, rating = C.group_caption(g[0], "test"), C.group_caption(g[1], "valid")
    assert "ml-100k (embedded copy; fingerprint aaaaaaaaaaaa; 5-core" in ranking
    assert "leave-one-out by time" in ranking and "seen items masked" in ranking and "Split shown: test (4 users)" \
        in ranking
    assert "random 90%/10% split, seed 7" in rating and "Split shown: valid" in rating
    assert C.available_ks([info_for("ncf"), info_for("ncf", ks=[1, 10])]) == [1, 5, 10, 20]


def test_default_selection_is_complete_embedded_ml100k_runs(tmp_path):
    write_run(tmp_path, "a", info_for("ncf"))
    write_run(tmp_path, "b", info_for("ncf", status="running"))
    write_run(tmp_path, "c", info_for("ncf", data_dir="/data/ml-100k"))
    write_run(tmp_path, "d", info_for("ncf", name="ml-1m"))
    assert C.default_selection(C.scan_runs(tmp_path).runs) == ["a"]


# ---------------------------------------------------------------------------------------------- learning curves


def test_learning_curves_mark_the_best_epoch_and_separate_train_from_valid():
    hist = [{"epoch": e, "train_loss": 3.0 - e, "valid_ndcg@10": v, "valid_hr@10": v * 2}
            for e, v in ((1, 0.01), (2, 0.03), (3, 0.02))]
    done = info_for("ncf", best_epoch=2)
    running = info_for("ss4rec", status="running")
    assert C.best_epoch(done, hist) == 2 and C.best_epoch(running, hist) == 2  # running: best so far
    assert C.best_epoch(info_for("ncf", "rating", status="running"), [{"epoch": 1, "valid_rmse": 1.1},
                                                                     {"epoch": 2, "valid_rmse": 1.0}]) == 2
    train, valid = C.learning_curves([("NCF", done, hist)], "ndcg@10")
    assert list(train["value"]) == [2.0, 1.0, 0.0] and list(valid["value"]) == [0.01, 0.03, 0.02]
    assert list(valid["best"]) == [False, True, False] and list(train["best"]) == [False, True, False]
    assert C.valid_metric_names([hist, [{"valid_rmse": 1.0}]]) == ["ndcg@10", "hr@10", "rmse"]
    charts.curve_chart(valid, "VALIDATION", "ndcg").to_dict()  # builds


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


# ---------------------------------------------------------------------------------------------- loading


def test_scan_lists_load_errors_with_messages(tmp_path):
    write_run(tmp_path, "good", info_for("ncf"), results=ranking_results())
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "run.json").write_text('{"format": "ss4rec-workbench-run/1", "model": ')
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    (tmp_path / "other-tool").mkdir()
    (tmp_path / "other-tool" / "run.json").write_text(json.dumps({"format": "mlflow", "model": "x"}))
    write_run(tmp_path, "malformed", {**info_for("ncf"), "dataset": "ml-100k"})
    (tmp_path / ".hidden").mkdir()
    scan = C.scan_runs(tmp_path)
    assert [r.label for r in scan.runs] == ["good"] and scan.root_error is None
    errors = {p.name: msg for p, msg in scan.errors}
    assert set(errors) == {"corrupt", "other-tool", "malformed", tmp_path.name}
    # a folder with no run.json is not a run: one summary line names it (10,000 of them are one line, not a page)
    assert "corrupted" in errors["corrupt"]
    assert errors[tmp_path.name].endswith("with no run.json ignored (not runs): foreign")
    assert "not a run of this workbench" in errors["other-tool"] and "'dataset' is not a mapping" in errors["malformed"]
    assert C.scan_runs(tmp_path / "missing").root_error.endswith("no such folder")
    assert [r.label for r in C.scan_runs(tmp_path / "good").runs] == ["good"]  # a run folder itself

    good = scan.runs[0]
    assert len(C.load_test_results(good.path, good.info)) == 4
    RunDirectory(good.path).save_test_results(ranking_results(ndcg=(1, 1, 1, 1)))  # tampered after the run
    with pytest.raises(RunError, match="differ from the sha256"):
        C.load_test_results(good.path, good.info)
    with pytest.raises(RunError, match="still training"):
        C.load_test_results(tmp_path / "corrupt", {"status": "running"})


def test_run_folder_helpers_for_the_pages(tmp_path):
    hist = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]
    run = write_run(tmp_path, "r", info_for("ncf"), history=hist, results=ranking_results())
    assert C.read_history(run.path) == hist and C.read_history(tmp_path / "missing") == []
    assert C.results_stamp(run.path) > 0 and C.results_stamp(tmp_path / "missing") == 0.0
    assert C.info_stamp(run.path) > 0
    run.save_id_maps(np.array([3, 7, 9]), np.array([1, 2]))
    with pytest.raises(C.RunError, match="differ from the sha256 recorded"):  # checked before it is unpacked
        C.run_users(run.path)
    run.write_info({**run.info(), "artefacts": run.artefact_hashes()})
    assert C.run_users(run.path).tolist() == [3, 7, 9]
    with pytest.raises(C.RunError, match="unreadable id maps"):
        C.run_users(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- the page




def test_page_renders_on_shipped_checkpoints():
    at = compare_page()
    assert not at.exception
    assert at.title[0].value == "Compare runs"
    if not C.scan_runs(ROOT / "checkpoints").runs:
        pytest.skip("no shipped runs")
    assert len(at.dataframe) >= 1
    assert any("Dataset: ml-100k" in c.value for c in at.caption)
    # every group of the shipped runs renders its details without an exception
    group_box = next(box for box in at.selectbox if box.label == "Group")
    for i in range(1, len(group_box.options)):
        next(box for box in at.selectbox if box.label == "Group").set_value(i)
        at.run()
        assert not at.exception


def test_page_on_an_empty_folder_and_on_a_corrupted_run(tmp_path):
    at = compare_page()
    (tmp_path / "empty").mkdir()
    at.text_input(key=state.RUNS_FOLDER).set_value(str(tmp_path / "empty")).run()
    assert not at.exception
    assert any("No runs found" in i.value and "scripts/train.py --model ncf" in i.value for i in at.info)

    at.text_input(key=state.RUNS_FOLDER).set_value(str(tmp_path / "missing")).run()
    assert not at.exception and any("no such folder" in e.value for e in at.error)

    bad = tmp_path / "runs"
    write_run(bad, "ncf", info_for("ncf", run_id="ncf"), results=ranking_results(),
              history=[{"epoch": 1, "train_loss": 1.0, "valid_ndcg@10": 0.1}])
    write_run(bad, "pop", info_for("popular", run_id="pop"), results=ranking_results(ndcg=(0, 0, 0.5, 0)))
    write_run(bad, "bias", info_for("bias", "rating", run_id="bias"), results=rating_results())
    write_run(bad, "live", info_for("ss4rec", status="running", rating_head=True, run_id="live"),
              history=[{"epoch": 1, "train_loss": 5.0, "valid_ndcg@10": 0.02, "valid_rmse": 1.1}])
    (bad / "broken").mkdir()
    (bad / "broken" / "run.json").write_text("{not json")
    at.text_input(key=state.RUNS_FOLDER).set_value(str(bad)).run()
    assert not at.exception
    assert any("could not be loaded" in e.label for e in at.expander)
    assert any("broken" in t.value and "corrupted" in t.value for t in at.text)
    assert any("still training" in e.label for e in at.expander)
    assert len(at.dataframe) == 4  # per group (ranking, rating): the configurations pooled over seeds, each run
    assert any("NDCG@10 is" in s.value for s in [*at.success, *at.info])  # ncf vs popular, bootstrap on the first group


def test_default_pair_is_the_best_ss4rec_against_the_best_other_model_on_validation():
    def with_valid(model, v, seed=0):
        info = info_for(model, run_id=f"{model}-{seed}")
        info["metrics"]["valid"]["ndcg@10"] = v
        return info
    runs = [with_valid("ss4rec", 0.05, 0), with_valid("ss4rec", 0.07, 1), with_valid("popular", 0.02),
            with_valid("sasrec", 0.06), with_valid("gru4rec", 0.065)]
    assert C.default_pair(runs) == (1, 4)   # ss4rec seed 1 (best valid) vs GRU4Rec, never ss4rec vs ss4rec
    assert C.default_pair(runs[:3]) == (1, 2)  # no learned baseline: the floor
    assert C.default_pair([runs[0], runs[1]]) == (1, 0)  # only one model: its two seeds, best first
    with pytest.raises(ValueError):
        C.default_pair(runs[:1])


def test_floor_flags_name_learned_models_that_do_not_beat_the_best_floor():
    table = C.metrics_table([info_for("ncf", metrics={"hr@10": 0.1, "ndcg@10": 0.03, "mrr@10": 0.02, "n": 4}),
                             info_for("sasrec", metrics={"hr@10": 0.2, "ndcg@10": 0.09, "mrr@10": 0.05, "n": 4}),
                             info_for("popular", metrics={"hr@10": 0.1, "ndcg@10": 0.04, "mrr@10": 0.02, "n": 4}),
                             info_for("markov", metrics={"hr@10": 0.1, "ndcg@10": 0.05, "mrr@10": 0.03, "n": 4})])
    assert C.floor_flags(table, "NDCG@10") == ["NO (floor Markov (floor): 0.0500)", "yes", "", ""]
    rating = C.metrics_table([info_for("ncf", "rating", metrics={"rmse": 1.02, "mae": 0.8, "n": 4}),
                              info_for("bias", "rating", metrics={"rmse": 1.01, "mae": 0.8, "n": 4})])
    assert C.floor_flags(rating, "RMSE", lower_is_better=True)[0].startswith("NO (floor Bias")
    assert C.floor_flags(table.iloc[:2], "NDCG@10") == ["", ""]  # no floor in the table: nothing to flag


def test_page_flags_floors_labels_reevaluations_and_refuses_silent_resample_counts(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "ss4rec", info_for("ss4rec", run_id="ss4rec"), results=ranking_results(),
              history=[{"epoch": 1, "train_loss": 1.0, "valid_ndcg@10": 0.1}])
    masked = info_for("ss4rec", run_id="ss4rec-masked", mask_seen=True)
    masked["evaluated_from"] = {"run_id": "ss4rec", "changed": {"mask_seen": True}}
    write_run(root, "ss4rec-masked", masked, results=ranking_results(),
              history=[{"epoch": 1, "train_loss": 1.0, "valid_ndcg@10": 0.1}])
    write_run(root, "ncf-masked", info_for("ncf", run_id="ncf-masked", mask_seen=True,
                                           metrics={"hr@10": 0.1, "ndcg@10": 0.01, "mrr@10": 0.01, "n": 4}),
              results=ranking_results(ndcg=(0.04, 0, 0, 0)))
    write_run(root, "pop-masked", info_for("popular", run_id="pop-masked", mask_seen=True,
                                           metrics={"hr@10": 0.1, "ndcg@10": 0.02, "mrr@10": 0.01, "n": 4}),
              results=ranking_results(ndcg=(0.08, 0, 0, 0)))
    at = compare_page()
    at.text_input(key=state.RUNS_FOLDER).set_value(str(root)).run()
    assert not at.exception
    masked_group = next(i for i, o in enumerate(next(b for b in at.selectbox if b.label == "Group").options)
                        if "seen masked" in o)
    next(b for b in at.selectbox if b.label == "Group").set_value(masked_group).run()
    assert not at.exception
    assert any("No learning curve of their own" in i.value and "same weights as ss4rec" in i.value
               for i in at.info)
    flags = [df.value for df in at.dataframe if "beats best floor" in df.value]
    assert any("NO (floor Popular (floor): 0.0200)" in set(f["beats best floor"]) for f in flags)
    assert [b.value for b in at.selectbox if b.label in ("Run A", "Run B")][0] == "SS4Rec"
    next(n for n in at.number_input if n.label == "Bootstrap resamples").set_value(50).run()
    assert not at.exception
    assert any("50 resamples is outside 200–20,000: using 200" in w.value for w in at.warning)


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


def test_page_names_ss4recs_target_time_input_next_to_its_numbers():
    at = compare_page()
    if not any(r.info.get("model") == "ss4rec" for r in C.scan_runs(ROOT / "checkpoints").runs):
        pytest.skip("no shipped SS4Rec run")
    assert any("told the time of the interaction it predicts" in c.value for c in at.caption)
    assert any("masked re-evaluations" in c.value and "same weights" in c.value for c in at.caption)
