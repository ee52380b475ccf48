"""Mamba4Rec (Liu et al. 2024) as released: a sequential recommender of Mamba layers, each followed by a
position-wise feed-forward, on RecBole's SequentialRecommender.

    E = item embedding (n_items x 64, padding 0), dropout, LayerNorm (eps 1e-12)
    per layer:  m = Mamba(h) (d_state 32, d_conv 4, expand 2)
                h = LN(Dropout(m))        with one layer (the released ML-1M setting: no residual around Mamba)
                h = LN(Dropout(m) + h)    with stacked layers
                h = LN(h + Dropout(W2 Dropout(GELU(W1 h))))   inner size 4 x hidden
    the state at each history's last item scored against the tied item table; full-softmax cross-entropy;
    RecBole's init applied to every Linear and Embedding (N(0, 0.02), biases 0), the Mamba projections included,
    as the released code's `self.apply(self._init_weights)` does (dt_proj's bias zeroed: the step starts at
    softplus(0), like SS4Rec's released init).

It reads no time at all: the Mamba layer is SS4Rec's relation-aware half without the time-aware S5 (our `mamba-only`
SS4Rec ablation keeps SS4Rec's block structure instead; this is the model its authors released). On our Mamba layer,
so the native CPU kernels and mamba-ssm on CUDA serve it too. Released defaults: hidden 64, 1 layer, dropout 0.2.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.batch import SequenceBatch
from recsys.models.base import Recommender
from recsys.models.mamba import Mamba

# What Mamba4Rec is, for every page and the registry (read without importing this file: recsys/catalogue.py).
CARDS = ({
    "key": "mamba4rec", "cls": "Mamba4Rec", "name": "Mamba4Rec", "colour": "#e7ba52", "objectives": ("ranking",),
    "reads_history": True, "live": True,
    "tiny": {"hidden_size": 16, "num_layers": 2, "d_state": 8, "max_len": 20},
},)


@dataclass
class Mamba4RecConfig:
    hidden_size: int = 64
    num_layers: int = 1                 # released ML-1M setting (one layer: no residual around Mamba)
    dropout: float = 0.2
    d_state: int = 32
    d_conv: int = 4
    expand: int = 2
    logits_chunk: int = 8192            # rows of full-softmax logits held at once


class FeedForward(nn.Module):
    """The released position-wise feed-forward: W1, GELU, dropout, W2, dropout, residual, LayerNorm."""

    def __init__(self, d: int, inner: int, dropout: float):
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d, inner), nn.Linear(inner, d)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.w_2(self.dropout(F.gelu(self.w_1(x))))) + x)


class MambaLayer(nn.Module):
    def __init__(self, d: int, d_state: int, d_conv: int, expand: int, dropout: float, residual: bool):
        super().__init__()
        self.mamba = Mamba(d_model=d, d_state=d_state, d_conv=d_conv, expand=expand)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d, eps=1e-12)
        self.ffn = FeedForward(d, 4 * d, dropout)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.mamba(x))
        return self.ffn(self.norm(h + x if self.residual else h))


class Mamba4Rec(Recommender):
    Config = Mamba4RecConfig

    def __init__(self, n_items: int, config: Mamba4RecConfig | None = None, **overrides):
        """n_items counts index 0 (padding); `overrides` replace fields of `config` (default: the released)."""
        super().__init__()
        cfg = replace(config or Mamba4RecConfig(), **overrides)
        self.config, self.n_items = cfg, n_items
        d = cfg.hidden_size
        self.item_embedding = nn.Embedding(n_items, d, padding_idx=0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(MambaLayer(d, cfg.d_state, cfg.d_conv, cfg.expand, cfg.dropout,
                                               residual=cfg.num_layers > 1) for _ in range(cfg.num_layers))
        for m in self.modules():  # RecBole's _init_weights, applied to every module as the released code does
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> Mamba4Rec:
        return cls(n_items, config.params)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, d] of every position of left-aligned, 0-padded histories (causal)."""
        h = self.norm(self.dropout(self.item_embedding(items)))
        for layer in self.layers:
            h = layer(h)
        return h

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        assert batch.items is not None and batch.lengths is not None
        return self.gather_last(self.encode(batch.items), batch.lengths) @ self.item_embedding.weight.T

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """All-positions training loss: position j predicts targets[:, j] from items[:, :j+1] (full softmax)."""
        assert batch.items is not None and batch.targets is not None
        h = self.encode(batch.items)
        return self.next_item_loss(h, batch.targets)


__all__ = ["Mamba4Rec", "Mamba4RecConfig"]
