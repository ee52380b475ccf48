"""SS4Rec: time gaps, all-positions training equals per-prefix samples, chunked logits, padding, training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.batch import training_windows
from recsys.data.prepare import Sequences
from recsys.models.ss4rec import SS4Rec, chunked_softmax_cross_entropy
from tests.helpers import case


def small(n_items=40, **kw):
    torch.manual_seed(0)
    m = SS4Rec(n_items, hidden=16, n_layers=2, d_state=8, s5_state=8, **kw)
    return m.double().eval()


def test_parameter_count_matches_released_model_on_ml1m():
    # ss4rec.md: 309,184 parameters on ML-1M (3,416 items after 5-core, +1 padding). The released model also
    # holds an embedding LayerNorm (128 parameters) that it never applies; we do not create it.
    m = SS4Rec(3417, rating_head=False)
    assert sum(p.numel() for p in m.parameters()) == 309_184 - 128


def test_gaps_hand_computed():
    m = small()
    ts = torch.tensor([[10, 20, 50, 0], [5, 0, 0, 0]])
    dt = m.gaps(ts, torch.tensor([3, 1]), torch.tensor([80, 9]))
    assert dt.tolist() == [[10.0, 30.0, 30.0, 0.0], [4.0, 0.0, 0.0, 0.0]]
    assert m.gaps(ts, torch.tensor([3, 1]), None).tolist() == [[10.0, 30.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    # RecBole's float32 timestamps round to 64 s near 1e9: a 1-second gap can vanish or grow
    m32 = small(float32_timestamps=True)
    t = torch.tensor([[1_000_000_001, 1_000_000_002]])
    assert m.gaps(t, torch.tensor([2]), torch.tensor([1_000_000_003])).tolist() == [[1.0, 1.0]]
    assert m32.gaps(t, torch.tensor([2]), torch.tensor([1_000_000_003])).tolist() == [[0.0, 0.0]]
    logm = small(time_transform="log1p", time_unit=10.0)
    assert torch.allclose(logm.gaps(ts[:1], torch.tensor([3]), torch.tensor([80])),
                          torch.log1p(torch.tensor([[1.0, 3.0, 3.0, 0.0]], dtype=torch.float64)))



def test_gap_features_hand_computed():
    """'all': the bucket floor(log2(1 + gap)) of the gap after each item, the target's at the last; 'history': the
    gap before each item, the first item's own row (FIRST_ITEM) since it has none."""
    from recsys.models.ss4rec import FIRST_ITEM

    ts = torch.tensor([[10, 20, 50, 0], [5, 0, 0, 0]])
    lengths, target = torch.tensor([3, 1]), torch.tensor([80, 9])
    # gaps after: 10 s -> bucket 3 (log2 11), 30 s -> 4 (log2 31), target 30 s -> 4; padding 0
    assert small(gap_features="all").gap_feature_ids(ts, lengths, target).tolist() == [[3, 4, 4, 0], [2, 0, 0, 0]]
    history = small(gap_features="history").gap_feature_ids(ts, lengths, target)
    assert history[:, 0].tolist() == [FIRST_ITEM, FIRST_ITEM] and history[0, 1:3].tolist() == [3, 4]


@pytest.mark.parametrize("target_gap,gap_features,reads", [("withheld", "all", True), ("withheld", "history", False),
                                                            ("given", "history", True), ("withheld", "none", False)])
def test_the_2x2_of_how_time_enters(target_gap, gap_features, reads):
    """SS4Rec's target time reaches a score through the S5 (target_gap given) or the gap features ('all'): with
    both withheld no score depends on it, and the card's rule (the pages' caveat) agrees in every combination."""
    m = small(target_gap=target_gap, gap_features=gap_features)
    if target_gap == "withheld":
        m.assumed_gap.fill_(30.0)
    soon = m.score(case([[3, 7, 9]], [[100, 160, 400]], [3], [401]))
    later = m.score(case([[3, 7, 9]], [[100, 160, 400]], [3], [401 + 86400 * 30]))
    assert (not torch.allclose(soon, later, rtol=0, atol=1e-12)) == reads
    assert m.reads_target_time == reads


def test_span_normalised_gaps_use_the_data_span_and_are_saved_with_the_weights():
    """time_normalise="span" divides gaps by the data's time span (RecBole's ml-100k normalize_all), taken from the
    filtered data at init and restored with the weights, so a saved run scores exactly as trained."""
    import pandas as pd

    m = small(time_normalise="span")
    task = type("T", (), {"prepared": type("P", (), {"interactions": pd.DataFrame({"timestamp": [1000, 1400, 1200]})})})
    m.init_from_data(task)
    ts = torch.tensor([[1000, 1100, 1300]])
    dt = m.gaps(ts, torch.tensor([3]), torch.tensor([1400]))
    assert torch.allclose(dt, torch.tensor([[100.0, 200.0, 100.0]], dtype=torch.float64) / 400)
    fresh = small(time_normalise="span")
    assert "time_span" in fresh.state_dict() and "time_span" not in small().state_dict()  # old runs still load
    fresh.load_state_dict(m.state_dict())
    b = case([[3, 7, 9]], ts, [3], [1400])
    torch.testing.assert_close(fresh.score(b), m.score(b))
    assert not torch.allclose(small().score(b), m.score(b))
    with pytest.raises(ValueError, match="time_normalise"):
        small(time_normalise="minmax")

