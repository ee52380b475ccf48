"""SASRec (Kang & McAuley, ICDM 2018) as RecBole 1.2.1 ships it, written for this workbench.

Follows RecBole's `SASRec` with its default `sasrec.yaml`:
    E = item embedding (n_items x 64, padding 0) + learned positional embedding (max_len positions; position 0 is
    the oldest item of the left-aligned history), then LayerNorm (eps 1e-12) and dropout 0.5;
    2 post-norm transformer blocks (RecBole's TransformerEncoder, BERT-style):
        a = LN(h + Dropout(Dense(MultiHeadAttention(h))))          2 heads, attention-probability dropout 0.5
        h = LN(a + Dropout(Dense(GELU(Dense(a)))))                   inner size 256
    with a causal mask and a key-padding mask; the hidden state at each position scored against the tied item table;
    every Linear/Embedding N(0, 0.02) (the padding row included, as RecBole does), biases 0, LayerNorm 1/0;
    full-softmax cross-entropy.

Deviations (shared with SS4Rec, see recsys/models/ss4rec.py):
- The softmax leaves out the padding column 0 (`chunked_softmax_cross_entropy`); RecBole's CE includes it as a
  class that is never a target. Evaluation ignores column 0 either way.
- Training on all positions of a window at once (causal, so identical to RecBole's per-prefix samples for
  sequences up to max_len + 1). Longer sequences are cut into training windows (`recsys.data.batch.
  training_windows`): by default consecutive ones, so a target early in a later window sees a shorter history (and
  other position ids) than RecBole's sliding prefix would give it; overlapping windows narrow or close that gap.
- `target_gap_embedding` (default off; issue 12's `sasrec-target-time` variant): SASRec given the time information
  SS4Rec gets. At each position k a learned embedding of the gap after item k (t_{k+1} - t_k; at a history's last
  item the gap to the interaction being predicted) is added to the input, bucketed by floor(log2(1 + seconds))
  (bucket 0: the same second, ..., 26: about two years, longer gaps in the last bucket). Under the causal mask the
  output at position j sees the gaps after items 0..j: exactly what SS4Rec's S5 reads at j.
- Masked attention scores are set to the dtype's lowest value instead of RecBole's additive -10000; the softmax is
  the same (exp underflows to 0 either way), and a row with no visible key (an all-padding history) gets uniform
  weights instead of NaN, like RecBole's.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.batch import SequenceBatch
from recsys.data.history import gaps_after
from recsys.models.base import Recommender
from recsys.models.losses import chunked_softmax_cross_entropy
from recsys.models.rating_aware import RatingSide, joint_loss
from recsys.models.time_features import GAP_BUCKETS, gap_buckets

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu, "relu": F.relu, "swish": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


# What SASRec is, for every page and the registry (read without importing this file: recsys/catalogue.py).
CARDS = ({
    "key": "sasrec", "cls": "SASRec", "name": "SASRec", "colour": "#1f77b4",
    "objectives": ("ranking", "rating"),  # rating: the rating-aware variant (rating_input)
    "reads_history": True, "live": True,
    "tiny": {"hidden_size": 16, "n_layers": 1, "n_heads": 2, "inner_size": 32, "max_len": 20},
    "target_time": {"target_gap_embedding": (True,)},
    "settings": {
        "target_gap_embedding": {"released": False, "ablation": True, "meanings": {
            True: "SASRec given the same target-gap information as SS4Rec: a log2-bucketed embedding of the gap "
                  "after each item (the target's at the last)"}},
    },
},)

@dataclass
class SASRecConfig:
    hidden_size: int = 64               # item/position embedding and block width
    n_layers: int = 2                   # transformer blocks
    n_heads: int = 2                    # attention heads (hidden_size must divide by it)
    inner_size: int = 256               # feed-forward width
    hidden_dropout: float = 0.5         # on the input embedding, after attention and after the feed-forward
    attn_dropout: float = 0.5           # on the attention probabilities
    hidden_act: str = "gelu"            # gelu | relu | swish | tanh | sigmoid (feed-forward activation)
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02     # std of the normal init of every Linear/Embedding
    logits_chunk: int = 8192            # rows of full-softmax logits held at once
    target_gap_embedding: bool = False  # add a log2-bucketed embedding of the gap after each item (target's at the end)
    rating_input: bool = False          # rating-aware (issue 13): reads the history's ratings, predicts the next one
    rating_skip: bool = True            # rating-aware read-out adds a learned decayed mean of recent residuals
    rating_bias_init: bool = False      # rating-aware: start mean and item biases from the bias floor's fit
    ce_weight: float = 1.0              # weight of the next-item cross-entropy (0: a pure rating model)
    rating_weight: float = 1.0          # weight of the rating MSE (rating-aware only)

    def __post_init__(self):
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {', '.join(_ACTIVATIONS)}, not {self.hidden_act!r}")
        if int(self.n_heads) < 1 or int(self.hidden_size) % int(self.n_heads):
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of n_heads ({self.n_heads})")
        if not float(self.ce_weight) >= 0 or not float(self.rating_weight) >= 0:
            raise ValueError("ce_weight and rating_weight must be >= 0")


class MultiHeadSelfAttention(nn.Module):
    """RecBole's MultiHeadAttention: softmax(QK^T / sqrt(d_head) + mask) V, dense, dropout, residual, LayerNorm."""

    def __init__(self, hidden: int, n_heads: int, hidden_dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        self.n_heads, self.head_size = n_heads, hidden // n_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out_dropout = nn.Dropout(hidden_dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, d] -> [B, heads, L, d_head]
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.head_size).transpose(1, 2)

    def forward(self, h: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """h [B, L, d]; visible [B, 1, L, L] bool, True where query i may attend to key j."""
        q, k, v = self._heads(self.query(h)), self._heads(self.key(h)), self._heads(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)
        scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
        probs = self.attn_dropout(torch.softmax(scores, dim=-1))
        context = torch.matmul(probs.to(v.dtype), v).transpose(1, 2).reshape(h.shape[0], h.shape[1], -1)
        return self.norm(h + self.out_dropout(self.dense(context)))


class FeedForward(nn.Module):
    """RecBole's FeedForward: Dense(inner), activation, Dense back, dropout, residual, LayerNorm."""

    def __init__(self, hidden: int, inner: int, dropout: float, act: str, eps: float):
        super().__init__()
        self.dense_1 = nn.Linear(hidden, inner)
        self.dense_2 = nn.Linear(inner, hidden)
        self.act = _ACTIVATIONS[act]
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h + self.dropout(self.dense_2(self.act(self.dense_1(h)))))


