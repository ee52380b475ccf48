"""TiSASRec (Li, Wang & McAuley, WSDM 2020): self-attention that reads the time intervals between history items.

The paper's architecture (RecBole 1.2.1 has no TiSASRec), as its authors' code builds it:
    E = item embedding x sqrt(d), dropout, padding zeroed;
    per block (pre-norm):  Q = LN(h);  h = Q + TimeAwareAttention(Q, h);  h = FFN(LN(h)) with residual;  padding 0
        scores_ij = Q_i . (K_j + PosK_j + TimeK[r_ij]) / sqrt(d_head),   j <= i, j a real item
        out_i     = sum_j softmax(scores)_ij (V_j + PosV_j + TimeV[r_ij])
    with learned absolute position embeddings for keys and values (PosK, PosV) and learned embeddings of the
    relative interval r_ij for keys and values (TimeK, TimeV); a final LayerNorm; the state at each position
    scored against the tied item table. Paper defaults: d = 50, 2 blocks, 1 head, dropout 0.2, time_span 256.

The interval (`interval: personal`, the paper's): r_ij = min(floor(|t_i - t_j| / m), time_span), m the user's
smallest non-zero gap between consecutive ratings. History only: the time of the interaction being predicted is
never read (TiSASRec is the time-aware baseline that does not get SS4Rec's target gap). `interval: log2` (a named
option): r_ij = min(floor(log2(1 + |t_i - t_j| seconds)), time_span), the raw-second scale SASRec's gap embedding
uses, without the per-user unit.

Deviations, each for causality or cost, none changing what the model can read:
- m is the smallest non-zero gap among the items up to the query (a running minimum), not over the user's whole
  training sequence: the paper's m lets an early position's intervals depend on later gaps; ours keeps every output
  a function of its prefix, so all-positions training equals per-prefix samples (tested) and nothing leaks.
- The interval terms are computed per bucket (Q . TimeK over the time_span + 1 buckets, gathered by r_ij; the
  attention weights summed per bucket, times TimeV) instead of materialising a [B, L, L, d] tensor: the same sums,
  O(B L (L + span) d) memory instead of O(B L^2 d) (a reference test compares the two). Dropout on the four
  position / interval tables is applied to each table row, not to each gathered (i, j) copy.
- Full-softmax cross-entropy over the catalogue (as every model here) instead of the paper's one sampled negative.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from recsys.data.batch import SequenceBatch
from recsys.models.base import Recommender
from recsys.models.time_features import log2_gap_buckets

# What TiSASRec is, for every page and the registry (read without importing this file: recsys/catalogue.py).
CARDS = ({
    "key": "tisasrec", "cls": "TiSASRec", "name": "TiSASRec", "colour": "#ff7f0e", "objectives": ("ranking",),
    "reads_history": True, "live": True,
    "tiny": {"hidden_size": 16, "n_layers": 1, "n_heads": 2, "time_span": 16, "max_len": 20},
    "settings": {
        "interval": {"released": "personal", "meanings": {
            "log2": "intervals in raw seconds, log2-bucketed (not divided by the user's smallest gap)"}},
    },
},)

INTERVALS = ("personal", "log2")


@dataclass
class TiSASRecConfig:
    hidden_size: int = 50               # the paper's d
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2                # on the input, the attention weights, the tables and the feed-forward
    time_span: int = 256                # intervals are clipped at this many units (paper: 256 on ML-1M)
    interval: str = "personal"          # personal (paper: |t_i - t_j| / the user's smallest gap) | log2 (seconds)
    layer_norm_eps: float = 1e-8
    logits_chunk: int = 8192            # rows of full-softmax logits held at once

    def __post_init__(self):
        if self.interval not in INTERVALS:
            raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, not {self.interval!r}")
        if int(self.n_heads) < 1 or int(self.hidden_size) % int(self.n_heads):
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of n_heads ({self.n_heads})")


def interval_matrix(timestamps: torch.Tensor, lengths: torch.Tensor, time_span: int,
                    interval: str = "personal") -> torch.Tensor:
    """r [B, L, L] (int64): the interval bucket between query i and key j of left-aligned histories. `personal`:
    floor(|t_i - t_j| / m_i) with m_i the smallest non-zero consecutive gap among items 0..i (1 s where there is
    none yet); `log2`: floor(log2(1 + |t_i - t_j|)). Clipped at time_span; 0 wherever i or j is padding."""
    t = timestamps.to(torch.float64)
    L = t.shape[1]
    valid = torch.arange(L, device=t.device)[None] < lengths.to(t.device)[:, None]
    diff = (t[:, :, None] - t[:, None, :]).abs()
    if interval == "log2":
        r = log2_gap_buckets(diff, time_span)
    else:
        gaps = torch.zeros_like(t)
        gaps[:, 1:] = t[:, 1:] - t[:, :-1]
        usable = (gaps > 0) & valid
        usable[:, 0] = False
        m = torch.where(usable, gaps, torch.full_like(gaps, math.inf)).cummin(dim=1).values
        m = torch.where(torch.isfinite(m), m, torch.ones_like(m))
        r = torch.floor(diff / m[:, :, None]).clamp_(0, time_span).long()
    return r.masked_fill_(~(valid[:, :, None] & valid[:, None, :]), 0)


class TimeAwareAttention(nn.Module):
    """Multi-head attention with absolute-position and relative-interval terms on keys and values."""

    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.head_size = n_heads, hidden // n_heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, d] -> [B, H, L, dh]
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.head_size).transpose(1, 2)

    def _table(self, table: torch.Tensor) -> torch.Tensor:  # [N, d] -> [H, N, dh]
        return table.view(table.shape[0], self.n_heads, self.head_size).transpose(0, 1)

    def forward(self, q_in, kv_in, visible, r, pos_k, pos_v, time_k, time_v):
        """q_in, kv_in [B, L, d]; visible [B, 1, L, L]; r [B, L, L]; pos_* [L, d]; time_* [span + 1, d]."""
        q, k, v = self._heads(self.query(q_in)), self._heads(self.key(kv_in)), self._heads(self.value(kv_in))
        B, H, L, dh = q.shape
        rr = r[:, None].expand(B, H, L, L)
        scores = q @ (k + self._table(pos_k)[None]).transpose(-1, -2)
        scores = scores + torch.gather(q @ self._table(time_k)[None].transpose(-1, -2), -1, rr)
        scores = (scores / math.sqrt(dh)).masked_fill(~visible, torch.finfo(scores.dtype).min)
        probs = self.dropout(torch.softmax(scores, dim=-1))
        out = probs @ (v + self._table(pos_v)[None])
        per_bucket = torch.zeros(B, H, L, time_v.shape[0], dtype=probs.dtype, device=probs.device)
        out = out + per_bucket.scatter_add_(-1, rr, probs) @ self._table(time_v)[None]
        return out.transpose(1, 2).reshape(B, L, H * dh)


class PointWiseFeedForward(nn.Module):
    """The paper's feed-forward: Dense, dropout, ReLU, Dense, dropout, plus the input."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.dense_1, self.dense_2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.dropout(self.dense_2(torch.relu(self.dropout(self.dense_1(h)))))