@pytest.mark.parametrize("gap_features", ["none", "all", "history"])
def test_all_positions_equal_per_prefix_samples(gap_features):
    """RecBole feeds every prefix as its own sample; one causal pass over the window gives the same logits (with gap
    features too: 'all' reads each position's target gap, 'history' the gap before each item)."""
    m = small(gap_features=gap_features)
    rng = np.random.default_rng(0)
    n = 9
    items = rng.integers(1, 40, n)
    times = np.cumsum(rng.choice([0, 0, 30, 3600, 86400 * 3], n)) + 10**9
    seqs = Sequences(np.array([1]), np.array([0, n]), items, times, np.ones(n, np.float32), np.arange(n))
    w = training_windows(seqs, max_len=10)
    assert w.lengths.tolist() == [n - 1]
    h = m.encode(w.items, w.timestamps, w.lengths, w.target_times)
    all_pos = h[0, :n - 1] @ m.item_embedding.weight.T
    for j in range(n - 1):  # prefix items[:j+1] predicting items[j+1] at time times[j+1]
        prefix = case(items[None, :j + 1], times[None, :j + 1], [j + 1], [times[j + 1]])
        torch.testing.assert_close(m.score(prefix)[0], all_pos[j], rtol=1e-10, atol=1e-10)


def test_right_padding_does_not_change_scores():
    m = small()
    a = case([[3, 7, 9]], [[100, 160, 400]], [3], [1000])
    padded = case([[3, 7, 9, 0, 0], [5, 0, 0, 0, 0]], [[100, 160, 400, 0, 0], [50, 0, 0, 0, 0]], [3, 1], [1000, 70])
    torch.testing.assert_close(m.score(a)[0], m.score(padded)[0], rtol=1e-10, atol=1e-10)


def test_time_gap_changes_the_prediction():
    m = small()
    soon = m.score(case([[3, 7, 9]], [[100, 160, 400]], [3], [401]))
    later = m.score(case([[3, 7, 9]], [[100, 160, 400]], [3], [401 + 86400 * 30]))
    assert not torch.allclose(soon, later)  # the S5 layer really sees the gap before the predicted item


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_cross_entropy_equals_full(chunk):
    torch.manual_seed(1)
    h = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randint(1, 30, (50,))
    ref_logits = h @ w.T
    ref_logits = torch.cat([torch.full_like(ref_logits[:, :1], float("-inf")), ref_logits[:, 1:]], 1)
    ref = torch.nn.functional.cross_entropy(ref_logits, t)
    got = chunked_softmax_cross_entropy(h, w, t, chunk)
    torch.testing.assert_close(got, ref)
    gh_ref, gw_ref = torch.autograd.grad(ref, (h, w))
    gh, gw = torch.autograd.grad(chunked_softmax_cross_entropy(h, w, t, chunk), (h, w))
    torch.testing.assert_close(gh, gh_ref)
    torch.testing.assert_close(gw, gw_ref)