class BlockConfig(Protocol):
    """What a TransformerBlock reads of its model's config (SASRec's, BERT4Rec's)."""

    hidden_size: int
    n_heads: int
    inner_size: int
    hidden_dropout: float
    attn_dropout: float
    hidden_act: str
    layer_norm_eps: float


class TransformerBlock(nn.Module):
    def __init__(self, cfg: BlockConfig):
        super().__init__()
        self.attention = MultiHeadSelfAttention(cfg.hidden_size, cfg.n_heads, cfg.hidden_dropout, cfg.attn_dropout,
                                                cfg.layer_norm_eps)
        self.feed_forward = FeedForward(cfg.hidden_size, cfg.inner_size, cfg.hidden_dropout, cfg.hidden_act,
                                        cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.attention(h, visible))


class SASRec(Recommender):
    Config = SASRecConfig

    def __init__(self, n_items: int, config: SASRecConfig | None = None, max_len: int = 50, **overrides):
        """n_items counts index 0 (padding); max_len is the number of learned positions (the run's max_len);
        `overrides` replace fields of `config` (default: RecBole's)."""
        super().__init__()
        cfg = replace(config or SASRecConfig(), **overrides)
        self.config, self.n_items, self.max_len = cfg, n_items, int(max_len)
        self.logits_chunk = cfg.logits_chunk
        self.item_embedding = nn.Embedding(n_items, cfg.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_len, cfg.hidden_size)
        self.gap_embedding = nn.Embedding(GAP_BUCKETS, cfg.hidden_size) if cfg.target_gap_embedding else None
        self.input_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.input_dropout = nn.Dropout(cfg.hidden_dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.rating_side = RatingSide(n_items, cfg.hidden_size, cfg.rating_skip) if cfg.rating_input else None
        self.ce_weight, self.rating_weight = float(cfg.ce_weight), float(cfg.rating_weight)
        self._recbole_init(cfg.initializer_range)
        if self.rating_side is not None:
            self.rating_side.reset_parameters()

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> SASRec:
        return cls(n_items, config.params, max_len=int(config.train.max_len))

    def _recbole_init(self, std: float):
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=std)  # the padding row too, as RecBole's init does
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def has_rating(self) -> bool:
        return self.rating_side is not None

    def init_from_data(self, task) -> None:
        if self.rating_side is not None:
            self.rating_side.init_from_data(task, self.config.rating_bias_init)

    @staticmethod
    def attention_mask(items: torch.Tensor) -> torch.Tensor:
        """[B, 1, L, L] bool: query i sees key j when j <= i (causal) and j is a real item (not padding)."""
        L = items.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
        return (causal[None] & (items > 0)[:, None, :])[:, None]

    def encode(self, items: torch.Tensor, batch: SequenceBatch | None = None) -> torch.Tensor:
        """Hidden states [B, L, d] of every position of left-aligned, 0-padded histories items [B, L] (with
        `target_gap_embedding`, `batch` supplies the times)."""
        L = items.shape[1]
        if self.max_len < L:
            raise ValueError(f"histories of {L} positions, but SASRec was built with max_len={self.max_len}")
        positions = torch.arange(L, device=items.device)
        h = self.item_embedding(items) + self.position_embedding(positions)[None]
        if self.rating_side is not None:
            h = h + self.rating_side.read(items, None if batch is None else batch.ratings)
        if self.gap_embedding is not None:
            if batch is None or batch.timestamps is None or batch.target_times is None:
                raise ValueError("SASRec with target_gap_embedding needs the history's times and the target's time")
            h = h + self.gap_embedding(gap_buckets(gaps_after(batch.timestamps, batch.lengths, batch.target_times)))
        h = self.input_dropout(self.input_norm(h))
        visible = self.attention_mask(items)
        for block in self.blocks:
            h = block(h, visible)
        return h

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        """Full-catalogue logits [B, n_items] from the state at each history's last item."""
        assert batch.items is not None and batch.lengths is not None
        h = self.encode(batch.items, batch)
        return self.gather_last(h, batch.lengths) @ self.item_embedding.weight.T

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """All-positions training loss: position j predicts targets[:, j] from items[:, :j+1]; ce_weight x the
        full-softmax CE, plus (rating-aware) rating_weight x the MSE of the rating of targets[:, j]."""
        assert batch.items is not None and batch.targets is not None
        h = self.encode(batch.items, batch)
        valid = batch.targets > 0
        hv, tv = h[valid], batch.targets[valid]
        ce = (chunked_softmax_cross_entropy(hv, self.item_embedding.weight, tv, self.logits_chunk)
              if self.ce_weight else None)
        pred = target = None
        if self.rating_side is not None and batch.target_ratings is not None:
            offset = self.rating_side.offsets(batch.items, batch.ratings)
            pred = self.rating_side.predict(hv, self.item_embedding(tv), tv, None if offset is None else offset[valid])
            target = batch.target_ratings[valid]
        return joint_loss(ce, self.ce_weight, pred, target, self.rating_weight if self.rating_side else 0.0)

    def predict_rating(self, batch: SequenceBatch) -> torch.Tensor:
        """The rating of `batch.targets` from the state after each history (rating-aware runs)."""
        if self.rating_side is None:
            return super().predict_rating(batch)
        assert batch.items is not None and batch.lengths is not None and batch.targets is not None
        state = self.gather_last(self.encode(batch.items, batch), batch.lengths)
        return self.rating_side.predict(state, self.item_embedding(batch.targets), batch.targets,
                                        self.rating_side.last_offset(batch))


__all__ = ["SASRec", "SASRecConfig"]
