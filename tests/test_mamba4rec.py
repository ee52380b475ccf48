"""Mamba4Rec (issue 23) as released: no residual around a single Mamba layer and one around stacked ones, RecBole's
init on the Mamba projections, and learning. Its contract (card, padding, save/restore, Compare) is generated in
tests/test_contracts.py."""
from __future__ import annotations

import torch

from recsys.data.batch import SequenceBatch
from recsys.models.mamba4rec import Mamba4Rec
from tests.helpers import assert_learns_upward_walks


def batch(items, lengths, targets=None) -> SequenceBatch:
    items = torch.as_tensor(items)
    return SequenceBatch(users=torch.zeros(len(items), dtype=torch.long), items=items, lengths=torch.as_tensor(lengths),
                         targets=None if targets is None else torch.as_tensor(targets))


def test_one_layer_has_no_residual_around_mamba_and_stacked_layers_do():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    for layers, residual in ((1, False), (2, True)):
        m = Mamba4Rec(30, hidden_size=16, num_layers=layers, d_state=8, dropout=0.0).double().eval()
        layer = m.layers[0]
        assert layer.residual is residual
        with torch.no_grad():
            layer.mamba.out_proj.weight.zero_()  # Mamba now outputs 0
            out = layer(x)
        expected = layer.ffn(layer.norm(x if residual else torch.zeros_like(x)))
        torch.testing.assert_close(out, expected)


def test_recbole_init_reaches_the_mamba_projections():
    torch.manual_seed(0)
    m = Mamba4Rec(500, hidden_size=64)
    mamba = m.layers[0].mamba
    assert torch.count_nonzero(mamba.dt_proj.bias) == 0  # the step starts at softplus(0), as released
    for w in (mamba.in_proj.weight, mamba.x_proj.weight, mamba.out_proj.weight, m.item_embedding.weight):
        assert abs(float(w.detach().std()) - 0.02) < 0.004


def test_training_lowers_the_loss_and_finds_the_next_item():
    torch.manual_seed(0)
    assert_learns_upward_walks(Mamba4Rec(31, hidden_size=16, d_state=8, dropout=0.0))
