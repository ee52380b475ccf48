"""GRU4Rec (Hidasi et al. 2016; Tan et al. 2016) as RecBole 1.2.1 ships it, written for this workbench.

Follows RecBole's `GRU4Rec` with its default `gru4rec.yaml`:
    E = item embedding (n_items x 64, padding 0), dropout 0.3 on it;
    a GRU (64 -> 128, 1 layer, no biases, batch first) over the left-aligned history;
    a dense Linear(128 -> 64) on every output; the state at each position scored against the tied item table;
    full-softmax cross-entropy.
Initialisation as RecBole's `_init_weights`: xavier_normal_ on the item embedding (the padding row included),
xavier_uniform_ on the first GRU layer's two weight matrices (weight_ih_l0, weight_hh_l0, each as one matrix over
its three gates); the dense layer and any deeper GRU layer keep PyTorch's default init, as in RecBole.

Deviations (shared with SS4Rec and SASRec):
- The softmax leaves out the padding column 0 (`chunked_softmax_cross_entropy`); RecBole's CE includes it as a
  class that is never a target. Evaluation ignores column 0 either way.
- Training on all positions of a window at once (the GRU is causal and padding sits after the real items, so this
  is identical to RecBole's per-prefix samples for sequences up to max_len + 1). Longer sequences are cut into
  training windows (`recsys.data.batch.training_windows`): by default consecutive ones, so a target early in a
  later window sees a shorter history than RecBole's sliding prefix; overlapping windows narrow or close that gap.
- Like RecBole, the GRU also runs over the padding after each history (no packing): those outputs are never read.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from recsys.data.batch import SequenceBatch
from recsys.models.base import Recommender

# What GRU4Rec is, for every page and the registry (read without importing this file: recsys/catalogue.py).
CARDS = ({"key": "gru4rec", "cls": "GRU4Rec", "name": "GRU4Rec", "colour": "#2ca02c", "objectives": ("ranking",),
          "reads_history": True, "live": True, "tiny": {"embedding_size": 16, "hidden_size": 16, "max_len": 20}},)

@dataclass
class GRU4RecConfig:
    embedding_size: int = 64            # item embedding (and output) width
    hidden_size: int = 128              # GRU state width
    num_layers: int = 1                 # stacked GRU layers
    dropout: float = 0.3                # on the item embeddings fed to the GRU (RecBole's dropout_prob)
    logits_chunk: int = 8192            # rows of full-softmax logits held at once

    def __post_init__(self):
        if int(self.num_layers) < 1:
            raise ValueError(f"num_layers must be at least 1, not {self.num_layers}")


class GRU4Rec(Recommender):
    Config = GRU4RecConfig

    def __init__(self, n_items: int, config: GRU4RecConfig | None = None, **overrides):
        """n_items counts index 0 (padding); `overrides` replace fields of `config` (default: RecBole's)."""
        super().__init__()
        cfg = replace(config or GRU4RecConfig(), **overrides)
        self.config, self.n_items, self.logits_chunk = cfg, n_items, cfg.logits_chunk
        self.item_embedding = nn.Embedding(n_items, cfg.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(input_size=cfg.embedding_size, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                          bias=False, batch_first=True)
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)  # PyTorch default init, as in RecBole
        self._recbole_init()

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> GRU4Rec:
        return cls(n_items, config.params)

    def _recbole_init(self):
        nn.init.xavier_normal_(self.item_embedding.weight)  # the padding row too, as RecBole's init does
        nn.init.xavier_uniform_(self.gru.weight_ih_l0)
        nn.init.xavier_uniform_(self.gru.weight_hh_l0)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Output states [B, L, embedding_size] of every position of left-aligned, 0-padded histories [B, L]."""
        out, _ = self.gru(self.emb_dropout(self.item_embedding(items)))
        return self.dense(out)

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        """Full-catalogue logits [B, n_items] from the state after each history's last item."""
        assert batch.items is not None and batch.lengths is not None
        h = self.encode(batch.items)
        return self.gather_last(h, batch.lengths) @ self.item_embedding.weight.T

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """All-positions training loss: position j predicts targets[:, j] from items[:, :j+1]; full-softmax CE."""
        assert batch.items is not None and batch.targets is not None
        h = self.encode(batch.items)
        return self.next_item_loss(h, batch.targets)


__all__ = ["GRU4Rec", "GRU4RecConfig"]
