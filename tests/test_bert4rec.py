"""BERT4Rec (issue 23) as RecBole ships it: evaluation reads a [MASK] appended after the history, every position
sees the whole history (bidirectional), the cloze loss is the CE of the masked items computed by hand, and
learning. Its contract (card, padding, save/restore, Compare) is generated in tests/test_contracts.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.data.batch import SequenceBatch
from recsys.models.bert4rec import BERT4Rec


def batch(items, lengths, targets=None) -> SequenceBatch:
    items = torch.as_tensor(items)
    return SequenceBatch(users=torch.zeros(len(items), dtype=torch.long), items=items, lengths=torch.as_tensor(lengths),
                         targets=None if targets is None else torch.as_tensor(targets))


def small(**kw) -> BERT4Rec:
    torch.manual_seed(0)
    return BERT4Rec(40, max_len=8, hidden_size=16, n_heads=2, inner_size=32, **kw).double().eval()


def test_scores_read_a_mask_appended_after_the_history():
    m = small()
    with torch.no_grad():
        got = m.score(batch([[5, 17, 3, 0, 0]], [3]))
        h = m.encode(torch.tensor([[5, 17, 3, m.mask_token]]))[:, 3]
        expected = h @ m.item_embedding.weight[:40].T + m.output_bias
    torch.testing.assert_close(got, expected)
    assert got.shape == (1, 40)


def test_every_position_sees_the_whole_history():
    m = small()
    with torch.no_grad():
        a = m.encode(torch.tensor([[5, 17, 3, 9]]))
        b = m.encode(torch.tensor([[5, 17, 3, 22]]))
    assert not torch.allclose(a[:, 0], b[:, 0])  # a later item changes an earlier output: not causal, by design


def test_cloze_loss_is_the_cross_entropy_of_the_masked_items():
    m = small(hidden_dropout=0.0, attn_dropout=0.0)
    items = torch.tensor([[5, 17, 3, 9, 11, 0], [7, 2, 0, 0, 0, 0]])
    torch.manual_seed(3)
    loss = m(batch(items, [5, 2]))
    torch.manual_seed(3)
    masked = (torch.rand(items.shape) < 0.2) & (items > 0)
    for r in range(2):  # a row without a drawn mask masks its last item
        if not masked[r].any():
            masked[r, int((items[r] > 0).sum()) - 1] = True
    h = m.encode(torch.where(masked, torch.full_like(items, m.mask_token), items))[masked]
    logits = h @ m.item_embedding.weight[1:40].T + m.output_bias[1:]
    torch.testing.assert_close(loss, F.cross_entropy(logits, items[masked] - 1))


def test_training_lowers_the_loss_and_fills_a_gap():
    torch.manual_seed(0)
    m = BERT4Rec(31, max_len=10, hidden_size=16, n_heads=2, inner_size=32, hidden_dropout=0.0,
                 attn_dropout=0.0, mask_ratio=0.3).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(1, 20, (64,), generator=g)
    lengths = torch.randint(3, 11, (64,), generator=g)  # histories of every length, padded after their end
    seq = (starts[:, None] + torch.arange(10)[None, :]) * (torch.arange(10)[None, :] < lengths[:, None])
    b = batch(seq, lengths)
    losses = []
    for _ in range(300):
        loss = m(b)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10]), losses[::10]
    m.eval()
    with torch.no_grad():
        assert int(m.score(batch([[5, 6, 7]], [3]))[0, 1:].argmax()) + 1 == 8
