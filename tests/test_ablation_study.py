"""The "What matters" logic (recsys.compare.ablations, recsys.compare.variants): the released reference, what each
variant changes read from its configuration, paired differences against hand-computed values, SASRec given the
target gap compared with plain SASRec and with SS4Rec, the gap-regime breakdown by hand, ablations kept out of the
answer page's headline; and the page on an empty folder."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from recsys.compare import ablations as AB
from recsys.compare import answer as A
from recsys.compare.describe import metric_display as C_display
from recsys.compare.variants import changes, is_ablation, reads_target_time
from tests.conftest import ROOT
from tests.helpers import TARGETS, USERS, pattern, ranking_run

GAPS = np.array([0] * 16 + [30] * 8 + [3600] * 8 + [5 * 86400] * 8)  # 40 users: 16 same second, 8, 8, 8
LENGTHS = np.array([10] * 20 + [150] * 20)


def frame(values):
    v = np.asarray(values, float)
    return pd.DataFrame({"user_id": list(USERS), "user": list(USERS), "target": list(TARGETS),
                         "history_length": LENGTHS, "gap_before_target": GAPS, "ndcg@10": v,
                         "hr@10": (v > 0) * 1.0, "mrr@10": v / 2})


def run(model, variant, seed, valid, values, **config):
    info = ranking_run(model, seed, valid=valid, test=float(np.mean(values)), variant=variant)
    info["config"].update(config)
    return info, values


def build(specs):
    frames = {info["run_id"]: frame(vals) for info, vals in specs}
    return [info for info, _ in specs], (lambda info: frames[info["run_id"]])


def test_what_a_variant_changes_is_read_from_its_configuration():
    ss = {"model": "ss4rec"}
    assert changes({**ss, "config": {}}) == [] and not is_ablation({**ss, "config": {}})
    odd_name = {**ss, "config": {"variant": "released", "target_gap": "withheld"}}  # the name says nothing
    assert is_ablation(odd_name) and "withheld" in changes(odd_name)[0]
    assert not reads_target_time(odd_name) and reads_target_time({**ss, "config": {}})
    assert "D·u" in changes({**ss, "config": {"gap_ablation": "zero"}})[0]
    assert not reads_target_time({**ss, "config": {"blocks": "mamba"}})
    log = {**ss, "config": {"time_transform": "log1p", "time_unit": 1}}
    assert changes(log) == ["gaps log1p-scaled (long gaps keep some weight)"] and not is_ablation(log)
    sas = {"model": "sasrec", "config": {"target_gap_embedding": True}}
    assert is_ablation(sas) and reads_target_time(sas) and not is_ablation({"model": "sasrec", "config": {}})


def test_each_variant_against_the_released_ss4rec_with_seeds_averaged_per_user():
    r0, r1 = pattern(0.30, 0.2, seed=1), pattern(0.20, 0.2, seed=2)
    n0, n1 = pattern(0.10, 0.1, seed=3), pattern(0.12, 0.1, seed=4)
    m0 = pattern(0.25, 0.2, seed=5)
    s0, t0 = pattern(0.15, 0.1, seed=6), pattern(0.22, 0.1, seed=7)
    specs = [run("ss4rec", "released", 0, 0.08, r0), run("ss4rec", "released", 1, 0.08, r1),
             run("ss4rec", "no-target-time", 0, 0.09, n0, target_gap="withheld"),
             run("ss4rec", "no-target-time", 1, 0.09, n1, target_gap="withheld"),
             run("ss4rec", "mamba-only", 0, 0.07, m0, blocks="mamba"),
             run("sasrec", None, 0, 0.06, s0), run("sasrec", "sasrec-target-time", 0, 0.10, t0,
                                                   target_gap_embedding=True)]
    runs, load = build(specs)
    (study,) = AB.ablation_studies(runs, load, n_boot=300)
    assert study.reference.variant == "released" and study.reference.n_seeds == 2
    pairs = [(r.config.variant, r.reference.model) for r in study.rows]
    assert sorted(pairs) == sorted([("no-target-time", "ss4rec"), ("mamba-only", "ss4rec"),
                                    ("sasrec-target-time", "sasrec"), ("sasrec-target-time", "ss4rec")])
    row = next(r for r in study.rows if r.config.variant == "no-target-time")
    c = row.comparisons["ndcg@10"]
    assert c.diff == pytest.approx(np.mean((n0 + n1) / 2 - (r0 + r1) / 2))
    assert c.reliable and not c.a_better and AB.reading(c) == "worse than the reference"
    assert row.config.test["ndcg@10"][2] == 2
    tt = next(r for r in study.rows if r.config.variant == "sasrec-target-time" and r.reference.model == "sasrec")
    assert tt.comparisons["ndcg@10"].diff == pytest.approx(np.mean(t0 - s0))
    assert any("single seed" in n for n in study.notes)  # mamba-only and the SASRecs have one
    table = AB.study_table(study)
    assert len(table) == 4 and "withheld" in table.loc[0, "what changes"]  # the order, SASRec last
    assert table["configuration"].tolist()[2:] == ["SASRec · sasrec-target-time · len50"] * 2
    assert table["compared with"].tolist()[2:] == ["SASRec · len50", "SS4Rec · released · len50"]
    assert set(AB.study_frame(study)["metric"]) == {"NDCG@10", "HR@10", "MRR@10"}
    lines = AB.conclusions(study)
    assert all(line.startswith("**") for line in lines)
    # each sentence covers every metric the chart shows, and reads each one (not NDCG@10 only)
    assert all(all(m in line for m in ("NDCG@10 ", "HR@10 ", "MRR@10 ")) for line in lines)
    no_time = next(line for line in lines if "no-target-time" in line)
    readings = {m: AB.reading(c) for m, c in row.comparisons.items()}
    for m, r in readings.items():
        assert r in no_time and C_display(m) in no_time.split(":")[-1]
    # Holm over the study's 4 rows x 3 metrics (what its chart shows), and the sentence that says so
    comps = [c for r in study.rows for c in r.comparisons.values()]
    assert all(np.isfinite(c.p_holm) and c.p_holm >= c.p_value for c in comps)
    note = A.multiplicity_note(comps)
    assert f"of these {len(comps)} intervals exclude 0" in note and "Holm" in note
    # the answer page: ablations are evidence, never the headline (no-target-time and SASRec+time have the best
    # validation here)
    (v,) = A.ranking_verdicts(runs, load, n_boot=200)
    assert v.ss4rec.variant == "released" and v.baseline.variant == "default"
    assert v.variants == []
    roles = dict(zip(A.contender_table(v)["configuration"], A.contender_table(v)["role"]))
    assert sum(r == "ablation (What matters)" for r in roles.values()) == 3


def test_each_way_time_enters_against_the_same_architecture_without_time():
    ref, free = pattern(0.30, 0.2, seed=1), pattern(0.20, 0.2, seed=2)
    feat, hist = pattern(0.35, 0.2, seed=3), pattern(0.18, 0.1, seed=4)
    s0, t0, ti = pattern(0.15, 0.1, seed=6), pattern(0.22, 0.1, seed=7), pattern(0.12, 0.1, seed=8)
    specs = [run("ss4rec", "released", 0, 0.08, ref), run("ss4rec", "constant-gap", 0, 0.05, free,
                                                           gap_ablation="constant"),
             run("ss4rec", "gap-features", 0, 0.09, feat, gap_features="all"),
             run("ss4rec", "gap-features-no-target-time", 0, 0.07, hist, gap_features="history",
                 target_gap="withheld"),
             run("ss4rec", "mamba-only", 0, 0.07, hist, blocks="mamba"),  # not a way time enters: no row
             run("sasrec", None, 0, 0.06, s0), run("sasrec", "sasrec-target-time", 0, 0.10, t0,
                                                   target_gap_embedding=True),
             run("tisasrec", None, 0, 0.05, ti), run("gru4rec", None, 0, 0.05, s0)]
    runs, load = build(specs)
    (study,) = AB.time_entry_studies(runs, load, n_boot=300)
    got = {(r.config.variant or r.config.model, r.reference.model, r.reference.variant): r.change
           for r in study.rows}
    assert set(got) == {("released", "ss4rec", "constant-gap"), ("gap-features", "ss4rec", "constant-gap"),
                        ("gap-features-no-target-time", "ss4rec", "constant-gap"),
                        ("sasrec-target-time", "sasrec", "default"), ("default", "sasrec", "default")}
    assert got[("released", "ss4rec", "constant-gap")] == "S5 decay by the gaps; the target's time included"
    assert got[("gap-features-no-target-time", "ss4rec", "constant-gap")] == \
        "S5 decay by the gaps + gap features (gap before each item); history only"
    assert "relation embeddings" in got[("default", "sasrec", "default")]  # TiSASRec, against plain SASRec
    row = next(r for r in study.rows if r.config.variant == "gap-features")
    assert row.comparisons["ndcg@10"].diff == pytest.approx(np.mean(feat - free))
    assert any("TiSASRec is set against plain SASRec" in n for n in study.notes)
    table = AB.time_table(study)
    assert list(table["architecture"])[:3] == ["SS4Rec"] * 3 and "NDCG@10 difference (95% CI)" in table
    by_gap = AB.time_by_gap(study, load)
    assert len(by_gap) == len(study.rows) and list(by_gap.columns[1:]) == list(AB.REGIME_LABELS)
    assert by_gap.iloc[0, 1].endswith("n=16")  # the same-second bucket holds 16 of the 40 users
    # without a time-free reference on the data, no study
    assert AB.time_entry_studies([i for i in runs if i["config"].get("variant") not in ("constant-gap",)
                                  and i["model"] != "sasrec"], load, n_boot=50) == []


def test_gap_regime_breakdown_by_hand():
    ref = np.full(40, 0.2)
    var = ref.copy()
    var[:16] = 0.0   # the same-second users lose everything
    var[16:24] = 0.3  # under a minute: +0.1
    runs, load = build([run("ss4rec", "released", 0, 0.1, ref),
                        run("ss4rec", "no-target-time", 0, 0.1, var, target_gap="withheld")])
    (study,) = AB.ablation_studies(runs, load, n_boot=100)
    bd = AB.regime_breakdown(study.rows[0], load, by="gap", n_boot=200)
    assert [str(b) for b in bd["bucket"]] == list(AB.REGIME_LABELS)
    assert bd["users"].tolist() == [16, 8, 8, 8]
    assert bd["diff"].tolist() == pytest.approx([-0.2, 0.1, 0.0, 0.0])
    assert bd["ci_low"][0] == pytest.approx(-0.2) and bd["ci_high"][0] == pytest.approx(-0.2)  # no spread
    by_len = AB.regime_breakdown(study.rows[0], load, by="length")
    assert by_len.set_index("bucket")["users"].sum() == 40
    assert by_len.set_index("bucket").loc["≤20", "diff"] == pytest.approx((16 * -0.2 + 4 * 0.1) / 20)


def test_regime_buckets_edges():
    assert [str(b) for b in AB.regime_buckets([0, 1, 59, 60, 86399, 86400])] == [
        "same second", "1 s – 1 min", "1 s – 1 min", "1 min – 1 day", "1 min – 1 day", "over a day"]


def test_every_gap_table_is_a_coarsening_of_one_rule():
    """Compare's breakdowns and What matters' regimes pick their edges from one list, with [lower, upper) bins, so
    a gap lands in the same place in both (a 60 s gap once sat on different sides of "1 min" in two tables)."""
    from recsys.compare.breakdowns import GAP_RULE_EDGES, GAP_SCHEMES, gap_buckets

    assert all(set(edges) <= set(GAP_RULE_EDGES) for edges, _ in GAP_SCHEMES.values())
    gaps = [0, 1, 59, 60, 61, 3600, 86399, 86400, 30 * 86400]
    detail, regime = [list(map(str, gap_buckets(gaps, s))) for s in ("detail", "regime")]
    for g, d, r in zip(gaps, detail, regime):  # under or over a minute, a day: the two tables agree
        assert (d == "<1 min") == (r in ("same second", "1 s – 1 min")), g
        assert (d in ("1 d–1 w", "1 w–1 mo", ">1 mo")) == (r == "over a day"), g


def test_the_models_embed_gaps_by_one_log_rule():
    import torch

    from recsys.models.sasrec import gap_buckets
    from recsys.models.tisasrec import interval_matrix

    ts = torch.tensor([[0.0, 1.0, 3.0, 3.0 + 2**20]])
    r = interval_matrix(ts, torch.tensor([4]), time_span=16, interval="log2")
    assert r[0, 3].tolist() == [16, 16, 16, 0] and r[0, 2].tolist() == [2, 1, 0, 16]  # floor(log2(1+3)) = 2
    assert gap_buckets(torch.tensor([0.0, 1.0, 3.0, 2.0**20])).tolist() == [0, 1, 2, 20]


def test_the_page_on_a_folder_without_ablations_says_what_it_needs(tmp_path):
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    at.sidebar.text_input[0].set_value(str(tmp_path)).run()
    at.switch_page("app_pages/ablations.py").run()
    assert not at.exception
    assert any("No ablations" in i.value for i in at.info)


def test_a_run_that_predates_a_setting_pools_with_one_that_records_its_default():
    from recsys.compare.seeds import configuration_key

    old = {"model": "ss4rec", "config": {"variant": "released", "seed": 0, "hidden": 64}}
    new = {"model": "ss4rec", "config": {"variant": "released", "seed": 1, "hidden": 64, "gap_ablation": "none",
                                         "target_gap": "given", "blocks": "s5+mamba", "tie_order": "file"}}
    ablated = {"model": "ss4rec", "config": {**new["config"], "gap_ablation": "zero"}}
    assert configuration_key(old) == configuration_key(new) != configuration_key(ablated)


def test_the_sidebar_offers_the_released_run_first_and_ablations_last():
    from recsys import compare as C
    from recsys.app import state

    found = C.scan_runs(ROOT / "checkpoints")
    ss = state.candidates("ss4rec", found)
    assert ss[0].label == "ss4rec-ranking-ml-100k-len50-released-seed0"
    flags = [is_ablation(r.info) for r in ss if not (r.info.get("protocol") or {}).get("mask_seen")]
    assert flags == sorted(flags)  # every ablation after every non-ablation
    other = state.candidates("other", found)
    assert not is_ablation(other[0].info)


def test_the_page_on_the_shipped_ablations():
    if not list((ROOT / "checkpoints").glob("ss4rec-*-no-target-time-seed*")):
        pytest.skip("no shipped ablation runs")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300).run()
    at.switch_page("app_pages/ablations.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    variants = {"no-target-time", "zero-gaps", "shuffled-gaps", "constant-gap", "log1p-gaps", "span-normalised",
                "s5-only", "mamba-only", "sasrec-target-time"}
    assert {v for v in variants if table["configuration"].str.contains(v).any()} == variants
    assert (table["seeds"] == "3 seeds").all()
    assert at.selectbox(key="abl_row_0").value == 0  # the breakdown opens on no-target-time
    breakdown = at.dataframe[1].value
    assert breakdown["users"].sum() == 943 and list(breakdown["bucket"]) == list(AB.REGIME_LABELS)
    at.radio(key="abl_by_0").set_value("length").run()
    assert not at.exception and at.dataframe[1].value["users"].sum() == 943
    # how time enters: SS4Rec's decay against its constant-gap twin, SASRec's gap feature against plain SASRec
    assert any(h.value == "How time enters" for h in at.header)
    times = next(d.value for d in at.dataframe if "how time enters" in d.value.columns)
    assert {"SS4Rec · released · len50", "SASRec · sasrec-target-time · len50"} <= set(times["configuration"])
    assert set(times.loc[times["architecture"] == "SS4Rec", "without time"]) == {"SS4Rec · constant-gap · len50"}
