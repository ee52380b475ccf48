"""TiSASRec (issue 23): the interval matrix of a hand-made history, the per-bucket attention against the paper's
materialised [B, L, L, d] form, all-positions training equal to per-prefix samples, history times only, and
learning. Its contract (card, padding, save/restore, Compare) is tests/test_contracts.py's, generated."""
from __future__ import annotations

import math

import pytest
import torch

from recsys.data.batch import SequenceBatch
from recsys.models.tisasrec import TimeAwareAttention, TiSASRec, interval_matrix
from tests.helpers import assert_learns_upward_walks


def batch(items, times, lengths, targets=None, target_times=None) -> SequenceBatch:
    items = torch.as_tensor(items)
    return SequenceBatch(users=torch.zeros(len(items), dtype=torch.long), items=items,
                         timestamps=torch.as_tensor(times), lengths=torch.as_tensor(lengths),
                         targets=None if targets is None else torch.as_tensor(targets),
                         target_times=None if target_times is None else torch.as_tensor(target_times))


def small(**kw) -> TiSASRec:
    torch.manual_seed(0)
    return TiSASRec(40, max_len=12, hidden_size=16, n_heads=2, time_span=16, **kw).double().eval()


def test_interval_matrix_by_hand():
    t = torch.tensor([[0, 10, 10, 40, 100, 0]])  # 5 real items, then padding
    r = interval_matrix(t, torch.tensor([5]), time_span=256)
    # consecutive gaps 10, 0, 30, 60: the running smallest non-zero gap is (none) 1, 10, 10, 10, 10
    assert r[0, 4, :5].tolist() == [10, 9, 9, 6, 0]      # |100 - t_j| / 10
    assert r[0, 1, :2].tolist() == [1, 0]                # |10 - 0| / 10
    assert r[0, 0, 0] == 0 and r[0, 2, 1] == 0           # the same second
    assert r[0, 5].eq(0).all() and r[0, :, 5].eq(0).all()  # padding
    assert interval_matrix(t, torch.tensor([5]), time_span=5)[0, 4, :5].tolist() == [5, 5, 5, 5, 0]  # clipped
    log2 = interval_matrix(t, torch.tensor([5]), time_span=256, interval="log2")
    assert log2[0, 4, :5].tolist() == [math.floor(math.log2(1 + g)) for g in (100, 90, 90, 60, 0)]


def test_the_unit_is_a_running_minimum_so_a_later_gap_never_rescales_an_earlier_row():
    t = torch.tensor([[0, 100, 200, 201]])
    full = interval_matrix(t, torch.tensor([4]), 256)
    prefix = interval_matrix(t[:, :3], torch.tensor([3]), 256)
    assert torch.equal(full[0, :3, :3], prefix[0])  # the 1-second gap at the end rescales only row 3
    assert full[0, 3, 0] == 201 and full[0, 2, 0] == 2


def test_per_bucket_attention_equals_the_materialised_form():
    torch.manual_seed(3)
    att = TimeAwareAttention(8, 2, 0.0).double().eval()
    B, L, span = 2, 5, 7
    q_in, kv_in = torch.randn(B, L, 8, dtype=torch.float64), torch.randn(B, L, 8, dtype=torch.float64)
    r = torch.randint(0, span + 1, (B, L, L))
    visible = torch.ones(L, L, dtype=torch.bool).tril()[None, None].expand(B, 1, L, L)
    pos_k, pos_v = torch.randn(L, 8, dtype=torch.float64), torch.randn(L, 8, dtype=torch.float64)
    time_k, time_v = torch.randn(span + 1, 8, dtype=torch.float64), torch.randn(span + 1, 8, dtype=torch.float64)
    got = att(q_in, kv_in, visible, r, pos_k, pos_v, time_k, time_v)
    # the paper's form: [B, L, L, d] key and value tensors per (i, j)
    q, k, v = att.query(q_in), att.key(kv_in), att.value(kv_in)
    keys = k[:, None] + pos_k[None, None] + time_k[r]          # [B, L(i), L(j), d]
    values = v[:, None] + pos_v[None, None] + time_v[r]
    out = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        scores = torch.einsum("bid,bijd->bij", q[..., s], keys[..., s]) / 2.0
        scores = scores.masked_fill(~visible[:, 0], torch.finfo(scores.dtype).min)
        out.append(torch.einsum("bij,bijd->bid", torch.softmax(scores, -1), values[..., s]))
    torch.testing.assert_close(got, torch.cat(out, -1), rtol=1e-12, atol=1e-12)


def test_all_positions_equal_per_prefix_samples_and_the_target_time_is_never_read():
    m = small()
    rows = [([5, 17, 3, 39, 22, 8], [0, 50, 50, 400, 1000, 90000]), ([9, 2, 30], [7, 8, 3000])]
    items = torch.tensor([r + [0] * (6 - len(r)) for r, _ in rows])
    times = torch.tensor([t + [0] * (6 - len(t)) for _, t in rows])
    with torch.no_grad():
        h = m.encode(items, times, torch.tensor([6, 3]))
        for b, (row, ts) in enumerate(rows):
            for j in range(len(row)):
                alone = m.score(batch([row[:j + 1]], [ts[:j + 1]], [j + 1], target_times=[ts[j] + 5]))[0]
                torch.testing.assert_close(alone, h[b, j] @ m.item_embedding.weight.T, rtol=1e-9, atol=1e-9)
                later = m.score(batch([row[:j + 1]], [ts[:j + 1]], [j + 1], target_times=[ts[j] + 10**7]))[0]
                torch.testing.assert_close(alone, later)  # history only: "now" changes nothing
    # the times matter: the same items at other times score differently
    moved = times.clone()
    moved[0, 3:6] += torch.tensor([10, 5000, 77777])
    with torch.no_grad():
        assert not torch.allclose(m.encode(items, moved, torch.tensor([6, 3]))[0, 5], h[0, 5])


def test_training_lowers_the_loss_and_finds_the_next_item():
    torch.manual_seed(0)
    assert_learns_upward_walks(TiSASRec(31, max_len=12, hidden_size=16, n_heads=2, time_span=16, dropout=0.0))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="interval must be one of personal, log2"):
        TiSASRec(10, interval="days")
    with pytest.raises(ValueError, match="multiple of n_heads"):
        TiSASRec(10, hidden_size=50, n_heads=3)
    with pytest.raises(ValueError, match="needs the history's times"):
        small().encode(torch.tensor([[1, 2]]), None, torch.tensor([2]))
