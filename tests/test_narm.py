"""NARM (issue 23) as RecBole ships it: every position of a window encoded at once equals RecBole's per-prefix
sample (global state, attention of the last state over the prefix, the bilinear read-out), padding keys ignored,
and learning. Its contract (card, padding, save/restore, Compare) is generated in tests/test_contracts.py."""
from __future__ import annotations

import torch

from recsys.data.batch import SequenceBatch
from recsys.models.narm import NARM
from tests.helpers import assert_learns_upward_walks


def batch(items, lengths, targets=None) -> SequenceBatch:
    items = torch.as_tensor(items)
    return SequenceBatch(users=torch.zeros(len(items), dtype=torch.long), items=items, lengths=torch.as_tensor(lengths),
                         targets=None if targets is None else torch.as_tensor(targets))


def recbole_sample(m: NARM, prefix: list[int]) -> torch.Tensor:
    """RecBole's NARM.forward for one prefix, written from its source: the item-space representation s."""
    seq = torch.tensor([prefix])
    gru_out, _ = m.gru(m.item_embedding(seq))
    ht = gru_out[:, -1]
    alpha = m.v_t(torch.sigmoid(m.a_1(gru_out) + m.a_2(ht)[:, None]))
    c_local = (alpha * gru_out).sum(1)
    return m.b(torch.cat([c_local, ht], 1))[0]


def test_all_positions_equal_recbole_per_prefix_samples():
    torch.manual_seed(0)
    m = NARM(40, embedding_size=16, hidden_size=12).double().eval()
    rows = [[5, 17, 3, 39, 22, 8], [9, 2, 30]]
    items = torch.tensor([r + [0] * (6 - len(r)) for r in rows])
    with torch.no_grad():
        h = m.encode(items)
        for b, row in enumerate(rows):
            for j in range(len(row)):
                torch.testing.assert_close(h[b, j], recbole_sample(m, row[:j + 1]), rtol=1e-10, atol=1e-10)


def test_training_lowers_the_loss_and_finds_the_next_item():
    torch.manual_seed(0)
    assert_learns_upward_walks(NARM(31, embedding_size=16, hidden_size=16, embedding_dropout=0.0, context_dropout=0.0))