class TiSASRec(Recommender):
    Config = TiSASRecConfig

    def __init__(self, n_items: int, config: TiSASRecConfig | None = None, max_len: int = 50, **overrides):
        """n_items counts index 0 (padding); max_len is the number of learned positions (the run's max_len)."""
        super().__init__()
        cfg = replace(config or TiSASRecConfig(), **overrides)
        self.config, self.n_items, self.max_len = cfg, n_items, int(max_len)
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.item_embedding = nn.Embedding(n_items, d, padding_idx=0)
        self.pos_k, self.pos_v = nn.Embedding(self.max_len, d), nn.Embedding(self.max_len, d)
        self.time_k, self.time_v = nn.Embedding(cfg.time_span + 1, d), nn.Embedding(cfg.time_span + 1, d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.attention_norms = nn.ModuleList(nn.LayerNorm(d, eps=eps) for _ in range(cfg.n_layers))
        self.attentions = nn.ModuleList(TimeAwareAttention(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers))
        self.forward_norms = nn.ModuleList(nn.LayerNorm(d, eps=eps) for _ in range(cfg.n_layers))
        self.feed_forwards = nn.ModuleList(PointWiseFeedForward(d, cfg.dropout) for _ in range(cfg.n_layers))
        self.last_norm = nn.LayerNorm(d, eps=eps)
        for p in self.parameters():  # the authors' code: Xavier normal for every matrix
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> TiSASRec:
        return cls(n_items, config.params, max_len=int(config.train.max_len))

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, d] of every position of left-aligned, 0-padded histories."""
        L = items.shape[1]
        if self.max_len < L:
            raise ValueError(f"histories of {L} positions, but TiSASRec was built with max_len={self.max_len}")
        if timestamps is None:
            raise ValueError("TiSASRec needs the history's times")
        real = (items > 0)[..., None]
        h = self.dropout(self.item_embedding(items) * math.sqrt(self.config.hidden_size)) * real
        positions = torch.arange(L, device=items.device)
        pos_k, pos_v = self.dropout(self.pos_k(positions)), self.dropout(self.pos_v(positions))
        time_k, time_v = self.dropout(self.time_k.weight), self.dropout(self.time_v.weight)
        r = interval_matrix(timestamps, lengths, self.config.time_span, self.config.interval)
        causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
        visible = (causal[None] & (items > 0)[:, None, :])[:, None]
        for norm, attention, fnorm, ffn in zip(self.attention_norms, self.attentions, self.forward_norms,
                                               self.feed_forwards):
            q = norm(h)
            h = q + attention(q, h, visible, r, pos_k, pos_v, time_k, time_v)
            h = ffn(fnorm(h)) * real
        return self.last_norm(h)

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        """Full-catalogue logits [B, n_items] from the state at each history's last item (history times only)."""
        assert batch.items is not None and batch.timestamps is not None and batch.lengths is not None
        h = self.encode(batch.items, batch.timestamps, batch.lengths)
        return self.gather_last(h, batch.lengths) @ self.item_embedding.weight.T

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """All-positions training loss: position j predicts targets[:, j] from items[:, :j+1] (full softmax)."""
        assert batch.items is not None and batch.timestamps is not None and batch.lengths is not None
        assert batch.targets is not None
        h = self.encode(batch.items, batch.timestamps, batch.lengths)
        return self.next_item_loss(h, batch.targets)


__all__ = ["TiSASRec", "TiSASRecConfig", "interval_matrix"]
