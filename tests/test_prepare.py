"""k-core filtering, id maps, chronological sequences and the evaluation protocols' splits."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from recsys.config import TrainConfig, resolve_config
from recsys.data import IdMap, MovieLensData, load_dataset, prepare
from recsys.data.history import gaps_before
from recsys.data.prepare import kcore_filter
from recsys.evaluation.protocols import (
    RankingProtocol,
    RatingProtocol,
    kfold_split,
    leave_one_out,
    random_split,
    rating_split,
)
from tests.conftest import shared_dir


def frame(rows):
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    return df.astype({"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64})


def data_of(rows, items=None):
    inter = frame(rows)
    ids = sorted(set(inter["item"])) if items is None else items
    items_df = pd.DataFrame({"item": np.array(ids, np.int64), "title": [f"m{i}" for i in ids],
                             "year": pd.array([None] * len(ids), dtype="Int64"), "genres": [""] * len(ids)})
    return MovieLensData("toy", "memory", inter, items_df)


def kcore_reference(df, uk, ik):
    """Plain-Python iterative k-core, the obviously-correct version."""
    rows = list(df.itertuples(index=False))
    while True:
        uc, ic = {}, {}
        for r in rows:
            uc[r.user] = uc.get(r.user, 0) + 1
            ic[r.item] = ic.get(r.item, 0) + 1
        kept = [r for r in rows if uc[r.user] >= uk and ic[r.item] >= ik]
        if len(kept) == len(rows):
            return kept
        rows = kept


def test_kcore_cascades():
    # item 9 has 2 ratings (< 3): dropping it leaves user 3 with 2 ratings (< 3), which drops item 8 below 3.
    rows = [(1, 7, 5, 1), (1, 8, 4, 2), (1, 9, 3, 3), (2, 7, 5, 1), (2, 8, 4, 2), (2, 9, 3, 3),
            (3, 7, 1, 1), (3, 8, 1, 2), (4, 7, 2, 1), (4, 8, 2, 2), (4, 6, 2, 3), (5, 6, 1, 1), (5, 7, 1, 2),
            (5, 8, 1, 3), (6, 6, 4, 1)]
    out = kcore_filter(frame(rows), 3, 3)
    ref = kcore_reference(frame(rows), 3, 3)
    assert len(out) == len(ref)
    uc = out["user"].value_counts()
    ic = out["item"].value_counts()
    assert (uc >= 3).all() and (ic >= 3).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcore_matches_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = 600
    df = frame(np.stack([rng.zipf(1.5, n) % 60, rng.zipf(1.3, n) % 80, rng.integers(1, 6, n),
                         rng.integers(0, 10**6, n)], 1))
    out = kcore_filter(df, 4, 3)
    ref = pd.DataFrame(kcore_reference(df, 4, 3))
    assert out.reset_index(drop=True).astype(np.int64).values.tolist() == ref.astype(np.int64).values.tolist()


def test_idmap_round_trip_and_padding():
    m = IdMap.fit([50, 7, 7, 1000, 3])
    assert m.raw.tolist() == [3, 7, 50, 1000] and m.n_with_padding == 5
    idx = m.to_index([1000, 3, 50])
    assert idx.tolist() == [4, 1, 3]
    assert m.to_raw(idx).tolist() == [1000, 3, 50]
    with pytest.raises(KeyError, match="unknown"):
        m.to_index([8])
    assert m.to_index([8, 7, 99999], unknown="pad").tolist() == [0, 2, 0]
    with pytest.raises(KeyError, match="padding"):
        m.to_raw([0])


def test_sequences_are_chronological_with_file_order_tie_break():
    rows = [(20, 5, 4, 300), (10, 6, 3, 100), (20, 7, 2, 100), (20, 8, 1, 100), (10, 5, 5, 50)]
    p = prepare(data_of(rows), 1, 1)
    s = p.sequences()
    # user 20 (index 2): the two ratings at t=100 keep their file order (7 then 8), then t=300
    assert p.user_map.to_raw(s.users).tolist() == [10, 20]
    assert p.item_map.to_raw(s.row(1)["items"]).tolist() == [7, 8, 5]
    assert s.row(1)["timestamps"].tolist() == [100, 100, 300]
    assert p.item_map.to_raw(s.row(0)["items"]).tolist() == [5, 6]
    assert [gaps_before(s.row(r)["timestamps"]).tolist() for r in range(len(s))] == [[0, 50], [0, 0, 200]]


def test_shuffled_ties_randomise_only_the_order_within_a_second():
    # one user rating 12 movies in one second, in increasing id order (like ml-latest-small's file), then two later
    rows = [(1, i, 3, 100) for i in range(1, 13)] + [(1, 50, 4, 200), (1, 60, 4, 300)]
    file_order = prepare(data_of(rows), 1, 1)
    shuffled = prepare(data_of(rows), 1, 1, shuffle_ties=True)
    a = file_order.item_map.to_raw(file_order.sequences().row(0)["items"]).tolist()
    b = shuffled.item_map.to_raw(shuffled.sequences().row(0)["items"]).tolist()
    assert a == list(range(1, 13)) + [50, 60]
    assert sorted(b[:12]) == a[:12] and b[:12] != a[:12] and b[12:] == [50, 60]  # ties moved, time order kept
    again = prepare(data_of(rows), 1, 1, shuffle_ties=True)
    assert again.item_map.to_raw(again.sequences().row(0)["items"]).tolist() == b  # seeded: the same every time
    assert "tie_order" in shuffled.filters and "tie_order" not in file_order.filters


def test_tie_order_is_a_checked_setting_that_a_re_evaluation_may_change():
    from recsys.config import ConfigError, resolve_config
    from recsys.training.reevaluate import EVAL_ONLY_KEYS

    assert resolve_config("markov", {}, {"tie_order": "shuffled"}).train.tie_order == "shuffled"
    with pytest.raises(ConfigError, match="tie_order"):
        resolve_config("markov", {}, {"tie_order": "random"})
    assert "tie_order" in EVAL_ONLY_KEYS


def seq_rows(n_users=4, length=6):
    rows = []
    for u in range(1, n_users + 1):
        for k in range(length + u):  # users have different lengths
            rows.append((u, (u * 7 + k * 3) % 40 + 1, 1 + (u + k) % 5, 1000 * u + 10 * k))
    return rows


def test_leave_one_out_targets_and_histories():
    p = prepare(data_of(seq_rows()), 1, 1)
    loo = leave_one_out(p)
    s = loo.seqs
    for stage, offset in (("valid", 2), ("test", 1)):
        c = loo.cases(stage, max_len=4)
        for i, r in enumerate(loo.eval_rows):
            full = s.row(r)["items"]
            target_at = len(full) - offset
            assert c.targets[i] == full[target_at]
            hist = full[max(0, target_at - 4):target_at]
            assert c.lengths[i] == len(hist)
            assert c.items[i, :len(hist)].tolist() == hist.tolist()  # left-aligned, last max_len items
            assert (c.items[i, len(hist):] == 0).all()  # right padding
            assert c.target_times[i] == s.row(r)["timestamps"][target_at]
    # the validation target is in the test history, never in the validation history
    v, t = loo.cases("valid", 50), loo.cases("test", 50)
    for i in range(len(v.targets)):
        assert t.items[i, t.lengths[i] - 1] == v.targets[i]
    train, valid, test = loo.train_row_ids(), loo.holdout_row_ids("valid"), loo.holdout_row_ids("test")
    assert len(set(train) | set(valid) | set(test)) == len(p.interactions)
    assert not (set(train) & set(valid)) and not (set(train) & set(test)) and not (set(valid) & set(test))
    ts = loo.train_sequences()
    assert (ts.lengths == s.lengths - 2).all()
    # every training interaction is strictly no later than the user's validation target
    inter = p.interactions
    for r, _u in enumerate(s.users):
        tr = inter.loc[ts.row_ids[ts.indptr[r]:ts.indptr[r + 1]], "timestamp"]
        assert tr.max() <= inter.loc[loo.holdout_row_ids("valid")[r], "timestamp"]


def test_seen_items_csr():
    p = prepare(data_of(seq_rows(2, 4)), 1, 1)
    loo = leave_one_out(p)
    indptr, items = loo.seen_items("test")
    for i, r in enumerate(loo.eval_rows):
        full = loo.seqs.row(r)["items"]
        assert items[indptr[i]:indptr[i + 1]].tolist() == full[:-1].tolist()


def test_short_users_train_only():
    rows = [(1, 1, 5, 1), (1, 2, 5, 2), (2, 1, 4, 1), (2, 2, 4, 2), (2, 3, 4, 3)]
    loo = leave_one_out(prepare(data_of(rows), 1, 1))
    assert len(loo.eval_rows) == 1 and len(loo.train_row_ids()) == 2 + 1


def test_rating_splits_partition_rows():
    p = prepare(data_of(seq_rows(6, 10)), 1, 1)
    n = len(p.interactions)
    for proto in (rating_protocol(split="chronological"), rating_protocol(split="random", seed=3),
                  rating_protocol(split="kfold", fold=2)):
        sp = rating_split(p, proto)
        allrows = np.concatenate([sp.train, sp.valid, sp.test])
        assert len(allrows) == n and len(np.unique(allrows)) == n, proto.split
    tr, te = random_split(1000, 0.1, seed=5)
    assert len(te) == 100 and np.array_equal(te, random_split(1000, 0.1, seed=5)[1])
    assert not np.array_equal(te, random_split(1000, 0.1, seed=6)[1])
    tested = np.concatenate([kfold_split(103, 5, f, 0)[1] for f in range(1, 6)])
    assert np.array_equal(np.sort(tested), np.arange(103))  # every row tested exactly once
    with pytest.raises(ValueError, match="unknown rating split"):
        rating_split(p, dataclasses.replace(rating_protocol(), split="weird"))  # past the config's own check


def rating_protocol(**over) -> RatingProtocol:
    return RatingProtocol.from_config(resolve_config("bias", {}, {"objective": "rating", **over}).train)


def test_ranking_protocol_describes_itself():
    d = RankingProtocol.from_config(resolve_config("sasrec", {}, {"max_len": 200}).train).describe()
    assert d["max_len"] == 200 and d["mask_seen"] is False and "pessimistic" in d["ties"]
    assert d["split"] == "leave_one_out_by_time" and d["user_k"] == 5


def test_protocols_have_no_defaults_of_their_own():
    """The resolved configuration is the one owner of every protocol setting: a protocol field with a default of its
    own could silently disagree with TrainConfig's (max_len once defaulted to 50 in three places)."""
    for cls in (RankingProtocol, RatingProtocol):
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls, f.name)
    t = TrainConfig(max_len=123, user_k=3, item_k=5, mask_seen=True, ks=[10, 50])
    d = RankingProtocol.from_config(t).describe()
    assert (d["max_len"], d["user_k"], d["mask_seen"], d["ks"]) == (123, 3, True, [10, 50])


