"""The Compare page itself (AppTest, through streamlit_app.py's navigation): renders on the shipped runs, empty and
corrupted folders, the default pair, floor flags, caveats beside the numbers."""
from __future__ import annotations

import pytest

from recsys import compare as C
from recsys.app import state
from tests.conftest import ROOT
from tests.helpers import (
    compare_page,
    info_for,
    ranking_results,
    rating_results,
    write_run,
)

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
    tables = [df for df in at.dataframe if not str(df.key or "").startswith("rt-")
              and "setting" not in df.value.columns]  # not the run table nor its configuration difference
    assert len(tables) == 4  # per group (ranking, rating): the configurations pooled over seeds, each run
    # the first group's bootstrap: configurations (seeds pooled) by default, with win / tie / loss per user
    assert any(s.value.startswith("NCF − Popular (floor) on test NDCG@10") for s in [*at.success, *at.info])
    counts = {m.label: m.value for m in at.metric}
    assert int(counts["Users A serves better"]) + int(counts["Ties"]) + int(counts["Users B serves better"]) == 4
    next(r for r in at.radio if r.label == "Compare").set_value("runs").run()
    assert not at.exception
    assert any("NDCG@10 is" in s.value for s in [*at.success, *at.info])  # ncf vs popular, single runs


def test_configuration_pair_differences_and_win_tie_loss():
    def with_valid(model, v, seed=0, variant=None):
        info = info_for(model, run_id=f"{model}-{variant}-{seed}")
        info["metrics"]["valid"]["ndcg@10"] = v
        info["config"]["seed"] = seed
        if variant:
            info["config"]["variant"] = variant
        return info
    runs = [with_valid("ss4rec", 0.05, 0, "a"), with_valid("ss4rec", 0.07, 1, "a"), with_valid("ss4rec", 0.08, 0, "b"),
            with_valid("popular", 0.02), with_valid("sasrec", 0.06), with_valid("gru4rec", 0.065, 0),
            with_valid("gru4rec", 0.055, 1)]
    groups = C.seed_groups(runs)
    a, b = C.default_configuration_pair(groups)
    assert (groups[a].model, groups[a].variant) == ("ss4rec", "b")   # best SS4Rec configuration on validation
    assert groups[b].model == "sasrec"  # 0.06 beats GRU4Rec's mean 0.06 - 0.0; ties broken by order, never a floor
    a_frames = [ranking_results(ndcg=(0.5, 0.0, 1.0, 0.25)), ranking_results(ndcg=(0.3, 0.2, 0.0, 0.25))]
    d = C.per_user_differences(a_frames, [ranking_results(ndcg=(0.4, 0.1, 0.5, 0.25))], "ndcg@10")
    assert d.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0]) or d.round(6).tolist() == [0.0, 0.0, 0.0, 0.0]
    d = C.per_user_differences(a_frames, [ranking_results(ndcg=(0.1, 0.1, 0.9, 0.25))], "ndcg@10")
    assert d.round(6).tolist() == [0.3, 0.0, -0.4, 0.0]
    assert C.win_tie_loss(d) == {"wins": 1, "ties": 2, "losses": 1}


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
    # test split, ranking: judged by the paired interval against the best floor (4 users: NCF 0.01 vs 0.02)
    assert any(any(str(x).startswith(("NO (below", "not reliably (")) for x in f["beats best floor"]) for f in flags)
    assert any(any(str(x).startswith("NO (floor Popular (floor): 0.0200)") for x in f["beats best floor"])
               for f in flags)  # the table of each run keeps the means' flag
    cfg_a = next(b for b in at.selectbox if b.label == "Configuration A")
    assert cfg_a.options[cfg_a.value].startswith("SS4Rec")  # the SS4Rec configuration by default
    next(r for r in at.radio if r.label == "Compare").set_value("runs").run()
    assert [b.value for b in at.selectbox if b.label in ("Run A", "Run B")][0] == "SS4Rec"
    next(n for n in at.number_input if n.label == "Bootstrap resamples").set_value(50).run()
    assert not at.exception
    assert any("50 resamples is outside 200–20,000: using 200" in w.value for w in at.warning)


def test_page_names_ss4recs_target_time_input_next_to_its_numbers():
    at = compare_page()
    if not any(r.info.get("model") == "ss4rec" for r in C.scan_runs(ROOT / "checkpoints").runs):
        pytest.skip("no shipped SS4Rec run")
    assert any("told the time of the interaction it predicts" in c.value for c in at.caption)
    assert any("masked re-evaluations" in c.value and "same weights" in c.value for c in at.caption)


