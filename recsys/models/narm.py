"""NARM (Li et al., CIKM 2017) as RecBole 1.2.1 ships it: a GRU encoder with attention over the session.

Follows RecBole's `NARM` with its default `narm.yaml`:
    E = item embedding (n_items x 64, padding 0), dropout 0.25;  h = GRU(E) (hidden 128, 1 layer, no bias)
    global encoder  c_g = h_t (the state at the history's last item)
    local encoder   c_l = sum_j alpha_tj h_j,  alpha_tj = v . sigmoid(A1 h_j + A2 h_t) over the real items j
    c = Dropout([c_l; c_g], 0.5);  s = B c (B: 2 x 128 -> 64, no bias);  scores = s . item table (tied)
    init: Xavier normal for the embedding and the linear maps, Xavier uniform for the GRU's matrices;
    full-softmax cross-entropy.

Deviation: RecBole feeds every prefix of a session as its own sample. Here a training window is encoded once and
every position t gets the representation of its own prefix (the attention of position t reads h_0..h_t only, with
h_t as its query), which is the same number a per-prefix sample gives (tested), at O(L^2) attention memory per
window. NARM reads no time.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from recsys.data.batch import SequenceBatch
from recsys.models.base import Recommender

# What NARM is, for every page and the registry (read without importing this file: recsys/catalogue.py).
CARDS = ({"key": "narm", "cls": "NARM", "name": "NARM", "colour": "#17a589", "objectives": ("ranking",),
          "reads_history": True, "live": True, "tiny": {"embedding_size": 16, "hidden_size": 16, "max_len": 20}},)


@dataclass
class NARMConfig:
    embedding_size: int = 64
    hidden_size: int = 128
    n_layers: int = 1
    embedding_dropout: float = 0.25     # RecBole's dropout_probs[0]
    context_dropout: float = 0.5        # RecBole's dropout_probs[1]
    logits_chunk: int = 8192            # rows of full-softmax logits held at once


class NARM(Recommender):
    Config = NARMConfig

    def __init__(self, n_items: int, config: NARMConfig | None = None, **overrides):
        """n_items counts index 0 (padding); `overrides` replace fields of `config` (default: RecBole's)."""
        super().__init__()
        cfg = replace(config or NARMConfig(), **overrides)
        self.config, self.n_items = cfg, n_items
        e, h = cfg.embedding_size, cfg.hidden_size
        self.item_embedding = nn.Embedding(n_items, e, padding_idx=0)
        self.embedding_dropout = nn.Dropout(cfg.embedding_dropout)
        self.gru = nn.GRU(e, h, cfg.n_layers, bias=False, batch_first=True)
        self.a_1, self.a_2 = nn.Linear(h, h, bias=False), nn.Linear(h, h, bias=False)
        self.v_t = nn.Linear(h, 1, bias=False)
        self.context_dropout = nn.Dropout(cfg.context_dropout)
        self.b = nn.Linear(2 * h, e, bias=False)
        for m in self.modules():  # RecBole's NARM._init_weights
            if isinstance(m, (nn.Embedding, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
            elif isinstance(m, nn.GRU):
                for name, p in m.named_parameters():
                    if name.startswith(("weight_ih", "weight_hh")):
                        nn.init.xavier_uniform_(p)

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> NARM:
        return cls(n_items, config.params)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L, e]: at each position t the representation of the prefix items[:, :t+1] (global state h_t and the
        attention of h_t over the real items 0..t), projected to the item space."""
        gru_out, _ = self.gru(self.embedding_dropout(self.item_embedding(items)))      # [B, L, h]
        L = items.shape[1]
        q1 = self.a_1(gru_out)                                                         # keys j
        q2 = self.a_2(gru_out)                                                         # queries t
        visible = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()[None] & (items > 0)[:, None, :]
        alpha = self.v_t(torch.sigmoid(q1[:, None, :, :] + q2[:, :, None, :])).squeeze(-1)  # [B, t, j]
        alpha = alpha * visible
        c_local = alpha @ gru_out                                                      # [B, L, h]
        return self.b(self.context_dropout(torch.cat([c_local, gru_out], -1)))

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        assert batch.items is not None and batch.lengths is not None
        return self.gather_last(self.encode(batch.items), batch.lengths) @ self.item_embedding.weight.T

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """All-positions training loss: position j predicts targets[:, j] from items[:, :j+1] (full softmax)."""
        assert batch.items is not None and batch.targets is not None
        h = self.encode(batch.items)
        return self.next_item_loss(h, batch.targets)


__all__ = ["NARM", "NARMConfig"]
