"""Tests for recsys.evaluation.metrics: hand-computed values, independent implementations, and edge cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import ndcg_score

from recsys.evaluation import metrics as M
from recsys.evaluation.metrics import (
    bootstrap_ci,
    csr_from_lists,
    mae,
    paired_bootstrap,
    per_user_ranking,
    rank_all,
    ranking_metrics_from_ranks,
    rating_errors,
    rmse,
    target_ranks,
)

# One user, padding column 0 then 5 real items. Sorted real scores: item3 .9 > item5 .7 > item2 .5 > item4 .3 > item1 .1
ONE_ROW = torch.tensor([[0.0, 0.1, 0.5, 0.9, 0.3, 0.7]])


# ------------------------------------------------------------------------------------------------ rating errors


def test_rmse_mae_hand_values() -> None:
    pred = np.array([1.0, 2.0, 3.0])
    target = np.array([1.0, 4.0, 0.0])  # errors 0, -2, 3
    assert rmse(pred, target) == pytest.approx(math.sqrt(13.0 / 3.0), abs=1e-12)
    assert mae(pred, target) == pytest.approx(5.0 / 3.0, abs=1e-12)
    assert rmse(target, target) == 0.0


def test_rmse_accumulates_in_float64() -> None:
    rng = np.random.default_rng(0)
    pred = (rng.random(100_000) * 5).astype(np.float32)
    target = (rng.random(100_000) * 5).astype(np.float32)
    exact = math.sqrt(float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2)))
    assert rmse(pred, target) == pytest.approx(exact, rel=1e-12)
    assert mae(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(
        float(np.mean(np.abs(pred.astype(np.float64) - target))), rel=1e-12
    )


def test_rating_errors_frame() -> None:
    df = rating_errors(np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 0.0]), users=np.array([7, 8, 9]))
    assert list(df.columns) == ["user", "pred", "target", "sq_error", "abs_error"]
    assert df["user"].tolist() == [7, 8, 9]
    assert df["sq_error"].tolist() == [0.0, 4.0, 9.0]
    assert df["abs_error"].tolist() == [0.0, 2.0, 3.0]
    assert math.sqrt(df["sq_error"].mean()) == pytest.approx(rmse(df["pred"], df["target"]))
    no_user = rating_errors(np.array([1.0]), np.array([2.0]))
    assert list(no_user.columns) == ["pred", "target", "sq_error", "abs_error"]


@pytest.mark.parametrize("fn", [rmse, mae])
def test_rating_error_validation(fn) -> None:
    with pytest.raises(ValueError, match="same length"):
        fn(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="empty"):
        fn(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


# ------------------------------------------------------------------------------------------------ target_ranks


def test_rank_hand_computed_and_metrics() -> None:
    assert target_ranks(ONE_ROW, torch.tensor([2])).tolist() == [3]
    assert target_ranks(ONE_ROW, torch.tensor([3])).tolist() == [1]
    assert target_ranks(ONE_ROW, torch.tensor([1])).tolist() == [5]
    m = ranking_metrics_from_ranks(np.array([3]), ks=(1, 2, 3, 5))
    assert m["hr@1"] == 0.0 and m["hr@2"] == 0.0 and m["hr@3"] == 1.0 and m["hr@5"] == 1.0
    assert m["ndcg@5"] == pytest.approx(1.0 / math.log2(4.0)) and m["ndcg@5"] == pytest.approx(0.5)
    assert m["mrr@5"] == pytest.approx(1.0 / 3.0)
    assert m["ndcg@2"] == 0.0 and m["mrr@2"] == 0.0


def test_ranking_metrics_several_users_hand_values() -> None:
    m = ranking_metrics_from_ranks(np.array([1, 3, 10, 11]), ks=(10,))
    assert set(m) == {"hr@10", "ndcg@10", "mrr@10"}
    assert m["hr@10"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((1.0 + 0.5 + 1.0 / math.log2(11.0)) / 4)
    assert m["mrr@10"] == pytest.approx((1.0 + 1.0 / 3.0 + 1.0 / 10.0) / 4)
    assert set(ranking_metrics_from_ranks(np.array([1]))) == {
        f"{name}@{k}" for k in (5, 10, 20) for name in ("hr", "ndcg", "mrr")
    }


def test_all_equal_scores_rank_last() -> None:
    scores = torch.full((3, 6), 0.25)
    ranks = target_ranks(scores, torch.tensor([1, 3, 5]))
    assert ranks.tolist() == [5, 5, 5]  # 5 real items: pessimistic ties put the target last, never first
    m = ranking_metrics_from_ranks(ranks.numpy(), ks=(1, 4))
    assert m["hr@1"] == 0.0 and m["hr@4"] == 0.0


def test_partial_tie_counts_against_target() -> None:
    scores = torch.tensor([[0.0, 0.5, 0.5, 0.9, 0.1, 0.5]])
    # Target item 2 ties with items 1 and 5 and is beaten by item 3 -> 1 + 3.
    assert target_ranks(scores, torch.tensor([2])).tolist() == [4]


def test_padding_column_ignored() -> None:
    huge = ONE_ROW.clone()
    huge[0, 0] = 1e30
    assert target_ranks(huge, torch.tensor([3])).tolist() == [1]
    assert target_ranks(huge, torch.tensor([2])).tolist() == [3]
    inf_pad = ONE_ROW.clone()
    inf_pad[0, 0] = float("inf")
    assert target_ranks(inf_pad, torch.tensor([3])).tolist() == [1]
    # Column 0 is never ranked, so a NaN there is not an error.
    nan_pad = ONE_ROW.clone()
    nan_pad[0, 0] = float("nan")
    assert target_ranks(nan_pad, torch.tensor([3])).tolist() == [1]


def test_masking_seen_items() -> None:
    targets = torch.tensor([2])  # rank 3: beaten by items 3 and 5
    # Mask item 3 (above) and item 1 (below): rank drops by exactly the 1 masked item scoring above the target.
    assert target_ranks(ONE_ROW, targets, exclude=[[3, 1]]).tolist() == [2]
    assert target_ranks(ONE_ROW, targets, exclude=[[3, 5]]).tolist() == [1]
    assert target_ranks(ONE_ROW, targets, exclude=[[1, 4]]).tolist() == [3]
    # The target is never masked, even when listed as seen.
    assert target_ranks(ONE_ROW, targets, exclude=[[2]]).tolist() == [3]
    assert target_ranks(ONE_ROW, targets, exclude=[[2, 3]]).tolist() == [2]
    # Same answers through the CSR and bool-mask formats; duplicates and padding in the list are harmless.
    offsets, items = csr_from_lists([[3, 3, 0, 2]])
    assert target_ranks(ONE_ROW, targets, exclude=(offsets, items)).tolist() == [2]
    mask = torch.zeros_like(ONE_ROW, dtype=torch.bool)
    mask[0, [2, 3]] = True
    assert target_ranks(ONE_ROW, targets, exclude=mask).tolist() == [2]
    # All-equal scores with 2 seen items: last among the 3 remaining candidates.
    assert target_ranks(torch.ones(1, 6), torch.tensor([4]), exclude=[[1, 2]]).tolist() == [3]


def test_masking_does_not_mutate_scores_and_handles_neg_inf_target() -> None:
    scores = ONE_ROW.clone()
    target_ranks(scores, torch.tensor([2]), exclude=[[3, 5]])
    assert torch.equal(scores, ONE_ROW)
    # A target scored -inf ties with every other candidate, but masked items are gone, not tied.
    s = torch.tensor([[0.0, 1.0, -math.inf, 2.0, 3.0, 4.0]])
    assert target_ranks(s, torch.tensor([2]), exclude=[[1, 3]]).tolist() == [3]


def test_csr_offsets_not_starting_at_zero() -> None:
    offsets, items = csr_from_lists([[9], [3], [5, 3]])
    # Rows 1..2 of a larger CSR, passed as a slice without rebasing.
    scores = ONE_ROW.repeat(2, 1)
    ranks = target_ranks(scores, torch.tensor([2, 2]), exclude=(offsets[1:], items))
    assert ranks.tolist() == [2, 1]


def test_rank_validation_errors() -> None:
    nan_scores = ONE_ROW.clone()
    nan_scores[0, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(nan_scores, torch.tensor([2]))
    with pytest.raises(ValueError, match="padding"):
        target_ranks(ONE_ROW, torch.tensor([0]))
    with pytest.raises(ValueError, match="padding"):
        target_ranks(ONE_ROW, torch.tensor([6]))
    with pytest.raises(ValueError, match="rows"):
        target_ranks(ONE_ROW, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="exclude items"):
        target_ranks(ONE_ROW, torch.tensor([1]), exclude=[[6]])
    with pytest.raises(ValueError, match="shape"):
        target_ranks(ONE_ROW, torch.tensor([1]), exclude=torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="1-based"):
        ranking_metrics_from_ranks(np.array([0, 1]))
    with pytest.raises(ValueError, match="empty"):
        ranking_metrics_from_ranks(np.array([], dtype=np.int64))


def _brute_force_ranks(scores: np.ndarray, targets: np.ndarray, seen: list[list[int]] | None) -> np.ndarray:
    """Reference: loop over every real item and count the pessimistic competitors."""
    out = []
    for row in range(scores.shape[0]):
        t = int(targets[row])
        blocked = set(seen[row]) if seen is not None else set()
        rank = 1
        for item in range(1, scores.shape[1]):
            if item == t or item in blocked:
                continue
            if scores[row, item] >= scores[row, t]:
                rank += 1
        out.append(rank)
    return np.array(out, dtype=np.int64)


def _random_case(seed: int, n_rows: int, n_items: int, discrete: bool):
    rng = np.random.default_rng(seed)
    if discrete:  # heavy ties, to exercise the tie rule
        scores = rng.integers(0, 4, size=(n_rows, n_items)).astype(np.float32)
    else:
        scores = rng.standard_normal((n_rows, n_items)).astype(np.float32)
    targets = rng.integers(1, n_items, size=n_rows)
    seen = [sorted(rng.choice(np.arange(0, n_items), size=rng.integers(0, 8), replace=False).tolist())
            for _ in range(n_rows)]
    return scores, targets, seen


@pytest.mark.parametrize("discrete", [False, True])
def test_ranks_match_brute_force(discrete: bool) -> None:
    scores, targets, seen = _random_case(1, 40, 30, discrete)
    got = target_ranks(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    np.testing.assert_array_equal(got, _brute_force_ranks(scores, targets, None))
    got_ex = target_ranks(torch.from_numpy(scores), torch.from_numpy(targets), exclude=csr_from_lists(seen))
    np.testing.assert_array_equal(got_ex.numpy(), _brute_force_ranks(scores, targets, seen))


@pytest.mark.parametrize("k", [1, 5, 10, 25])
def test_ndcg_matches_sklearn(k: int) -> None:
    rng = np.random.default_rng(k)
    n_rows, n_items = 200, 50
    scores = rng.standard_normal((n_rows, n_items))  # continuous: no ties, where sklearn's tie-averaging is moot
    scores[:, 0] = 1e9  # padding must not matter
    targets = rng.integers(1, n_items, size=n_rows)
    ranks = target_ranks(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    relevance = np.zeros((n_rows, n_items - 1))
    relevance[np.arange(n_rows), targets - 1] = 1.0
    expected = ndcg_score(relevance, scores[:, 1:], k=k)
    assert ranking_metrics_from_ranks(ranks, ks=(k,))[f"ndcg@{k}"] == pytest.approx(expected, abs=1e-12)


def test_per_user_ranking_consistent_with_means() -> None:
    ranks = np.array([1, 2, 7, 30, 4])
    users = np.array([10, 11, 12, 13, 14])
    df = per_user_ranking(ranks, users, ks=(5, 10))
    assert list(df.columns) == ["user", "rank", "hr@5", "ndcg@5", "mrr@5", "hr@10", "ndcg@10", "mrr@10"]
    assert df["user"].tolist() == users.tolist() and df["rank"].tolist() == ranks.tolist()
    assert df.loc[1, "ndcg@5"] == pytest.approx(1.0 / math.log2(3.0))
    assert df.loc[2, "mrr@5"] == 0.0 and df.loc[2, "mrr@10"] == pytest.approx(1.0 / 7.0)
    means = ranking_metrics_from_ranks(ranks, ks=(5, 10))
    for key, value in means.items():
        assert df[key].mean() == pytest.approx(value)
    with pytest.raises(ValueError):
        per_user_ranking(ranks, users[:3])


# ------------------------------------------------------------------------------------------------ rank_all


def _table_case(seed: int = 3, n_users: int = 53, n_items: int = 41):
    scores, targets, seen = _random_case(seed, n_users, n_items, discrete=True)
    table = torch.from_numpy(scores)
    return table, targets, seen


@pytest.mark.parametrize("batch_size", [1, 7, 16, 53, 1000])
def test_rank_all_batched_equals_unbatched(batch_size: int) -> None:
    table, targets, seen = _table_case()
    users = np.arange(table.shape[0])
    seen_batches: list[int] = []

    def score_fn(batch_users: torch.Tensor) -> torch.Tensor:
        seen_batches.append(int(batch_users.shape[0]))
        return table[batch_users]

    full = target_ranks(table, torch.from_numpy(targets), exclude=csr_from_lists(seen)).numpy()
    got = rank_all(score_fn, users, targets, batch_size=batch_size, exclude=csr_from_lists(seen))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, full)
    assert max(seen_batches) <= batch_size  # only one bounded block scored at a time
    assert sum(seen_batches) == table.shape[0]
    # The other exclude formats and no exclude agree too.
    np.testing.assert_array_equal(rank_all(score_fn, users, targets, batch_size=batch_size, exclude=seen), full)
    mask = torch.zeros(table.shape, dtype=torch.bool)
    for row, items in enumerate(seen):
        mask[row, items] = True
    np.testing.assert_array_equal(rank_all(score_fn, users, targets, batch_size=batch_size, exclude=mask), full)
    np.testing.assert_array_equal(
        rank_all(score_fn, users, targets, batch_size=batch_size),
        target_ranks(table, torch.from_numpy(targets)).numpy(),
    )


def test_rank_all_subset_rows_tensor_inputs_and_progress() -> None:
    table, targets, seen = _table_case()
    # Rows can be any ids (here a shuffled subset) or multi-column inputs such as padded sequences.
    rows = np.array([5, 0, 52, 17, 17, 3])
    sub_targets = targets[rows]
    sub_seen = [seen[r] for r in rows]
    expected = _brute_force_ranks(table.numpy()[rows], sub_targets, sub_seen)
    got = rank_all(lambda u: table[u], torch.from_numpy(rows), torch.from_numpy(sub_targets), batch_size=4,
                   exclude=csr_from_lists(sub_seen), progress=True)
    np.testing.assert_array_equal(got, expected)
    seq_rows = torch.stack([torch.from_numpy(rows), torch.zeros(len(rows), dtype=torch.long)], dim=1)  # [n, 2]
    got_seq = rank_all(lambda s: table[s[:, 0]], seq_rows, sub_targets, batch_size=5, exclude=sub_seen)
    np.testing.assert_array_equal(got_seq, expected)


def test_rank_all_errors() -> None:
    table, targets, _ = _table_case()
    users = np.arange(table.shape[0])
    bad = table.clone()
    bad[9, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rank_all(lambda u: bad[u], users, targets, batch_size=8)
    with pytest.raises(ValueError, match="shape"):
        rank_all(lambda u: table[u][:1], users, targets, batch_size=8)
    with pytest.raises(ValueError, match="rows"):
        rank_all(lambda u: table[u], users, targets[:-1], batch_size=8)
    with pytest.raises(ValueError, match="exclude"):
        rank_all(lambda u: table[u], users, targets, batch_size=8, exclude=[[1]])
    with pytest.raises(ValueError, match="batch_size"):
        rank_all(lambda u: table[u], users, targets, batch_size=0)


# ------------------------------------------------------------------------------------------------ bootstrap


def _paired_case(n: int = 3000, true_diff: float = 0.05, seed: int = 7):
    rng = np.random.default_rng(seed)
    b = rng.random(n)
    noise = rng.normal(0.0, 0.2, n)
    noise -= noise.mean()  # the sample difference is then exactly true_diff
    return b + true_diff + noise, b


def test_paired_bootstrap_contains_true_diff_and_reasonable_width() -> None:
    a, b = _paired_case()
    res = paired_bootstrap(a, b, n_boot=2000, seed=0)
    assert res["diff"] == pytest.approx(0.05, abs=1e-12)
    assert res["diff"] == pytest.approx(res["mean_a"] - res["mean_b"])
    assert res["mean_a"] == pytest.approx(a.mean()) and res["mean_b"] == pytest.approx(b.mean())
    assert res["ci_low"] < 0.05 < res["ci_high"]
    # Percentile CI width ~ 2 * z * sd(d) / sqrt(n) for the mean difference.
    d = a - b
    normal_width = 2 * 1.959964 * d.std() / math.sqrt(len(d))
    assert (res["ci_high"] - res["ci_low"]) == pytest.approx(normal_width, rel=0.1)
    assert res["p_value"] < 0.01  # 0.05 is ~12 standard errors away from 0
    assert res["n_users"] == 3000 and res["n_boot"] == 2000 and res["alpha"] == 0.05


def test_paired_bootstrap_null_case_has_large_p() -> None:
    a, b = _paired_case(true_diff=0.0)
    res = paired_bootstrap(a, b, n_boot=1000, seed=1)
    assert res["ci_low"] < 0.0 < res["ci_high"]
    assert res["p_value"] > 0.5


def test_paired_bootstrap_identical_inputs() -> None:
    a = np.random.default_rng(0).random(500)
    res = paired_bootstrap(a, a.copy(), n_boot=300)
    assert res["diff"] == 0.0 and res["ci_low"] == 0.0 and res["ci_high"] == 0.0
    assert res["p_value"] == 1.0


def test_paired_bootstrap_deterministic_and_chunk_invariant() -> None:
    a, b = _paired_case(n=401)  # odd n on purpose
    first = paired_bootstrap(a, b, n_boot=500, seed=3)
    assert paired_bootstrap(a, b, n_boot=500, seed=3) == first
    for chunk in (1, 7, 499, 500, 10_000):
        assert paired_bootstrap(a, b, n_boot=500, seed=3, chunk_size=chunk) == first
    other = paired_bootstrap(a, b, n_boot=500, seed=4)
    assert (other["ci_low"], other["ci_high"]) != (first["ci_low"], first["ci_high"])
    assert other["diff"] == first["diff"]


def test_bootstrap_memory_budget() -> None:
    # 162k users: a chunk of indices stays within the element budget instead of 162k x 2000.
    per_chunk = M._boot_chunk_rows(162_000, None)
    assert per_chunk >= 1 and per_chunk * 162_000 <= M._BOOT_CHUNK_ELEMS
    assert M._boot_chunk_rows(10 * M._BOOT_CHUNK_ELEMS, None) == 1
    a, b = _paired_case(n=162_000)
    res = paired_bootstrap(a, b, n_boot=40, seed=0)
    assert res["ci_low"] < res["diff"] < res["ci_high"]


def test_paired_bootstrap_validation() -> None:
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap(np.ones(5), np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap(np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(ValueError, match="statistic"):
        paired_bootstrap(np.ones(3), np.ones(3), statistic="max")
    with pytest.raises(ValueError, match="alpha"):
        paired_bootstrap(np.ones(3), np.ones(3), alpha=1.5)


def test_paired_bootstrap_median() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    b = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    res = paired_bootstrap(a, b, n_boot=200, statistic="median")
    assert res["mean_a"] == 3.0 and res["mean_b"] == 0.0 and res["diff"] == 3.0
    assert res["ci_low"] <= 3.0 <= res["ci_high"]


def test_paired_bootstrap_rmse_statistic_hand_computed() -> None:
    # squared errors a = [4, 0], b = [1, 1]: RMSE(a) = sqrt(mean) = sqrt(2) (not mean(sqrt) = 1), RMSE(b) = 1. A
    # resample of two rows gives sqrt(mean(a*)) - 1 = 1 (row 0 twice, p = 1/4), sqrt(2) - 1 (one of each, p = 1/2)
    # or -1 (row 1 twice, p = 1/4).
    res = paired_bootstrap([4.0, 0.0], [1.0, 1.0], n_boot=20000, seed=0, statistic="rmse")
    assert res["mean_a"] == pytest.approx(math.sqrt(2)) and res["mean_b"] == 1.0
    assert res["diff"] == pytest.approx(math.sqrt(2) - 1) and res["statistic"] == "rmse"
    assert res["ci_low"] == -1.0 and res["ci_high"] == 1.0
    assert res["p_value"] == pytest.approx(2 * 0.25, abs=0.03)  # P(diff* <= 0) = P(row 1 twice) = 1/4
    assert paired_bootstrap([4.0, 0.0], [1.0, 1.0], n_boot=20000, seed=0, statistic="rmse", chunk_size=7) == res

    # the same replicates as a plain loop over the documented index stream (an independent implementation)
    sq_a, sq_b = np.array([0.25, 4.0, 1.0, 0.0, 2.25]), np.array([1.0, 0.0, 0.25, 1.0, 4.0])
    rng = np.random.default_rng(3)
    loop = []
    for _ in range(50):
        idx = np.minimum((rng.random(5) * 5).astype(np.intp), 4)
        loop.append(math.sqrt(sq_a[idx].mean()) - math.sqrt(sq_b[idx].mean()))
    res = paired_bootstrap(sq_a, sq_b, n_boot=50, seed=3, statistic="rmse", chunk_size=1)
    assert (res["ci_low"], res["ci_high"]) == tuple(np.quantile(loop, [0.025, 0.975]))
    assert bootstrap_ci(sq_a, n_boot=50, statistic="rmse")["mean"] == pytest.approx(math.sqrt(sq_a.mean()))
    with pytest.raises(ValueError, match="negative"):
        paired_bootstrap([-1.0, 1.0], [1.0, 1.0], statistic="rmse")


def test_bootstrap_ci_single_run() -> None:
    v = np.random.default_rng(5).random(4000)
    res = bootstrap_ci(v, n_boot=1000, seed=0)
    assert res["mean"] == pytest.approx(v.mean())
    assert res["ci_low"] < v.mean() < res["ci_high"]
    assert (res["ci_high"] - res["ci_low"]) == pytest.approx(2 * 1.959964 * v.std() / math.sqrt(v.size), rel=0.1)
    assert bootstrap_ci(v, n_boot=1000, seed=0, chunk_size=3) == res
    const = bootstrap_ci(np.full(10, 0.3), n_boot=50)
    assert const["ci_low"] == pytest.approx(0.3) and const["ci_high"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(np.array([]))


def test_bootstrap_on_per_user_ranking_columns() -> None:
    # The intended pipeline: per-user metrics of two runs on the same users feed the paired bootstrap.
    users = np.arange(6)
    run_a = per_user_ranking(np.array([1, 2, 3, 1, 8, 2]), users, ks=(5,))
    run_b = per_user_ranking(np.array([4, 9, 3, 2, 12, 6]), users, ks=(5,))
    res = paired_bootstrap(run_a["ndcg@5"].to_numpy(), run_b["ndcg@5"].to_numpy(), n_boot=200)
    assert res["diff"] == pytest.approx(run_a["ndcg@5"].mean() - run_b["ndcg@5"].mean())
    assert isinstance(run_a, pd.DataFrame)


# ---------------------------------------------------------------------------------------------- two-level bootstrap


def test_two_level_bootstrap_sees_seed_spread_that_users_only_hides() -> None:
    """A's two seeds score every user 1 and 0 (mean 0.5), B's one seed 0: per user the seed-averaged difference is
    0.5 for everyone, so the users-only interval is the point 0.5. Resampling A's two seeds gives 0, 0.5 or 1 with
    probabilities 1/4, 1/2, 1/4: the 95% interval is [0, 1] and P(diff <= 0) = 1/4, so p = 0.5."""
    u = 50
    A = np.vstack([np.ones(u), np.zeros(u)])
    B = np.zeros((1, u))
    users_only = M.paired_bootstrap(A.mean(0), B.mean(0), n_boot=4000)
    assert users_only["ci_low"] == users_only["ci_high"] == pytest.approx(0.5)
    r = M.two_level_bootstrap(A, B, n_boot=4000, seed=3)
    assert (r["ci_low"], r["ci_high"]) == (0.0, 1.0) and r["diff"] == pytest.approx(0.5)
    assert r["p_value"] == pytest.approx(0.5, abs=0.05)
    assert (r["n_seeds_a"], r["n_seeds_b"], r["n_users"], r["interval"]) == (2, 1, u, "seeds+users")


def test_two_level_bootstrap_with_one_seed_each_is_the_users_only_bootstrap() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(400), rng.random(400) * 0.9
    two = M.two_level_bootstrap(a[None], b[None], n_boot=4000)
    one = M.paired_bootstrap(a, b, n_boot=4000)
    assert two["diff"] == pytest.approx(one["diff"])
    assert two["ci_low"] == pytest.approx(one["ci_low"], abs=0.01) and two["ci_high"] == pytest.approx(
        one["ci_high"], abs=0.01)  # same distribution, different draws


def test_two_level_bootstrap_depends_on_its_seed_only_and_refuses_bad_input() -> None:
    rng = np.random.default_rng(1)
    A, B = rng.random((3, 300)), rng.random((2, 300))
    r1 = M.two_level_bootstrap(A, B, n_boot=500, seed=7, chunk_size=7)
    r2 = M.two_level_bootstrap(A, B, n_boot=500, seed=7, chunk_size=500)
    assert (r1["ci_low"], r1["ci_high"], r1["p_value"]) == (r2["ci_low"], r2["ci_high"], r2["p_value"])
    with pytest.raises(ValueError, match="same users"):
        M.two_level_bootstrap(A, B[:, :10])
    with pytest.raises(ValueError, match=r"\[seeds, users\] matrix"):
        M.two_level_bootstrap(A[0], B)
    with pytest.raises(ValueError, match="NaN"):
        M.two_level_bootstrap(np.full((1, 3), np.nan), np.zeros((1, 3)))


def test_holm_adjustment_by_hand() -> None:
    # m = 4 tests; sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (monotone), 0.5; NaN is not a test
    got = M.holm_adjust([0.03, 0.5, 0.01, math.nan, 0.02])
    assert got[[2, 4, 0, 1]].tolist() == pytest.approx([0.04, 0.06, 0.06, 0.5]) and math.isnan(got[3])
    assert M.holm_adjust([0.9, 0.8]).tolist() == [1.0, 1.0] and M.holm_adjust([]).size == 0
