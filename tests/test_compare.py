"""Compare runs, the library: comparability groups, the metrics table, learning curves, load errors.
(Its statistics: tests/test_compare_stats.py; the page: tests/test_compare_page.py.)"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from recsys import charts
from recsys import compare as C
from recsys.runs import RunDirectory, RunError
from tests.helpers import (
    FILTERS,
    info_for,
    ranking_results,
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


def test_details_open_on_the_group_of_ss4recs_trained_unmasked_runs():
    masked = info_for("ss4rec", run_id="ss4rec-masked", mask_seen=True)
    masked["evaluated_from"] = {"run_id": "ss4rec", "changed": {"mask_seen": True}}
    groups = C.group_runs([masked, info_for("ncf", run_id="ncf-masked", mask_seen=True),
                           info_for("ss4rec", run_id="ss4rec"), info_for("sasrec", run_id="sasrec")])
    assert len(groups) == 2 and groups[0].infos[0]["protocol"]["mask_seen"]  # the masked group comes first
    chosen = groups[C.default_group(groups)]
    assert "ss4rec" in chosen.labels and not any(i["protocol"].get("mask_seen") for i in chosen.infos)
    assert C.default_group([]) == 0