def test_chunked_cross_entropy_float32_many_cpu_chunks_and_bad_targets():
    torch.manual_seed(2)
    h = torch.randn(3000, 16, requires_grad=True)
    w = torch.randn(5000, 16, requires_grad=True)             # 5,000 items: CPU chunks of a few hundred rows
    t = torch.randint(1, 5000, (3000,))
    hd, wd = h.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(torch.cat([torch.full((3000, 1), float("-inf"), dtype=torch.float64),
                                                       hd @ wd[1:].T], 1), t)
    gh_ref, gw_ref = torch.autograd.grad(ref, (hd, wd))
    got = chunked_softmax_cross_entropy(h, w, t, 8192)
    gh, gw = torch.autograd.grad(got, (h, w))
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gh.double(), gh_ref, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(gw.double(), gw_ref, rtol=1e-4, atol=1e-7)
    assert float(gw[0].abs().max()) == 0.0                     # padding never gets a gradient
    with pytest.raises(ValueError, match="0 is padding"):
        chunked_softmax_cross_entropy(h, w, torch.zeros(3000, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        chunked_softmax_cross_entropy(h, w, t[:10])


def test_chunked_cross_entropy_under_autocast_matches_float32():
    """With autocast on (bf16 on GPUs) the logits matmul runs in the low-precision dtype, the softmax in float32."""
    torch.manual_seed(3)
    h = torch.randn(500, 16, requires_grad=True)
    w = (torch.randn(300, 16) * 0.3).requires_grad_(True)
    t = torch.randint(1, 300, (500,))
    ref = chunked_softmax_cross_entropy(h, w, t, 64)
    gh_ref, gw_ref = torch.autograd.grad(ref, (h, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked_softmax_cross_entropy(h, w, t, 64)
    gh, gw = torch.autograd.grad(got, (h, w))
    assert got.dtype == torch.float32 and gh.dtype == torch.float32
    assert abs(float(got) - float(ref)) < 2e-2
    assert float((gh - gh_ref).abs().max()) < 2e-2 * float(gh_ref.abs().max())
    assert float((gw - gw_ref).abs().max()) < 2e-2 * float(gw_ref.abs().max())


def test_windows_predict_every_target_once():
    n = np.array([1, 2, 7, 23])
    indptr = np.concatenate([[0], np.cumsum(n)])
    items = np.arange(1, indptr[-1] + 1)
    seqs = Sequences(np.arange(1, 5), indptr, items, items * 10, items.astype(np.float32), items)
    w = training_windows(seqs, 5)
    targets = sorted(w.targets[w.targets > 0].tolist())
    expected = sorted(int(x) for u in range(4) for x in items[indptr[u] + 1:indptr[u + 1]])
    assert targets == expected
    for r in range(len(w)):  # inputs are each target's predecessor in the same user's sequence
        L = w.lengths[r]
        assert (w.targets[r, :L] == w.items[r, :L] + 1).all()
        assert w.target_times[r] == w.targets[r, L - 1] * 10


def test_training_lowers_loss_and_learns_a_sequential_pattern():
    # each user walks items upward: after item i comes i+1. A sequence model must find that; popularity cannot.
    torch.manual_seed(0)
    m = SS4Rec(31, hidden=16, n_layers=1, d_state=8, s5_state=8, dropout=0.0, rating_head=True)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    starts = torch.randint(1, 20, (64,))
    items = starts[:, None] + torch.arange(10)[None, :]
    batch = case(items[:, :-1], torch.arange(9).repeat(64, 1) * 60, torch.full((64,), 9), torch.full((64,), 540),
                 targets=items[:, 1:], target_ratings=torch.full((64, 9), 4.0))
    first = None
    for _ in range(150):
        loss = m(batch)  # CE + the rating MSE
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    m.eval()
    after = case([[5, 6, 7]], [[0, 60, 120]], [3], [180], targets=[8])
    assert int(m.score(after)[0, 1:].argmax()) + 1 == 8
    assert abs(float(m.predict_rating(after)) - 4.0) < 0.3


def test_ss4rec_run_reports_both_metric_families(tmp_path):
    from recsys.config import resolve_config
    from recsys.runs import RunDirectory
    from recsys.training.runner import run_training

    cfg = resolve_config("ss4rec", {}, {"hidden": 16, "d_state": 8, "s5_state": 8, "max_len": 20, "epochs": 1,
                                        "batch_size": 512, "cpu_threads": 1, "rating_head": True})
    info = run_training(cfg, tmp_path / "ss", ["python", "scripts/train.py", "--model", "ss4rec"], progress=False)
    test = info["metrics"]["test"]
    assert {"hr@10", "ndcg@10", "mrr@10", "rmse", "mae"} <= set(test) and test["n"] == 943
    assert 0.5 < test["rmse"] < 2.0  # a rating head that predicts on the 1..5 scale, not a broken one
    run = RunDirectory(tmp_path / "ss")
    res = run.test_results()
    assert {"rank", "pred_rating", "target_rating", "sq_error", "gap_before_target"} <= set(res.columns)
    assert np.isclose(np.sqrt(res["sq_error"].mean()), test["rmse"])
    state, _ = run.load_weights("ss4rec")
    assert "blocks.0.s5.seq.Lambda" in state and "blocks.0.mamba.A_log" in state
    from recsys.models import native

    # the run says which CPU code trained it
    assert info["environment"]["cpu_kernels"] == ("native" if native.available() else
                                                  f"pure PyTorch ({native.status()})")


@pytest.mark.parametrize("features", ["none", "all", "history"])
@pytest.mark.parametrize("n", [1, 2, 6])
def test_prefill_then_step_equals_full_forward(n, features):
    m = small(gap_features=features)  # with gap features the last input is rebuilt for each "now" ("all")
    items = torch.randint(1, 40, (1, n))
    ts = torch.cumsum(torch.tensor([[0, 5, 0, 3600, 86400, 60]])[:, :n], 1) + 10**9
    cache = m.prefill(items, ts)
    for gap in (0, 30, 86400 * 40):
        now = ts[:, -1] + gap
        full = m.score(case(items, ts, [n], now))
        torch.testing.assert_close(m.score_next(cache, now), full, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="before the last movie"):
        m.score_next(cache, ts[:, -1] - 1)
    with pytest.raises(ValueError, match="empty history"):
        m.prefill(items[:, :0], ts[:, :0])
