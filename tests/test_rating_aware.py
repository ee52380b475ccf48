"""Issue 13: the rating side. The recent-residual floor against hand-computed values, the literature-split history
rule (strictly earlier timestamps), rating-aware SS4Rec and SASRec never reading the rating they predict, and
rating runs that train, select on validation RMSE and beat their floors' floor."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import ConfigError, resolve_config
from recsys.data.batch import SequenceBatch, timed_cases
from recsys.data.prepare import build_sequences
from recsys.models.baselines import RecentResidual
from recsys.models.rating_aware import rating_levels
from recsys.models.sasrec import SASRec
from recsys.models.ss4rec import SS4Rec
from recsys.runs import RunDirectory
from recsys.training.runner import run_training
from tests.conftest import write

TINY_SS4REC = {"hidden": 16, "n_layers": 1, "d_state": 8, "s5_state": 8, "dropout": 0.0}


def test_recent_residual_by_hand():
    m = RecentResidual(n_users=3, n_items=5, k_grid=(2,), shrink_grid=(1.0,))
    m.mean.fill_(3.0)
    m.user_bias.copy_(torch.tensor([0.0, 0.5, -1.0]))
    m.item_bias.copy_(torch.tensor([0.0, 0.2, -0.3, 0.1, 0.0]))
    m.k.fill_(2)
    m.shrink.fill_(1.0)
    # user 1: history items 1, 2, 3 rated 5, 2, 4 (left-aligned, one padding column); target item 4
    # user 2: empty history; target item 1
    b = SequenceBatch(users=torch.tensor([1, 2]), items=torch.tensor([[1, 2, 3, 0], [0, 0, 0, 0]]),
                      lengths=torch.tensor([3, 0]), targets=torch.tensor([4, 1]),
                      ratings=torch.tensor([[5.0, 2.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    pred = m.predict_rating(b)
    # the last k = 2 residuals of user 1: 2 - (3 + 0.5 - 0.3) = -1.2 and 4 - (3 + 0.5 + 0.1) = 0.4
    expected_1 = 3.0 + 0.5 + 0.0 + (-1.2 + 0.4) / (2 + 1.0)
    expected_2 = 3.0 - 1.0 + 0.2  # no history: the bias floor
    assert pred.tolist() == pytest.approx([expected_1, expected_2], abs=1e-6)
    m.k.fill_(0)
    assert m.predict_rating(b).tolist() == pytest.approx([3.5, 2.2], abs=1e-6)


def test_timed_cases_history_is_strictly_earlier_ratings_of_the_training_part():
    inter = pd.DataFrame({"user_idx": [1, 1, 1, 1, 2, 2], "item_idx": [10, 11, 12, 13, 10, 14],
                          "timestamp": [100, 200, 200, 300, 50, 60], "rating": [5.0, 4.0, 3.0, 2.0, 1.0, 2.0]},
                         index=np.arange(6))
    pool = build_sequences(inter)
    # targets: user 1 at t=200 (the two ratings at 200 are not history), user 1 at 301, user 2 at 50, user 3 (unknown)
    cases, full = timed_cases(pool, users=[1, 1, 2, 3], items=[20, 21, 22, 23], times=[200, 301, 50, 999],
                              ratings=[1, 2, 3, 4], max_len=3)
    assert cases.lengths.tolist() == [1, 3, 0, 0] and full.tolist() == [1, 4, 0, 0]
    assert cases.items[0].tolist() == [10, 0, 0]
    assert cases.items[1].tolist() == [11, 12, 13]  # the last max_len = 3 of the 4 earlier ratings
    assert cases.ratings[1].tolist() == [4.0, 3.0, 2.0]
    assert cases.targets.tolist() == [20, 21, 22, 23] and cases.target_ratings.tolist() == [1, 2, 3, 4]


def _histories(n_items=30, B=3, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items, (B, L), generator=g)
    times = torch.cumsum(torch.randint(0, 5000, (B, L), generator=g), dim=1) + 10**9
    ratings = torch.randint(1, 6, (B, L), generator=g).float()
    return items, times, ratings


@pytest.mark.parametrize("model_name", ["ss4rec", "sasrec"])
def test_rating_aware_state_never_reads_the_rating_it_predicts(model_name):
    torch.manual_seed(0)
    n_items, L = 30, 6
    if model_name == "ss4rec":
        model = SS4Rec(n_items, rating_head=True, rating_input=True, ce_weight=0.0, **TINY_SS4REC).eval()
    else:
        model = SASRec(n_items, max_len=L, rating_input=True, hidden_size=16, n_heads=2, inner_size=32).eval()
    items, times, ratings = _histories(n_items, L=L)
    lengths = torch.full((3,), L)
    # every position's prediction of the NEXT movie's rating, from the state after position j
    def per_position(r):
        batch = SequenceBatch(users=torch.zeros(3, dtype=torch.long), items=items, timestamps=times,
                              lengths=lengths, target_times=times[:, -1] + 60, ratings=r)
        if model_name == "ss4rec":
            h = model.encode(items, times, lengths, batch.target_times, ratings=r)
        else:
            h = model.encode(items, batch)
        return h
    base = per_position(ratings)
    j = 3
    later = ratings.clone()
    later[:, j + 1:] = 6 - later[:, j + 1:]  # change every rating after position j
    moved = per_position(later)
    assert torch.allclose(base[:, :j + 1], moved[:, :j + 1], atol=1e-6)  # the state up to j never saw them
    off, off_moved = model.rating_side.offsets(items, ratings), model.rating_side.offsets(items, later)
    assert torch.allclose(off[:, :j + 1], off_moved[:, :j + 1]) and not torch.allclose(off, off_moved)
    assert not torch.allclose(base[:, j + 1:], moved[:, j + 1:], atol=1e-4)  # but the model does read ratings
    # a case's prediction does not depend on its target's true rating
    case = SequenceBatch(users=torch.zeros(3, dtype=torch.long), items=items, timestamps=times, lengths=lengths,
                         targets=torch.tensor([1, 2, 3]), target_times=times[:, -1] + 60, ratings=ratings,
                         target_ratings=torch.tensor([1.0, 1.0, 1.0]))
    p1 = model.predict_rating(case)
    case.target_ratings = torch.tensor([5.0, 5.0, 5.0])
    assert torch.equal(p1, model.predict_rating(case))
    with pytest.raises(ValueError, match="ratings"):
        model.predict_rating(SequenceBatch(users=case.users, items=items, timestamps=times, lengths=lengths,
                                           targets=case.targets, target_times=case.target_times))


def test_rating_skip_is_a_decayed_shrunk_mean_of_residuals():
    torch.manual_seed(0)
    model = SS4Rec(10, rating_head=True, rating_input=True, **TINY_SS4REC)
    side = model.rating_side
    side.readout.global_mean.fill_(3.0)
    with torch.no_grad():
        side.readout.item_bias.weight[:, 0] = torch.linspace(-0.5, 0.5, 10)
    items = torch.tensor([[1, 4, 7, 0]])
    ratings = torch.tensor([[5.0, 2.0, 4.0, 0.0]])
    a, lam = 0.9, 2.0  # the initial decay and shrinkage
    b = side.readout.item_bias.weight[:, 0].detach()
    res = [5 - 3 - b[1], 2 - 3 - b[4], 4 - 3 - b[7]]
    k = 2  # position 2 sees residuals 0, 1, 2 with weights a^2, a, 1
    expected = (a**2 * res[0] + a * res[1] + res[2]) / (a**2 + a + 1 + lam)
    assert side.offsets(items, ratings)[0, k].detach().item() == pytest.approx(float(expected), abs=1e-4)


def test_bias_init_starts_from_the_bias_floor_fit():
    from recsys.evaluation.protocols import RatingProtocol, rating_split
    from recsys.models.baselines import BiasBaseline
    from recsys.training.runner import load_prepared
    from recsys.training.tasks import SequenceRatingTask

    cfg = resolve_config("ss4rec", {}, {"objective": "rating", "rating_head": True, "rating_input": True,
                                        "rating_bias_init": True, **TINY_SS4REC})
    _, prepared = load_prepared(cfg.train)
    task = SequenceRatingTask(prepared, rating_split(prepared, RatingProtocol.from_config(cfg.train)), max_len=20)
    model = SS4Rec(prepared.n_items + 1, cfg.params)
    model.init_from_data(task)
    floor = BiasBaseline(prepared.n_users + 1, prepared.n_items + 1, reg_grid=(1.0, 3.0, 10.0, 25.0))
    floor.fit(task, "cpu")
    readout = model.rating_side.readout
    assert float(readout.global_mean) == pytest.approx(float(floor.mean))
    assert torch.allclose(readout.item_bias.weight[:, 0], floor.item_bias)
    assert float(readout.item_bias.weight.detach().abs().max()) > 0.1  # real biases, not the zero start


def test_rating_levels_half_stars_and_padding():
    assert rating_levels(torch.tensor([0.0, 0.5, 1.0, 3.5, 5.0])).tolist() == [0, 1, 2, 7, 10]


def test_rating_objective_settings_refused_with_a_reason():
    with pytest.raises(ConfigError, match="rating head"):
        resolve_config("ss4rec", {}, {"objective": "rating"})
    with pytest.raises(ConfigError, match="rating_head"):
        resolve_config("ss4rec", {}, {"objective": "rating", "rating_input": True})
    with pytest.raises(ConfigError, match="ce_weight"):
        resolve_config("ss4rec", {}, {"rating_head": True, "ce_weight": 0})  # a ranking run needs its CE
    with pytest.raises(ConfigError, match="is a ranking model"):
        resolve_config("gru4rec", {}, {"objective": "rating"})
    assert resolve_config("recent-residual", {}, {}).train.objective == "rating"


def _train(tmp_path, model, name, **over):
    cfg = resolve_config(model, {}, {"cpu_threads": 1, **over})
    return run_training(cfg, tmp_path / name, ["python", "scripts/train.py", "--model", model], progress=False)


def test_rating_aware_ss4rec_trains_and_beats_the_global_mean(tmp_path):
    rr = _train(tmp_path, "recent-residual", "rr")
    bias = _train(tmp_path, "bias", "bias")
    ss = _train(tmp_path, "ss4rec", "ss", objective="rating", rating_head=True, rating_input=True, ce_weight=0.0,
                epochs=4, batch_size=32, lr=0.003, **TINY_SS4REC)
    gm = _train(tmp_path, "global-mean", "gm")
    # the same 943 held-out ratings for every model, the recent-residual floor ahead of the bias floor on validation
    assert rr["metrics"]["test"]["n"] == ss["metrics"]["test"]["n"] == bias["metrics"]["test"]["n"] == 943
    assert rr["fitted"]["chosen_k"] in RecentResidual.Config().k_grid
    assert rr["metrics"]["valid"]["rmse"] <= bias["metrics"]["valid"]["rmse"]
    assert ss["monitor"] == "valid rmse" and ss["protocol"]["history"].startswith("each held-out rating")
    losses = [h["train_loss"] for h in RunDirectory(tmp_path / "ss").history()]
    assert losses[-1] < losses[0]
    assert ss["metrics"]["test"]["rmse"] < gm["metrics"]["test"]["rmse"]
    res = pd.read_parquet(tmp_path / "ss" / "test_results.parquet")
    assert {"user", "item", "pred", "target", "sq_error", "history_length", "gap_before_target"} <= set(res.columns)
    assert np.sqrt(res["sq_error"].mean()) == pytest.approx(ss["metrics"]["test"]["rmse"], rel=1e-5)


def test_sequence_rating_run_on_literature_folds_uses_the_timestamp_rule(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 21):
        items = rng.choice(np.arange(1, 41), size=12, replace=False)
        t = 10**9 + np.sort(rng.integers(0, 10**6, size=12))
        t[3] = t[2]  # a same-second pair in every user
        rows += [(u, int(i), int(rng.integers(1, 6)), int(s)) for i, s in zip(items, t)]
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    d = tmp_path / "ml-100k"
    test_mask = rng.random(len(df)) < 0.2
    line = lambda f: "".join(f"{a}\t{b}\t{c}\t{e}\n" for a, b, c, e in f.itertuples(index=False))  # noqa: E731
    write(d / "u.data", line(df))
    write(d / "u.item", "".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x" + "|0" * 19 + "\n" for i in range(1, 41)),
          encoding="latin-1")
    write(d / "u.user", "".join(f"{u}|30|M|other|00000\n" for u in range(1, 21)))
    write(d / "u1.base", line(df[~test_mask]))
    write(d / "u1.test", line(df[test_mask]))
    info = _train(tmp_path, "recent-residual", "rr-u1", split="ml100k-folds", fold=1, data_dir=str(d))
    assert info["metrics"]["test"]["n"] == int(test_mask.sum())
    assert "strictly earlier timestamp" in info["protocol"]["history"]
    res = pd.read_parquet(tmp_path / "rr-u1" / "test_results.parquet")
    # each test rating's history length = the user's base ratings strictly before it
    raw = df.assign(test=test_mask)
    base = raw[~raw.test]
    expect = [int(((base.user == u) & (base.ts < ts)).sum()) for u, ts in raw[raw.test][["user", "ts"]].itertuples(
        index=False)]
    assert sorted(res["history_length"].tolist()) == sorted(expect)


def test_a_saved_rating_aware_run_reloads_to_the_same_numbers_and_refuses_a_head_refit(tmp_path):
    from recsys.training.reevaluate import evaluate_run, refit_rating_head

    info = _train(tmp_path, "ss4rec", "sas", objective="rating", rating_head=True, rating_input=True,
                  rating_bias_init=True, epochs=1, batch_size=64, **TINY_SS4REC)
    again = evaluate_run(tmp_path / "sas", tmp_path / "sas-again", {}, ["test"])
    assert again["metrics"]["test"]["rmse"] == pytest.approx(info["metrics"]["test"]["rmse"], abs=1e-6)
    with pytest.raises(ConfigError, match="rating run"):
        refit_rating_head(tmp_path / "sas", tmp_path / "refit", ["test"])