def test_run_table_rows_filters_and_configuration_difference():
    from recsys.compare import runtable as RT

    a, b = info_for("sasrec", run_id="a"), info_for("ss4rec", run_id="b")
    a.update(n_parameters=1234, train_seconds=600.0, epochs_run=10,
             environment={"device": "cpu", "precision": "fp32", "cpu_kernels": "native", "world_size": 1})
    a["config"]["seed"], b["config"]["seed"] = 0, 1
    t = RT.run_table([a, b], shown=["a"])
    row = t.set_index("run").loc["a"]
    assert (row["show"], row["parameters"], row["train min"], row["s/epoch"]) == (True, 1234, 10.0, 60.0)
    assert row["hardware"] == "cpu fp32 native kernels" and not t.set_index("run").loc["b", "show"]
    assert RT.filter_runs(t, model=[row["model"]])["run"].tolist() == ["a"]
    assert RT.filter_runs(t, model=[], seed=[1])["run"].tolist() == ["b"]  # an empty choice keeps every row
    diff = RT.config_difference(a, b).set_index("setting")
    assert diff.loc["model"].tolist() == ["'sasrec'", "'ss4rec'"] and diff.loc["config.seed"].tolist() == ["0", "1"]
    assert "dataset.name" not in diff.index  # only what differs


def test_run_table_ticks_choose_the_runs_and_survive_a_filter(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "ncf", info_for("ncf", run_id="ncf"), results=ranking_results())
    write_run(root, "pop", info_for("popular", run_id="pop"), results=ranking_results(ndcg=(0, 0, 0.5, 0)))
    at = compare_page()
    at.text_input(key=state.RUNS_FOLDER).set_value(str(root)).run()
    assert not at.exception
    editor = next(df for df in at.dataframe if str(df.key or "").startswith("rt-table::"))
    assert set(editor.value["run"]) == {"ncf", "pop"} and editor.value["show"].all()
    model = next(m for m in at.multiselect if m.label == "Model")
    model.set_value(["NCF"]).run()
    assert not at.exception
    editor = next(df for df in at.dataframe if str(df.key or "").startswith("rt-table::"))
    assert editor.value["run"].tolist() == ["ncf"]
    pooled = [df.value for df in at.dataframe if "beats best floor" in df.value.columns][0]
    assert len(pooled) == 2  # the filter narrows the table, not the runs ticked: Popular is still compared


def test_unticking_a_run_in_the_table_drops_it_and_a_filter_never_unticks_what_it_hides():
    import pandas as pd

    from recsys.compare import runtable as RT

    ticked = {"a", "b", "c"}
    edited = pd.DataFrame({"run": ["a", "b"], "show": [False, True]})  # the filter shows a and b; a unticked
    assert RT.apply_ticks(ticked, ["a", "b"], edited) == {"b", "c"}  # c, hidden by the filter, stays ticked
    ticked_again = pd.DataFrame({"run": ["a", "b"], "show": [True, True]})
    assert RT.apply_ticks({"b", "c"}, ["a", "b"], ticked_again) == {"a", "b", "c"}
    assert RT.apply_ticks({"x"}, [], edited.iloc[:0]) == {"x"}  # an empty view changes nothing


def test_the_tables_use_only_the_ticked_runs(tmp_path):
    """What a tick in the run table does downstream (AppTest cannot click a data_editor cell): with Popular
    unticked the comparable-group table holds NCF alone, and the editor shows Popular unticked."""
    root = tmp_path / "runs"
    write_run(root, "ncf", info_for("ncf", run_id="ncf"), results=ranking_results())
    write_run(root, "pop", info_for("popular", run_id="pop"), results=ranking_results(ndcg=(0, 0, 0.5, 0)))
    at = compare_page()
    at.text_input(key=state.RUNS_FOLDER).set_value(str(root)).run()
    at.session_state[f"rt-ticked::{root}"] = {"ncf"}  # the ticks the page keeps, as an unticked Popular leaves them
    at.run()
    assert not at.exception
    editor = next(df for df in at.dataframe if str(df.key or "").startswith("rt-table::"))
    assert dict(zip(editor.value["run"], editor.value["show"], strict=True)) == {"ncf": True, "pop": False}
    pooled = [df.value for df in at.dataframe if "beats best floor" in df.value.columns]
    assert pooled and all(len(t) == 1 and t["model"].iloc[0].startswith("NCF") for t in pooled)
