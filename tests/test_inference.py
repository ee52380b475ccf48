"""Loading runs for the dashboard: trajectories, live scoring, what-if gaps, and refusal of bad runs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from recsys.config import resolve_config
from recsys.inference import human_gap, load_run, score_history, state_projection, trajectory, user_history
from recsys.runs import RunError, content_digest
from recsys.training.runner import run_training

TINY_SS4REC = {"hidden": 16, "d_state": 8, "s5_state": 8, "max_len": 20, "epochs": 1, "batch_size": 512,
               "cpu_threads": 1, "rating_head": True}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, model, over in (("ss", "ss4rec", TINY_SS4REC),
                              ("ncf", "ncf", {"gmf_dim": 8, "mlp_dims": [16, 8], "epochs": 1, "cpu_threads": 1}),
                              ("ncfr", "ncf", {"objective": "rating", "gmf_dim": 8, "mlp_dims": [16, 8], "epochs": 1,
                                               "cpu_threads": 1}),
                              ("pop", "popular", {}),
                              ("sas", "sasrec", {"hidden_size": 16, "inner_size": 32, "max_len": 20, "epochs": 1,
                                                 "batch_size": 512, "cpu_threads": 1}),
                              ("mk", "markov", {})):
        run_training(resolve_config(model, {}, over), root / name, ["test"], progress=False)
        out[name] = root / name
    return out


def test_human_gap():
    assert [human_gap(x) for x in (0, 45, 90, 3 * 86400, 1.5 * 3600, 400 * 86400)] == \
        ["0 s", "45 s", "1.5 min", "3 d", "1.5 h", "1.1 y"]


def test_user_history_and_unknown_user(runs):
    run = load_run(runs["ss"])
    h = user_history(run, 1)
    assert len(h) > 5 and (np.diff(h["timestamp"]) >= 0).all() and h["gap_before"].iloc[0] == 0
    assert h["title"].iloc[0].endswith(")")
    with pytest.raises(KeyError, match="user 999999 is not in ml-100k"):
        user_history(run, 999999)


def test_trajectory_is_consistent_with_scoring(runs):
    run = load_run(runs["ss"])
    h = user_history(run, 1)
    items, times = h["item_idx"].to_numpy(), h["timestamp"].to_numpy()
    tr = trajectory(run, items, times, h["rating"].to_numpy(), k=10)
    steps = tr["steps"]
    assert len(steps) == min(len(h), run.max_len) and tr["cut"] == max(0, len(h) - run.max_len)
    assert len(tr["hidden"]) == 2 and tr["hidden"][0].shape == (len(steps), 16)
    assert all(0 <= r <= 1 for s in steps for r in s["retention"])
    # zero gaps keep the state (retention 1); a long gap keeps less of it
    zero = [s for s in steps if s["gap_after"] == 0]
    if zero:
        assert zero[0]["retention"][0] == pytest.approx(1.0)
    # the last step's prediction is exactly what live scoring returns for the same "now" (seen items kept)
    live = score_history(run, items, times, now=tr["now"], k=10, hide_seen=False)
    assert live.table["title"].tolist() == steps[-1]["top_titles"]
    assert math.isfinite(live.millis) and live.millis >= 0  # a duration, not a timing target (benchmarks time)
    # rank of the actual next movie agrees with its score among the step's scores
    for s in steps[:-1]:
        assert 1 <= s["next_rank"] <= run.prepared.n_items
        if s["next_item"] in s["top_items"]:
            assert s["next_rank"] <= 10
    assert state_projection(tr["hidden"][1]).shape == (len(steps), 2)


def test_what_if_gap_changes_ss4rec_but_not_ncf(runs):
    run = load_run(runs["ss"])
    h = user_history(run, 5)
    items, times = h["item_idx"].to_numpy(), h["timestamp"].to_numpy()
    soon = score_history(run, items, times, now=int(times[-1]) + 60, k=50)
    later = score_history(run, items, times, now=int(times[-1]) + 86400 * 365, k=50)
    assert soon.table["title"].tolist() != later.table["title"].tolist()
    assert not set(soon.table["item"]) & set(h["item"])  # seen movies hidden
    with pytest.raises(ValueError, match="empty"):
        score_history(run, [], [])
    ncf = load_run(runs["ncf"])
    a = score_history(ncf, user_id=5, k=10)
    assert len(a.table) == 10 and not set(a.table["item"]) & set(h["item"])
    with pytest.raises(ValueError, match="known users only"):
        score_history(ncf, items, times)
    r = score_history(load_run(runs["ncfr"]), user_id=5, k=5)
    assert "predicted rating" in r.table.columns and (r.table["predicted rating"].diff().dropna() <= 0).all()
    p = score_history(load_run(runs["pop"]), user_id=5, k=5, hide_seen=False)
    assert len(p.table) == 5


def test_trajectory_needs_ss4rec(runs):
    with pytest.raises(ValueError, match="need an SS4Rec run"):
        trajectory(load_run(runs["ncf"]), [1, 2], [1, 2])


def test_corrupted_and_foreign_runs_refused(runs, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(runs["ss"], bad)
    info = json.loads((bad / "run.json").read_text())
    info["config"]["hidden"] = 32  # a run.json that does not describe its weights
    (bad / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="inconsistent: edited after the run wrote it"):
        load_run(bad)  # a hand edit no longer matches run.json's own digest
    info["digest"] = content_digest(info)  # an edit that also forges the digest still meets the weights
    (bad / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="trained with another configuration"):
        load_run(bad)
    info["config"]["hidden"] = json.loads((Path(runs["ss"]) / "run.json").read_text())["config"]["hidden"]
    info["config"]["time_unit"] = 60.0  # keeps every tensor's shape: loaded and used silently before (issue 26)
    info["digest"] = content_digest(info)
    (bad / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="trained with another configuration than run.json records"):
        load_run(bad)
    del info["artefacts"]
    info["digest"] = content_digest(info)
    (bad / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="complete run without the sha256"):
        load_run(bad)  # without its hashes a complete run is refused, not trusted
    (bad / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(RunError):
        load_run(bad)


def test_state_projection_matches_sklearn_pca():
    from sklearn.decomposition import PCA

    x = np.random.default_rng(0).normal(size=(30, 8)) * np.arange(1, 9)
    ours = state_projection(x)
    ref = PCA(n_components=2).fit_transform(x)
    for j in range(2):  # equal up to the sign of each component
        assert np.allclose(np.abs(ours[:, j]), np.abs(ref[:, j]), atol=1e-8)
    assert state_projection(x[:1]).shape == (1, 2) and not state_projection(x[:1]).any()


def test_rating_head_refit_keeps_ranking_and_never_worsens_validation(runs, tmp_path):
    from recsys.runs import RunDirectory
    from recsys.training.reevaluate import refit_rating_head

    info = refit_rating_head(runs["ss"], tmp_path / "refit", ["test"], epochs=3)
    r = info["rating_head_refit"]
    assert r["valid_rmse_after"] <= r["valid_rmse_before"]
    assert info["metrics"]["valid"]["rmse"] == pytest.approx(r["valid_rmse_after"], abs=1e-5)
    before = RunDirectory(runs["ss"]).info()["metrics"]["test"]
    for k in ("hr@10", "ndcg@10", "mrr@10"):
        assert info["metrics"]["test"][k] == pytest.approx(before[k])  # only the rating head changed
    load_run(tmp_path / "refit")


def test_analyses_behind_the_results_doc(runs):
    from recsys.analysis import gap_sensitivity, retention_table, seen_share_of_topk

    share = seen_share_of_topk(load_run(runs["pop"]))
    assert 0 < share < 1
    ss = load_run(runs["ss"])
    gaps = {"1 minute": 60, "1 day": 86400, "1 year": 365 * 86400}
    sens = gap_sensitivity(ss, gaps, users=5)
    assert sens["1 day"] == {"mean_overlap": 10.0, "identical_share": 1.0}  # the baseline against itself
    ret = retention_table(ss, gaps)
    for layer in range(2):
        assert ret["1 minute"][layer] >= ret["1 day"][layer] >= ret["1 year"][layer]
    with pytest.raises(ValueError, match="SS4Rec"):
        gap_sensitivity(load_run(runs["ncf"]), gaps)


def test_history_reading_baselines_score_a_built_history(runs):
    """SASRec and the Markov floor score the history itself (not a user id); time does not move their lists."""
    ss = load_run(runs["ss"])
    h = user_history(ss, 1)
    items, times = h["item_idx"].to_numpy()[:12], h["timestamp"].to_numpy()[:12]
    for name in ("sas", "mk"):
        run = load_run(runs[name])
        a = score_history(run, items, times, k=10, hide_seen=True)
        b = score_history(run, items, times + 10**6, k=10, hide_seen=True)
        assert len(a.table) == 10 and a.table["title"].tolist() == b.table["title"].tolist()
        assert not set(a.table["item"]) & set(run.item_columns["item"][items])  # seen movies hidden
        assert "ignores time" in a.note
    mk = load_run(runs["mk"])
    # the Markov floor's list is led by the movies that followed the history's last movie in training
    top = score_history(mk, items, times, k=1, hide_seen=False).table["item"].iloc[0]
    model = mk.model
    last = int(items[-1])
    followers = model.next_items[model.indptr[last]:model.indptr[last + 1]]
    assert int(mk.prepared.item_map.to_index([int(top)])[0]) in followers.tolist()


class BagOfItems:
    """A sequence 'model' whose score is the sum over the history of E[item] . W[target]: each movie's
    leave-one-out contribution to a target is exactly E[item] . W[target] (a case whose answer is known)."""

    def __init__(self, n_items=12, d=4, seed=0):
        g = np.random.default_rng(seed)
        self.E, self.W = g.normal(size=(n_items, d)), g.normal(size=(n_items, d))

    def score(self, batch):
        import torch

        items = batch.items.numpy()
        mask = np.arange(items.shape[1])[None] < batch.lengths.numpy()[:, None]
        h = (self.E[items] * mask[..., None]).sum(1)
        return torch.from_numpy(h @ self.W.T)


def test_occlusion_recovers_each_movies_known_contribution():
    from recsys.inference import occlusion

    model = BagOfItems()
    items, times = np.array([3, 5, 7, 2]), np.array([10, 20, 30, 40])
    values, logit = occlusion(model, items, times, 50, [1, 9])
    for t in (1, 9):
        assert values[t] == pytest.approx(model.E[items] @ model.W[t])
        assert logit[t] == pytest.approx(float(model.E[items].sum(0) @ model.W[t]))
    single, _ = occlusion(model, items[:1], times[:1], 50, [1])
    assert np.isnan(single[1]).all()  # nothing to remove from a history of one movie
    with pytest.raises(ValueError, match="empty history"):
        occlusion(model, [], [], 50, [1])


def test_contributions_of_ss4rec_match_scoring_the_history_without_each_movie(runs):
    import torch

    from recsys.data.batch import single_history
    from recsys.inference import contributions

    run = load_run(runs["ss"])
    h = user_history(run, 1)
    items, times = h["item_idx"].to_numpy(), h["timestamp"].to_numpy()
    tr = trajectory(run, items, times, k=10)
    step = len(tr["steps"]) - 1
    s = tr["steps"][step - 1]
    c = contributions(run, items, times, step, [s["top_items"][0], s["next_item"]])
    assert c["logit"][s["top_items"][0]] == pytest.approx(s["top_scores"][0], abs=1e-4)  # the trajectory's score
    assert c["positions"] == list(range(1, step + 1)) and len(c["titles"]) == step
    fed_items, fed_times = items[tr["cut"]:][:step], times[tr["cut"]:][:step]
    k, target = 2, s["next_item"]
    keep = np.arange(step) != k
    with torch.no_grad():
        without = run.model.score(single_history(fed_items[keep], fed_times[keep], int(times[tr["cut"] + step])))
    assert c["values"][target][k] == pytest.approx(c["logit"][target] - float(without[0, target]), abs=1e-4)
    with pytest.raises(ValueError, match="step must be between"):
        contributions(run, items, times, 0, [1])
    with pytest.raises(ValueError, match="does not read histories"):
        contributions(load_run(runs["ncf"]), items, times, 2, [1])


def test_gap_sweep_and_retention_curve(runs):
    from recsys.inference import gap_sweep, retention_curve

    ss = load_run(runs["ss"])
    hist = user_history(ss, 1)
    items, times = hist["item_idx"].to_numpy(), hist["timestamp"].to_numpy()
    gaps = {"0 s": 0, "1 min": 60, "1 day": 86400, "2 years": 730 * 86400}
    sweep = gap_sweep(ss, items, times, gaps)
    assert sweep["gap"].tolist() == list(gaps) and sweep["shared with the first"].iloc[0] == 10
    for _, row in sweep.iterrows():  # each list is exactly what scoring at that gap gives
        direct = score_history(ss, items, times, now=int(times[-1]) + row["seconds"], k=10)
        assert row["top"] == direct.table["title"].tolist()
        assert row["shared with the first"] == len(set(row["top"]) & set(sweep["top"].iloc[0]))
    curve = retention_curve(ss, [1, 60, 3600, 86400, 10**8])
    assert sorted(curve["layer"].unique()) == ["layer 1", "layer 2"]
    for _, g in curve.groupby("layer"):
        r = g["retention"].to_numpy()
        assert (np.diff(r) <= 1e-12).all() and r[0] > 0.9 and r[-1] < 1e-6  # decays from ~1 to 0 with the gap


def test_most_rated_is_the_fallback_counted_by_hand(runs):
    from recsys.inference import most_rated

    run = load_run(runs["ncf"])
    counts = run.prepared.interactions["item_idx"].value_counts()
    top = most_rated(run, k=3)
    assert top["ratings"].tolist() == sorted(counts.to_numpy(), reverse=True)[:3] and top["rank"].tolist() == [1, 2, 3]
    first = int(counts.idxmax())
    hidden = most_rated(run, exclude=[first], k=3)
    assert run.titles([first])[0] not in hidden["title"].tolist()
    assert hidden["ratings"].iloc[0] == sorted(counts.to_numpy(), reverse=True)[1]
