"""BERT4Rec (Sun et al., CIKM 2019) as RecBole 1.2.1 ships it: a bidirectional transformer trained by cloze.

Follows RecBole's `BERT4Rec` with its default `bert4rec.yaml`:
    E = item embedding (n_items + 1 rows: the last is the [MASK] token) + learned positions (max_len + 1: room for
    the [MASK] appended at evaluation), LayerNorm (eps 1e-12), dropout 0.2;
    2 post-norm transformer blocks (the same block as SASRec's, 2 heads, inner 256, GELU, dropout 0.2) with a
    key-padding mask and no causal mask (every position sees the whole history);
    output head: LN(GELU(Dense(h))) . item table (tied) + a per-item bias; N(0, 0.02) init.
    Training (cloze): each real position of a training window is replaced by [MASK] with probability 0.2 (RecBole's
    mask_ratio; a window where none was drawn gets its last item masked), and the masked items are predicted with
    the full-softmax cross-entropy. Evaluation: [MASK] appended after the history; its output scores the catalogue.

Deviations: training windows are our windows (RecBole masks each sample's history); a window with no drawn mask
masks its last item instead of contributing nothing. BERT4Rec reads no time.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.batch import SequenceBatch
from recsys.models.base import Recommender
from recsys.models.losses import chunked_softmax_cross_entropy
from recsys.models.sasrec import TransformerBlock

# What BERT4Rec is, for every page and the registry (read without importing this file: recsys/catalogue.py).
CARDS = ({"key": "bert4rec", "cls": "BERT4Rec", "name": "BERT4Rec", "colour": "#393b79", "objectives": ("ranking",),
          "reads_history": True, "live": True,
          "tiny": {"hidden_size": 16, "n_layers": 1, "n_heads": 2, "inner_size": 32, "max_len": 20}},)


@dataclass
class BERT4RecConfig:
    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    hidden_dropout: float = 0.2
    attn_dropout: float = 0.2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    mask_ratio: float = 0.2             # the share of a window's items replaced by [MASK] in training
    logits_chunk: int = 8192            # rows of full-softmax logits held at once

    def __post_init__(self):
        if int(self.n_heads) < 1 or int(self.hidden_size) % int(self.n_heads):
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of n_heads ({self.n_heads})")
        if not 0 < float(self.mask_ratio) < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), not {self.mask_ratio}")


class BERT4Rec(Recommender):
    Config = BERT4RecConfig

    def __init__(self, n_items: int, config: BERT4RecConfig | None = None, max_len: int = 50, **overrides):
        """n_items counts index 0 (padding); the [MASK] token is item n_items (an extra embedding row)."""
        super().__init__()
        cfg = replace(config or BERT4RecConfig(), **overrides)
        self.config, self.n_items, self.max_len = cfg, n_items, int(max_len)
        self.mask_token = n_items
        d = cfg.hidden_size
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_len + 1, d)
        self.input_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.input_dropout = nn.Dropout(cfg.hidden_dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.output_ffn = nn.Linear(d, d)
        self.output_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        for m in self.modules():  # RecBole's _init_weights
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=cfg.initializer_range)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> BERT4Rec:
        return cls(n_items, config.params, max_len=int(config.train.max_len))

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Output states [B, L, d] of 0-padded inputs (real items and [MASK] tokens), every position seeing all."""
        L = items.shape[1]
        if self.max_len + 1 < L:
            raise ValueError(f"inputs of {L} positions, but BERT4Rec was built with max_len={self.max_len}")
        h = self.item_embedding(items) + self.position_embedding(torch.arange(L, device=items.device))[None]
        h = self.input_dropout(self.input_norm(h))
        visible = (items > 0)[:, None, None, :].expand(-1, 1, L, -1)
        for block in self.blocks:
            h = block(h, visible)
        return self.output_norm(F.gelu(self.output_ffn(h)))

    def _table(self) -> torch.Tensor:
        """[n_items, d + 1]: the item table with the output bias as its last column (h is given a 1 to match)."""
        return torch.cat([self.item_embedding.weight[:self.n_items], self.output_bias[:, None]], 1)

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        """Logits [B, n_items] at a [MASK] appended after each history (the positions after it are padding)."""
        items, lengths = batch.items, batch.lengths
        assert items is not None and lengths is not None
        B, L = items.shape
        pos = torch.arange(L + 1, device=items.device)[None]
        padded = torch.cat([items, items.new_zeros(B, 1)], 1)
        inputs = torch.where(pos < lengths[:, None], padded, torch.zeros_like(padded))
        inputs = torch.where(pos == lengths[:, None], torch.full_like(padded, self.mask_token), inputs)
        h = self.gather_last(self.encode(inputs), lengths + 1)
        return torch.cat([h, h.new_ones(B, 1)], 1) @ self._table().T

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """Cloze loss: each real item masked with probability mask_ratio (the last one when none was drawn), the
        masked items predicted with the full-softmax cross-entropy."""
        items = batch.items
        assert items is not None
        real = items > 0
        masked = (torch.rand(items.shape, device=items.device) < self.config.mask_ratio) & real
        none = ~masked.any(1) & real.any(1)
        last = (real.sum(1) - 1).clamp_min(0)
        masked[none, last[none]] = True
        h = self.encode(torch.where(masked, torch.full_like(items, self.mask_token), items))
        hm = h[masked]
        return chunked_softmax_cross_entropy(torch.cat([hm, hm.new_ones(len(hm), 1)], 1), self._table(),
                                             items[masked], self.config.logits_chunk)


__all__ = ["BERT4Rec", "BERT4RecConfig"]
