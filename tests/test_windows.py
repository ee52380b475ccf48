"""Training windows: every target in the loss exactly once, and with stride 1 exactly RecBole's per-prefix samples
(history = the last max_len items before the target), also for sequences longer than max_len."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.batch import SequenceBatch, training_windows
from recsys.data.prepare import Sequences
from recsys.models.ss4rec import SS4Rec

LENGTHS = np.array([1, 2, 7, 12, 13, 23, 40])


def sequences(lengths=LENGTHS, seed=0) -> Sequences:
    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    n = int(indptr[-1])
    items = rng.integers(1, 30, n)
    times = np.concatenate([np.sort(rng.integers(0, 10**6, k)) + 10**9 for k in lengths])
    return Sequences(np.arange(1, len(lengths) + 1), indptr, items, times, rng.integers(1, 6, n).astype(np.float32),
                     np.arange(n))


def samples_from_windows(w: SequenceBatch, seqs: Sequences) -> list[tuple]:
    """(user, target time, target item, history items) for every position in the loss."""
    out = []
    for r in range(len(w)):
        for j in range(int(w.lengths[r])):
            if int(w.targets[r, j]) > 0:
                out.append((int(w.users[r]), int(w.targets[r, j]), tuple(w.items[r, :j + 1].tolist()),
                            tuple(w.timestamps[r, :j + 1].tolist())))
    return sorted(out)


def per_prefix_samples(seqs: Sequences, max_len: int) -> list[tuple]:
    """RecBole's training samples: every target t >= 1 with the last max_len items before it."""
    out = []
    for u in range(len(seqs.lengths)):
        a, b = seqs.indptr[u], seqs.indptr[u + 1]
        items, times = seqs.items[a:b], seqs.timestamps[a:b]
        for t in range(1, b - a):
            lo = max(0, t - max_len)
            out.append((int(seqs.users[u]), int(items[t]), tuple(items[lo:t].tolist()), tuple(times[lo:t].tolist())))
    return sorted(out)


@pytest.mark.parametrize("max_len", [3, 5, 10])
def test_stride_one_is_exactly_the_per_prefix_samples(max_len):
    seqs = sequences()
    w = training_windows(seqs, max_len, stride=1)
    assert samples_from_windows(w, seqs) == per_prefix_samples(seqs, max_len)


@pytest.mark.parametrize("stride", [1, 2, 4, 5, None])
def test_every_target_once_with_at_least_max_len_minus_stride_plus_one_items(stride):
    seqs, max_len = sequences(), 5
    w = training_windows(seqs, max_len, stride=stride)
    got = samples_from_windows(w, seqs)
    ref = per_prefix_samples(seqs, max_len)
    # the same (user, target) multiset: each target in the loss exactly once
    assert sorted((u, t, tt[-1]) for u, t, _, tt in got) == sorted((u, t, tt[-1]) for u, t, _, tt in ref)
    for (_, _, hist, _), (_, _, full, _) in zip(sorted(got, key=lambda s: (s[0], s[3][-1], s[1])),
                                                sorted(ref, key=lambda s: (s[0], s[3][-1], s[1]))):
        assert hist == full[len(full) - len(hist):]  # a suffix of the full history: the most recent items
        if stride is not None:
            assert len(hist) >= min(len(full), max_len - stride + 1)
    for r in range(len(w)):  # the last input's target time is what the last position's gap reaches
        n = int(w.lengths[r])
        u = int(w.users[r]) - 1
        a, b = seqs.indptr[u], seqs.indptr[u + 1]
        pos = a + np.flatnonzero(seqs.timestamps[a:b] == int(w.timestamps[r, n - 1]))
        assert int(w.target_times[r]) in seqs.timestamps[pos + 1].tolist()


def test_overlapping_windows_cost():
    """Stride s over a sequence longer than max_len: ceil((n - 1 - max_len) / s) windows after the first."""
    seqs = sequences(np.array([40]))
    for stride, expected in ((1, 1 + 29), (4, 1 + 8), (10, 1 + 3)):
        assert len(training_windows(seqs, 10, stride=stride)) == expected


def test_bad_stride_is_refused():
    with pytest.raises(ValueError, match="stride"):
        training_windows(sequences(), 5, stride=0)
    with pytest.raises(ValueError, match="stride"):
        training_windows(sequences(), 5, stride=6)


def test_ss4rec_window_positions_equal_per_prefix_scores_beyond_max_len():
    """One causal pass over stride-1 windows gives, at every position in the loss, the logits SS4Rec gives the
    per-prefix sample (last max_len items, the target's time): training sees what RecBole's training sees."""
    torch.manual_seed(0)
    m = SS4Rec(30, hidden=16, n_layers=2, d_state=8, s5_state=8, dropout=0.0).double().eval()
    seqs, max_len = sequences(np.array([14, 4]), seed=1), 6
    w = training_windows(seqs, max_len, stride=1)
    h = m.encode(w.items, w.timestamps, w.lengths, w.target_times)
    checked = 0
    for r in range(len(w)):
        u = int(w.users[r]) - 1
        a = seqs.indptr[u]
        for j in range(int(w.lengths[r])):
            if int(w.targets[r, j]) == 0:
                continue
            # the target's flat position: the item after the input at position j
            t_flat = a + int(np.flatnonzero((seqs.timestamps[a:seqs.indptr[u + 1]] == int(w.timestamps[r, j]))
                                            & (seqs.items[a:seqs.indptr[u + 1]] == int(w.items[r, j])))[-1]) + 1
            lo = max(a, t_flat - max_len)
            prefix = SequenceBatch(users=torch.tensor([u + 1]),
                                   items=torch.from_numpy(seqs.items[lo:t_flat][None]),
                                   timestamps=torch.from_numpy(seqs.timestamps[lo:t_flat][None]),
                                   lengths=torch.tensor([t_flat - lo]),
                                   target_times=torch.tensor([int(seqs.timestamps[t_flat])]))
            assert int(seqs.items[t_flat]) == int(w.targets[r, j])
            if j < int(w.lengths[r]) - 1:  # inside the window, the next input's time is the target's time
                assert int(w.timestamps[r, j + 1]) == int(seqs.timestamps[t_flat])
            torch.testing.assert_close(m.score(prefix)[0], (h[r, j] @ m.item_embedding.weight.T),
                                       rtol=1e-9, atol=1e-9)
            checked += 1
    assert checked == 14 - 1 + 4 - 1
