"""Seeds of one configuration: grouping (only the seed may differ), mean +- sd, per-user means over seeds, the paired
comparison of two configurations, the model x dataset matrix and its command."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recsys import compare as C
from recsys.evaluation.metrics import paired_bootstrap
from tests.conftest import ROOT
from tests.helpers import info_for


def run(model="sasrec", seed=0, ndcg=0.05, variant=None, **cfg) -> dict:
    info = info_for(model, metrics={"hr@10": 2 * ndcg, "ndcg@10": ndcg, "mrr@10": ndcg / 2, "n": 4},
                    run_id=f"{model}-{variant or 'default'}-seed{seed}-{cfg.get('lr', '')}")
    info["config"].update({"seed": seed, "lr": 0.001, "cpu_threads": seed + 1, "device": "cpu", **cfg})
    if variant:
        info["config"]["variant"] = variant
    return info


def test_runs_that_differ_only_in_seed_are_one_configuration():
    runs = [run(seed=2, ndcg=0.06), run(seed=0, ndcg=0.04), run(seed=1, ndcg=0.05),
            run(seed=0, lr=0.01), run(seed=0, variant="no-head"), run("popular", seed=0), run("popular", seed=1)]
    groups = C.seed_groups(runs)
    assert [(g.model, g.variant, g.seeds) for g in groups] == [
        ("sasrec", "default", [0, 1, 2]), ("sasrec", "default", [0]), ("sasrec", "no-head", [0]),
        ("popular", "default", [0, 1])]
    table = C.seed_table(groups, k=10)
    first = table.iloc[0]
    assert math.isclose(first["NDCG@10"], 0.05) and math.isclose(first["NDCG@10 sd"], 0.01)  # sd of .04 .05 .06
    assert first["seeds"] == "3 seeds" and first["n seeds"] == 3
    assert math.isnan(table.iloc[1]["NDCG@10 sd"]) and table.iloc[1]["seeds"] == "1 seed"
    assert table.iloc[3]["seeds"] == "deterministic" and math.isnan(table.iloc[3]["NDCG@10 sd"])
    shown = C.format_seed_table(table, k=10)
    assert shown.iloc[0]["NDCG@10"] == "0.0500 ± 0.0100" and shown.iloc[1]["NDCG@10"] == "0.0500"
    assert "RMSE" not in shown  # a family the runs do not report is left out, never shown as 0


def test_mean_sd_of_nothing_and_of_one():
    assert C.mean_sd([])[2] == 0 and math.isnan(C.mean_sd([])[0])
    mean, sd, n = C.mean_sd([0.3, None, float("nan")])
    assert (mean, n) == (0.3, 1) and math.isnan(sd)


def frame(ndcg, users=(1, 2, 3, 4), targets=(10, 20, 30, 40)):
    return pd.DataFrame({"user_id": list(users), "target": list(targets), "ndcg@10": list(ndcg),
                         "hr@10": [float(x > 0) for x in ndcg]})


def test_per_user_means_over_seeds_and_paired_comparison():
    a = C.per_user_mean([frame([0.5, 0, 1, 0.2]), frame([0.3, 0.1, 1, 0])], ["ndcg@10", "hr@10"])
    assert a["ndcg@10"].tolist() == pytest.approx([0.4, 0.05, 1.0, 0.1])
    assert a["hr@10"].tolist() == pytest.approx([1.0, 0.5, 1.0, 0.5])
    b = C.per_user_mean([frame([0.1, 0.1, 0.5, 0.0])], ["ndcg@10"])
    res = C.compare_groups(a, b, "ndcg@10", n_boot=500, seed=3)
    ref = paired_bootstrap(np.array([0.4, 0.05, 1.0, 0.1]), np.array([0.1, 0.1, 0.5, 0.0]), n_boot=500, seed=3)
    assert res["diff"] == pytest.approx(ref["diff"]) and res["ci_low"] == pytest.approx(ref["ci_low"])
    with pytest.raises(C.SeedAlignmentError, match="different users"):
        C.per_user_mean([frame([0.5, 0, 1, 0.2]), frame([0.5, 0, 1], users=(1, 2, 5), targets=(10, 20, 30))],
                        ["ndcg@10"])
    with pytest.raises(C.SeedAlignmentError, match="held-out items"):
        C.per_user_mean([frame([0.5, 0, 1, 0.2]), frame([0.5, 0, 1, 0.2], targets=(10, 20, 30, 41))], ["ndcg@10"])
    with pytest.raises(C.SeedAlignmentError, match="different users"):
        C.compare_groups(a, C.per_user_mean([frame([0.1, 0.2], users=(1, 2), targets=(10, 20))], ["ndcg@10"]),
                         "ndcg@10")


def test_matrix_and_reference_comparisons():
    runs = [run("ss4rec", s, n, variant="released") for s, n in ((0, 0.08), (1, 0.07))]
    runs += [run("sasrec", 0, 0.06), run("popular", 0, 0.02)]
    m = C.ranking_matrix(runs)
    assert m.loc["SS4Rec · released · len50", "ml-100k"] == "0.0750 ± 0.0071 (2 seeds)"
    assert m.loc["Popular (floor)", "ml-100k"] == "0.0200 (deterministic)"
    results = {r["run_id"]: frame([0.1, 0.0, 0.3, 0.1]) for r in runs}
    comp = C.reference_comparisons(runs, lambda r: results[r["run_id"]], metrics=("ndcg@10",), n_boot=200)
    assert sorted(comp["other"]) == ["Popular (floor)", "SASRec · len50"]
    assert (comp["diff"] == 0).all() and (comp["dataset"] == "ml-100k").all()


def test_matrix_command_on_the_shipped_runs():
    out = subprocess.run([sys.executable, "scripts/analyse_runs.py", "matrix", "checkpoints", "--n-boot", "200"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "mean ± sd over seeds" in out.stdout and "| Popular (floor) |" in out.stdout


def test_answer_command_prints_each_verdict_with_its_floor_judgement(tmp_path):
    from tests.helpers import ranking_results, write_run

    for model, seed, ndcg in (("sasrec", 0, (0.5, 0.0, 1.0, 0.25)), ("sasrec", 1, (0.3, 0.1, 1.0, 0.0)),
                              ("popular", 0, (0.0, 0.0, 0.5, 0.0))):
        info = run(model, seed, float(np.mean(ndcg)))
        info["run_id"] = f"{model}-seed{seed}"
        write_run(tmp_path, info["run_id"], info, results=ranking_results(ndcg=ndcg))
    out = subprocess.run([sys.executable, "scripts/analyse_runs.py", "answer", str(tmp_path), "--n-boot", "200"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Intervals: seeds+users" in out.stdout and "No SS4Rec run on" in out.stdout
    line = next(x for x in out.stdout.splitlines() if x.startswith("| SASRec"))
    assert "| 2 seeds |" in line and ("| yes |" in line or "not reliably" in line or "NO (below" in line)


def test_compare_page_pools_seeds_and_draws_the_seed_band(tmp_path):
    from recsys.app import state
    from tests.helpers import compare_page, ranking_results, write_run

    for seed, ndcg in ((0, (0.5, 0.0, 1.0, 0.25)), (1, (0.3, 0.1, 1.0, 0.0))):
        info = run("sasrec", seed, float(np.mean(ndcg)))
        info["run_id"] = f"sasrec-seed{seed}"
        write_run(tmp_path, info["run_id"], info, results=ranking_results(ndcg=ndcg),
                  history=[{"epoch": e, "train_loss": 5.0 - e - seed, "valid_ndcg@10": 0.1 * e + 0.01 * seed}
                           for e in (1, 2, 3)])
    pop = run("popular", 0, 0.1)
    write_run(tmp_path, "pop", pop, results=ranking_results(ndcg=(0, 0, 0.5, 0)))
    at = compare_page()
    at.text_input(key=state.RUNS_FOLDER).set_value(str(tmp_path)).run()
    assert not at.exception
    tables = [df for df in at.dataframe if not str(df.key or "").startswith("rt-")
              and "setting" not in df.value.columns]  # not the run table nor its configuration difference
    pooled = tables[0].value
    row = pooled[pooled["model"] == "SASRec · len50"].iloc[0]
    mean = np.mean([np.mean((0.5, 0.0, 1.0, 0.25)), np.mean((0.3, 0.1, 1.0, 0.0))])
    assert row["seeds"] == "2 seeds" and row["NDCG@10"].startswith(f"{mean:.4f} ± ")
    assert pooled[pooled["model"] == "Popular (floor)"].iloc[0]["seeds"] == "deterministic"
    assert len(tables[1].value) == 3  # each run, one click away
    assert any(t.label.startswith("Pool the seeds") and t.value for t in at.toggle)


def test_seed_band_pools_curves_per_epoch():
    from recsys import charts

    curves = pd.DataFrame({"run": ["a", "a", "b", "b", "b", "c"], "epoch": [1, 2, 1, 2, 3, 1],
                           "value": [0.1, 0.2, 0.3, 0.4, 0.5, 0.9], "best": False})
    band = C.seed_band(curves, {"a": "X", "b": "X", "c": "Y"})
    x = band[band["configuration"] == "X"].set_index("epoch")
    assert x.loc[1, "mean"] == pytest.approx(0.2) and (x.loc[1, "low"], x.loc[1, "high"]) == (0.1, 0.3)
    assert x.loc[3, "n"] == 1 and x.loc[3, "mean"] == 0.5  # only one seed reached epoch 3
    assert band[band["configuration"] == "Y"]["n"].tolist() == [1]
    spec = charts.seed_band_chart(band, "t", "y").to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["area", "line"]


def test_sidebar_offers_the_headline_run_first(tmp_path):
    """The default SS4Rec run is an unmasked seed-0 run, not a masked re-evaluation that sorts first by name; the
    default baseline beside it is the strongest sequential one (SASRec) before NCF and the floors."""
    from pathlib import Path

    from recsys.app import state

    def r(model, seed, masked=False):
        info = run(model, seed)
        info["protocol"]["mask_seen"] = masked
        return C.Run(Path(f"/x/{model}-{'masked-' if masked else ''}seed{seed}"), info)

    found = C.ScanResult(runs=[r("ss4rec", 1), r("ss4rec", 0, masked=True), r("ss4rec", 0), r("popular", 0),
                               r("ncf", 0), r("sasrec", 2), r("sasrec", 0)])
    assert [x.label for x in state.candidates("ss4rec", found)] == ["ss4rec-seed0", "ss4rec-seed1",
                                                                    "ss4rec-masked-seed0"]
    assert [x.label for x in state.candidates("other", found)] == ["sasrec-seed0", "sasrec-seed2", "ncf-seed0",
                                                                   "popular-seed0"]


def test_time_command_prints_each_way_time_enters_against_its_architecture_without_time(tmp_path):
    from tests.helpers import ranking_results, write_run

    for name, model, cfg, ndcg in (("plain", "sasrec", {}, (0.3, 0.1, 1.0, 0.0)),
                                   ("timed", "sasrec", {"variant": "sasrec-target-time",
                                                        "target_gap_embedding": True}, (0.5, 0.1, 1.0, 0.25))):
        info = run(model, 0, float(np.mean(ndcg)))
        info["run_id"] = name
        info["config"].update(cfg)
        write_run(tmp_path, name, info, results=ranking_results(ndcg=ndcg))
    out = subprocess.run([sys.executable, "scripts/analyse_runs.py", "time", str(tmp_path), "--n-boot", "200"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("| SASRec |"))
    assert "gap feature (gap after each item); the target's time included" in line
    assert "| +0.1125 (" in line  # mean of (0.5-0.3, 0, 0, 0.25) over the 4 users
    assert "same second" in out.stdout  # the by-gap table
