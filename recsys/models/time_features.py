"""The one log-scale rule for turning a time gap into an embedding index, shared by every model that embeds gaps
(SASRec's target-gap feature, TiSASRec's `log2` intervals): floor(log2(1 + seconds)), so 0 is the same second, 1 is
1-2 s, ..., 26 about two years; clipped at `top`.

(The dashboard's and documents' gap tables use one rule of their own, in human units: recsys.compare.breakdowns.)
"""
from __future__ import annotations

import torch


def log2_gap_buckets(seconds: torch.Tensor, top: int) -> torch.Tensor:
    """Gaps in seconds (any shape; negative read as 0) -> int64 bucket ids floor(log2(1 + gap)) in 0..top."""
    g = seconds.to(torch.float64).clamp_min(0)
    return torch.floor(torch.log2(1.0 + g)).clamp_(0, top).long()


GAP_BUCKETS = 28  # floor(log2(1 + seconds)): 0 = the same second, 26 = about two years; longer -> the last


def gap_buckets(gaps: torch.Tensor) -> torch.Tensor:
    """Gaps in seconds (any shape, >= 0) -> bucket ids floor(log2(1 + gap)), capped at GAP_BUCKETS - 1: what
    SASRec's target-gap embedding and SS4Rec's gap features look up."""
    return log2_gap_buckets(gaps, GAP_BUCKETS - 1)