def test_embedded_ml100k_five_core():
    p = prepare(load_dataset(), 5, 5)
    # RecBole's 5-core ML-100K: 943 users, 1,349 items
    assert (p.n_users, p.n_items, len(p.interactions)) == (943, 1349, 99_287)
    loo = leave_one_out(p)
    assert len(loo.eval_rows) == 943


def test_official_ml100k_folds():
    path = shared_dir("ml-100k")
    p = prepare(load_dataset("ml-100k", path), 1, 1)
    for fold in (1, 5):
        sp = rating_split(p, rating_protocol(split="ml100k-folds", fold=fold), path)
        assert len(sp.test) == 20_000 and len(sp.train) + len(sp.valid) == 80_000
    with pytest.raises(Exception, match="original GroupLens files"):
        rating_split(prepare(load_dataset(), 1, 1), rating_protocol(split="ml100k-folds"), "/nonexistent")


def test_sequences_match_python_sort_on_random_ties():
    rng = np.random.default_rng(4)
    n = 3000
    rows = np.stack([rng.integers(1, 40, n), rng.permutation(n) + 1, rng.integers(1, 6, n),
                     rng.integers(0, 20, n) * 10**8], 1)  # many equal timestamps, wide span
    p = prepare(data_of(rows.tolist()), 1, 1)
    s = p.sequences()
    inter = p.interactions
    expected = sorted(range(n), key=lambda i: (inter.user_idx[i], inter.timestamp[i], i))
    assert s.row_ids.tolist() == expected


