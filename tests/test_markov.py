"""The first-order Markov floor: hand-computed counts and scores, training items only, sparse storage that saves and
restores, and a complete run on the embedded ML-100K."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import resolve_config
from recsys.data import MovieLensData, prepare
from recsys.data.batch import SequenceBatch
from recsys.evaluation.protocols import leave_one_out
from recsys.models import build_model, restore_model
from recsys.runs import RunDirectory, check_metrics, load_weights, save_weights
from recsys.training.runner import build_task, load_prepared, run_training
from recsys.training.tasks import SequenceTask

# Items 1..5 (raw id = index). Leave-one-out by time holds out each user's last two items:
#   user 1: 1 2 3 | 4 5     train transitions 1->2, 2->3
#   user 2: 1 2 4 | 3 5     train transitions 1->2, 2->4
#   user 3: 2 3   | 1 4     train transition  2->3
# counts: 1->2 x2, 2->3 x2, 2->4 x1; training popularity: item 1: 2, item 2: 3, item 3: 2, item 4: 1, item 5: 0.
# The transitions into and between held-out items (3->4, 4->5, 4->3, 3->5, 3->1, 1->4) must not be counted.
SEQS = {1: [1, 2, 3, 4, 5], 2: [1, 2, 4, 3, 5], 3: [2, 3, 1, 4]}
COUNTS = {(1, 2): 2.0, (2, 3): 2.0, (2, 4): 1.0}
POPULARITY = [0.0, 2.0, 3.0, 2.0, 1.0, 0.0]


def toy_prepared():
    rows = [(u, i, 4.0, 100 * u + t) for u, seq in SEQS.items() for t, i in enumerate(seq)]
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).astype(
        {"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64})
    ids = np.arange(1, 6, dtype=np.int64)
    items = pd.DataFrame({"item": ids, "title": [f"m{i}" for i in ids], "year": pd.array([None] * 5, dtype="Int64"),
                          "genres": [""] * 5})
    return prepare(MovieLensData("toy", "memory", inter, items), user_k=1, item_k=1)


@pytest.fixture
def toy():
    prepared = toy_prepared()
    assert prepared.item_map.to_list() == [1, 2, 3, 4, 5]  # raw id == index
    cfg = resolve_config("markov", {}, {"max_len": 5})
    task = SequenceTask(prepared, leave_one_out(prepared), max_len=5)
    model = build_model(cfg, prepared)
    fitted = model.fit(task, "cpu")
    return cfg, prepared, task, model, fitted


def history(*rows) -> SequenceBatch:
    width = max(max((len(r) for r in rows), default=1), 1)
    items = torch.tensor([list(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    return SequenceBatch(users=torch.arange(len(rows)), items=items, lengths=torch.tensor([len(r) for r in rows]))


def expected_row(last: int, backoff: float) -> torch.Tensor:
    pop = torch.tensor(POPULARITY)
    row = backoff * pop / pop.max()
    for (a, b), c in COUNTS.items():
        if a == last:
            row[b] += c
    row[0] = -1.0
    return row


def test_counts_are_the_training_transitions_only(toy):
    _, _, _, model, fitted = toy
    indptr, nxt, cnt = model.indptr.tolist(), model.next_items.tolist(), model.counts.tolist()
    got = {(a, nxt[k]): cnt[k] for a in range(6) for k in range(indptr[a], indptr[a + 1])}
    assert got == COUNTS
    assert model.popularity.tolist() == POPULARITY  # item 5 is only ever held out
    assert fitted == {"n_transitions": 5, "n_distinct_transitions": 3, "share_items_with_successor": 0.4,
                      "mean_successors": 1.5, "n_training_items": 8}


def test_scores_by_hand_with_popularity_breaking_ties(toy):
    model = toy[3]
    b = model.backoff
    assert b == 0.5  # the default: counts first, popularity among equal counts
    scores = model.score(history([3, 1], [1, 2], [2, 3], [5, 4, 3]))
    torch.testing.assert_close(scores, torch.stack([expected_row(1, b), expected_row(2, b), expected_row(3, b),
                                                    expected_row(3, b)]), rtol=0, atol=0)
    order = torch.argsort(scores, dim=1, descending=True, stable=True).tolist()
    assert order[0] == [2, 1, 3, 4, 5, 0]  # 1 -> 2 twice; then popularity 2 (items 1, 3: stable) > 1 > 0
    assert order[1] == [3, 4, 2, 1, 5, 0]  # 2 -> 3 (x2) > 2 -> 4 (x1) > popularity 3 > 2 > 0
    assert order[2] == [2, 1, 3, 4, 5, 0]  # item 3 is never followed in training: popularity alone


def test_empty_history_gets_popularity_and_padding_is_never_first(toy):
    model = toy[3]
    scores = model.score(history([], [2]))
    torch.testing.assert_close(scores[0], expected_row(0, model.backoff), rtol=0, atol=0)
    assert (scores[:, 0] < scores[:, 1:].min(dim=1).values).all()
    assert model.score(history([], [])).shape == (2, 6)  # a batch of empty histories of width 0..1


def test_backoff_below_one_only_breaks_ties_and_zero_leaves_them(toy):
    _, prepared, task, model, _ = toy
    batch = history([1], [2], [3], [])
    ranks = {}
    for backoff in (1e-3, 0.5, 0.999):
        m = build_model(resolve_config("markov", {}, {"backoff": backoff}), prepared)
        m.fit(task, "cpu")
        ranks[backoff] = torch.argsort(m.score(batch), dim=1, descending=True, stable=True)
    assert torch.equal(ranks[1e-3], ranks[0.5]) and torch.equal(ranks[0.5], ranks[0.999])
    m = build_model(resolve_config("markov", {}, {"backoff": 0.0}), prepared)
    m.fit(task, "cpu")
    assert m.score(history([3]))[0, 1:].eq(0).all()
    with pytest.raises(ValueError, match="backoff must be a number >= 0"):
        resolve_config("markov", {}, {"backoff": -1})


def test_vectorised_scores_match_a_dense_reference():
    rng = np.random.default_rng(0)
    n_items, n_users = 40, 30
    rows = [(u, int(i), 3.0, t) for u in range(1, n_users + 1)
            for t, i in enumerate(rng.choice(np.arange(1, n_items + 1), size=rng.integers(3, 15), replace=False))]
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).astype(
        {"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64})
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    items = pd.DataFrame({"item": ids, "title": [""] * n_items, "year": pd.array([None] * n_items, dtype="Int64"),
                          "genres": [""] * n_items})
    prepared = prepare(MovieLensData("rand", "memory", inter, items), user_k=1, item_k=1)
    loo = leave_one_out(prepared)
    task = SequenceTask(prepared, loo, max_len=4)
    model = build_model(resolve_config("markov", {}, {"max_len": 4}), prepared)
    model.fit(task, "cpu")
    n = prepared.n_items + 1
    dense = np.zeros((n, n))
    train = loo.train_sequences()
    for r in range(len(train)):
        seq = train.row(r)["items"]
        for a, b in zip(seq[:-1], seq[1:]):
            dense[a, b] += 1
    pop = np.bincount(train.items, minlength=n).astype(float)
    for stage in ("valid", "test"):
        c = task.cases(stage)
        last = c.items.numpy()[np.arange(len(c)), c.lengths.numpy() - 1]
        want = dense[last] + model.backoff * pop / pop.max()
        want[:, 0] = -1.0
        np.testing.assert_allclose(model.score(c).numpy(), want, rtol=1e-6)


def test_save_restore_round_trip_and_strict_loading(toy, tmp_path):
    cfg, prepared, task, model, _ = toy
    save_weights(tmp_path / "m.safetensors", model.state_dict(), {"model": "markov"})
    state, meta = load_weights(tmp_path / "m.safetensors")
    assert meta["model"] == "markov" and set(state) == {"indptr", "next_items", "counts", "popularity"}
    fresh = build_model(cfg, prepared)
    assert len(fresh.next_items) == 0  # sizes known only after fit: loading must resize
    restored = restore_model(cfg, prepared, state)
    for stage in ("valid", "test"):
        torch.testing.assert_close(restored.score(task.cases(stage)), model.score(task.cases(stage)), rtol=0, atol=0)
    for key in ("popularity", "indptr"):  # one entry per item (with padding) / one more: fixed by the catalogue
        value = torch.cat([state[key], state[key][-1:]])
        with pytest.raises(RuntimeError, match=f"size mismatch for {key}"):
            restore_model(cfg, prepared, {**state, key: value})
    with pytest.raises(RuntimeError, match="Missing key"):
        restore_model(cfg, prepared, {k: v for k, v in state.items() if k != "counts"})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        restore_model(cfg, prepared, {**state, "extra": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="inconsistent transitions"):
        restore_model(cfg, prepared, {**state, "counts": state["counts"][:-1]})
    with pytest.raises(RuntimeError, match="inconsistent transitions"):
        restore_model(cfg, prepared, {**state, "next_items": torch.full_like(state["next_items"], 99)})


def test_run_on_ml100k_is_complete_recomputable_and_beats_popularity(tmp_path):
    runs = {}
    for name in ("markov", "popular"):
        cfg = resolve_config(name, {}, {})
        runs[name] = run_training(cfg, tmp_path / name, ["python", "scripts/train.py", "--model", name],
                                  progress=False)
    info = runs["markov"]
    run = RunDirectory(tmp_path / "markov")
    on_disk = run.verify()
    assert on_disk["status"] == "complete" and on_disk["model"] == "markov"
    assert on_disk["fitted"]["n_distinct_transitions"] > 0
    check_metrics(on_disk, run.test_results())  # run.json's test metrics are what its per-user results give
    res = run.test_results()
    assert len(res) == 943 and np.isclose(res["ndcg@10"].mean(), on_disk["metrics"]["test"]["ndcg@10"])
    # the chain reads order: it must clearly beat the popularity floor on the same cases
    assert info["metrics"]["test"]["ndcg@10"] > 1.5 * runs["popular"]["metrics"]["test"]["ndcg@10"]
    # the saved weights, restored the way every other tool does, give the recorded test metrics again
    state, _ = run.load_weights("markov")
    cfg = resolve_config("markov", {}, {})
    _, prepared = load_prepared(cfg.train, download=False)
    model = restore_model(cfg, prepared, state)
    task, _ = build_task(cfg, prepared, model)
    again, _ = task.evaluate(model, "test", "cpu")
    assert again == pytest.approx(on_disk["metrics"]["test"])
