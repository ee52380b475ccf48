"""Issue 12's ablations: each variant changes exactly what it says and nothing else.

The S5 read-out after an assumed gap against step-by-step recurrence; "withheld" outputs that ignore every later time;
zero gaps that leave only the D feed-through; constant and shuffled gaps; one-layer blocks; live scoring that agrees
with the full forward for every variant; SASRec's gap embedding (buckets by hand, causal in the gaps it reads)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.prepare import Sequences
from recsys.models.s5 import TimeAwareS5
from recsys.models.sasrec import SASRec, gap_buckets
from recsys.models.ss4rec import SS4Rec, median_nonzero_gap
from tests.helpers import case

TS = torch.tensor([[0, 5, 5, 300, 360, 960]]) + 10**9
ITEMS = torch.tensor([[3, 7, 1, 12, 5, 9]])


def small(n_items=40, **kw):
    torch.manual_seed(0)
    m = SS4Rec(n_items, hidden=16, n_layers=2, d_state=8, s5_state=8, **kw)
    if m.config.uses_assumed_gap:
        m.assumed_gap.fill_(30.0)
    return m.double().eval()


def test_s5_readout_after_an_assumed_gap_equals_the_recurrence_stepped_by_hand():
    torch.manual_seed(1)
    s5 = TimeAwareS5(6, 4).double()
    u = torch.randn(2, 5, 6, dtype=torch.float64)
    dt = torch.rand(2, 5, dtype=torch.float64) * 3
    r = torch.full((2, 5), 0.7, dtype=torch.float64)
    for scan in ("sequential", "parallel"):
        y, xs = s5(u, dt, return_state=True, readout_dt=r, scan=scan)
        torch.testing.assert_close(xs, s5(u, dt, return_state=True, scan=scan)[1])  # the carried states: real gaps
        x_prev = None
        for k in range(5):
            y_k, _ = s5.step(u[:, k], r[:, k], x_prev)          # read out after the assumed gap ...
            torch.testing.assert_close(y[:, k], y_k)
            _, x_prev = s5.step(u[:, k], dt[:, k], x_prev)      # ... carry on with the real one
    # the output at k never depends on dt_k
    dt2 = dt.clone()
    dt2[:, 2] += 100.0
    y2 = s5(u, dt2, readout_dt=r)
    torch.testing.assert_close(y2[:, :3], y[:, :3])
    assert not torch.allclose(y2[:, 3:], y[:, 3:])


def test_withheld_target_gap_makes_no_output_depend_on_a_later_time():
    m = small(target_gap="withheld")
    h = m.encode(ITEMS, TS, torch.tensor([6]), TS[:, -1] + 50)
    for j in range(5):
        later = TS.clone()
        later[:, j + 1:] += 7777  # the interaction after position j comes later; its order is unchanged
        h2 = m.encode(ITEMS, later, torch.tensor([6]), later[:, -1] + 999)
        torch.testing.assert_close(h2[:, :j + 1], h[:, :j + 1])
        assert not torch.allclose(h2[:, j + 1:], h[:, j + 1:])
    # and the score ignores the time of the predicted interaction, where the released model does not
    released = small()
    for model, same in ((m, True), (released, False)):
        a = model.score(case(ITEMS, TS, [6], TS[:, -1] + 10))
        b = model.score(case(ITEMS, TS, [6], TS[:, -1] + 86400))
        assert torch.allclose(a, b) == same


def test_zero_gaps_leave_the_s5_only_its_feed_through_and_ignore_time():
    m = small(gap_ablation="zero")
    assert m.gaps(TS, torch.tensor([6]), TS[:, -1] + 5).abs().sum() == 0
    s5 = m.blocks[0].s5
    u = torch.randn(1, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(s5(u, torch.zeros(1, 6, dtype=torch.float64)), s5.seq.D * u)
    moved = TS * 0 + torch.arange(6) * 100_000 + 10**9
    torch.testing.assert_close(m.score(case(ITEMS, TS, [6], TS[:, -1] + 5)),
                               m.score(case(ITEMS, moved, [6], moved[:, -1] + 86400)))


def test_constant_gaps_feed_the_assumed_gap_at_every_real_position():
    m = small(gap_ablation="constant")
    ts = torch.tensor([[10, 20, 50, 0], [5, 0, 0, 0]])
    assert m.gaps(ts, torch.tensor([3, 1]), torch.tensor([80, 9])).tolist() == [[30.0] * 3 + [0.0], [30.0, 0, 0, 0]]


def test_the_assumed_gap_is_the_median_of_the_nonzero_training_gaps():
    # two users: gaps 0, 10, 0, 40 | 5, 0 -> non-zero 10, 40, 5 -> median 10 (the median of all six would be 2.5)
    seqs = Sequences(users=np.array([1, 2]), indptr=np.array([0, 5, 8]),
                     items=np.arange(1, 9), timestamps=np.array([0, 0, 10, 10, 50, 7, 12, 12]),
                     ratings=np.ones(8), row_ids=np.arange(8))
    task = type("T", (), {"train_seqs": seqs})()  # what SequenceTask and SequenceRatingTask hold
    assert median_nonzero_gap(task) == 10.0
    m = small(target_gap="withheld")
    m.init_from_data(task)
    assert float(m.assumed_gap) == 10.0
    assert "assumed_gap" in m.state_dict() and "assumed_gap" not in small().state_dict()


def test_shuffled_gaps_are_each_rows_own_gaps_permuted_and_fixed_in_evaluation():
    m = small(gap_ablation="shuffled")
    ts = torch.tensor([[0, 1, 3, 7, 15, 31, 0, 0], [0, 100, 300, 0, 0, 0, 0, 0]]) + 10**9
    ts[1, 3:] = 0
    ts[0, 6:] = 0
    lengths = torch.tensor([6, 3])
    target = torch.tensor([10**9 + 63, 10**9 + 700])
    real = m.gaps(ts, lengths, target)
    m.config.gap_ablation = "none"
    plain = m.gaps(ts, lengths, target)
    m.config.gap_ablation = "shuffled"
    for row, n in enumerate(lengths.tolist()):
        assert sorted(real[row, :n].tolist()) == sorted(plain[row, :n].tolist())
        assert real[row, n:].abs().sum() == 0
    assert real[0].tolist() != plain[0].tolist()
    torch.testing.assert_close(m.gaps(ts, lengths, target), real)  # evaluation: the same permutation every time
    m.train()
    draws = {tuple(m.gaps(ts, lengths, target)[0].tolist()) for _ in range(10)}
    assert len(draws) > 1  # training: a fresh permutation each step


@pytest.mark.parametrize("blocks", ["s5", "mamba"])
def test_one_layer_blocks_hold_only_that_layer(blocks):
    m = small(blocks=blocks)
    names = {n.split(".")[2] for n, _ in m.named_parameters() if n.startswith("blocks.")}
    assert names == ({"s5", "norm"} if blocks == "s5" else {"mamba", "norm"})
    out = m.score(case(ITEMS, TS, [6], TS[:, -1] + 5))
    assert out.shape == (1, 40) and torch.isfinite(out).all()
    moved = TS + torch.arange(6) * 1000
    same = torch.allclose(out, m.score(case(ITEMS, moved, [6], moved[:, -1] + 5)))
    assert same == (blocks == "mamba")  # without the S5 nothing reads time


@pytest.mark.parametrize("kw", [{"target_gap": "withheld"}, {"gap_ablation": "zero"}, {"gap_ablation": "constant"},
                                {"blocks": "s5"}, {"blocks": "mamba"}, {"time_transform": "log1p"}])
def test_live_scoring_agrees_with_the_full_forward_for_every_variant(kw):
    m = small(**kw)
    cache = m.prefill(ITEMS, TS)
    for gap in (0, 30, 86400 * 40):
        now = TS[:, -1] + gap
        torch.testing.assert_close(m.score_next(cache, now), m.score(case(ITEMS, TS, [6], now)), rtol=1e-9,
                                   atol=1e-9)
    assert m.reads_target_time == (kw in ({"blocks": "s5"}, {"time_transform": "log1p"}))


def test_an_unknown_variant_setting_is_refused():
    for kw in ({"gap_ablation": "random"}, {"target_gap": "hidden"}, {"blocks": "gru"}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            SS4Rec(10, **kw)


def test_gap_buckets_by_hand():
    g = torch.tensor([0, 1, 2, 3, 59, 60, 3600, 86400, 10**12])
    # floor(log2(1 + g)): 0, 1, 1.58, 2, 5.91, 5.93, 11.81, 16.40, capped at 27
    assert gap_buckets(g).tolist() == [0, 1, 1, 2, 5, 5, 11, 16, 27]


def test_sasrec_with_the_gap_embedding_reads_exactly_the_gaps_ss4rec_reads():
    torch.manual_seed(0)
    m = SASRec(40, max_len=8, hidden_size=16, n_heads=2, inner_size=32, target_gap_embedding=True).double().eval()
    plain = SASRec(40, max_len=8, hidden_size=16, n_heads=2, inner_size=32).double().eval()
    near, far = case(ITEMS, TS, [6], TS[:, -1] + 5), case(ITEMS, TS, [6], TS[:, -1] + 86400)
    assert not torch.allclose(m.score(near), m.score(far))
    torch.testing.assert_close(plain.score(near), plain.score(far))
    # position j sees the gap after item j (its own target's) but nothing later
    h = m.encode(ITEMS, near)
    for j in range(4):
        later = TS.clone()
        later[:, j + 2:] += 500_000
        h2 = m.encode(ITEMS, case(ITEMS, later, [6], later[:, -1] + 5))
        torch.testing.assert_close(h2[:, :j + 1], h[:, :j + 1])
        assert not torch.allclose(h2[:, j + 1], h[:, j + 1])
    with pytest.raises(ValueError, match="needs the history's times"):
        m.encode(ITEMS)