def test_the_one_gap_definition_hand_computed():
    """gaps_after (fed to SS4Rec), gaps_before (shown on the pages) and gap_to_target agree on one history."""
    import torch

    from recsys.data.history import gap_to_target, gaps_after

    ts = np.array([[10, 20, 50, 0], [5, 0, 0, 0]])
    lengths, target = np.array([3, 1]), np.array([80, 9])
    assert gaps_after(ts, lengths, target).tolist() == [[10, 30, 30, 0], [4, 0, 0, 0]]
    assert gaps_after(ts, lengths).tolist() == [[10, 30, 0, 0], [0, 0, 0, 0]]
    assert torch.equal(gaps_after(torch.from_numpy(ts), torch.from_numpy(lengths), torch.from_numpy(target)),
                       torch.from_numpy(gaps_after(ts, lengths, target)))
    assert gaps_before([10, 20, 50]).tolist() == [0, 10, 30]
    assert gaps_before([10, 20, 5, 9], users=[1, 1, 2, 2]).tolist() == [0, 10, 0, 4]  # each user starts at 0
    assert gap_to_target(ts, lengths, target).tolist() == [30, 4]
    assert gap_to_target(np.zeros((1, 2), np.int64), np.array([0]), np.array([7])).tolist() == [0]


def test_the_one_history_cutter():
    from recsys.data.history import cut_history, history_positions

    h = cut_history([4, 5, 6, 7], [40, 10, 10, 30], max_len=3, ratings=[1, 2, 3, 4])
    assert h.items.tolist() == [6, 7, 4] and h.times.tolist() == [10, 30, 40] and h.cut == 1  # stable by time
    assert h.ratings.tolist() == [3, 4, 1]
    pos, lengths = history_positions([0, 5], [4, 6], 3)
    assert pos.tolist() == [[1, 2, 3], [5, 0, 0]] and lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="empty"):
        cut_history([], [], 3)
    with pytest.raises(ValueError, match="before the last movie"):
        cut_history([1], [100], 3, now=99)
