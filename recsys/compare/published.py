"""Published numbers to set beside a reproduction, with the protocol each was measured under and why ours differ
(source: ../shared/docs/ss4rec.md, "Published numbers"). Torch-free data; the answer page shows them under the
verdict of the same dataset and protocol family, never mixed into our tables."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Published:
    dataset: str
    model: str          # registry key of our model it corresponds to
    label: str
    hr10: float
    ndcg10: float
    mrr10: float
    protocol: str       # what was measured
    source: str


PUBLISHED = (
    Published("ml-1m", "ss4rec", "SS4Rec, released code (third-party run)", 0.3467, 0.2022, 0.1579,
              "full ML-1M (6,040 users), length 200, leave-one-out, full ranking, unmasked",
              "postechduck/ss4rec training log"),
    Published("ml-1m", "mamba4rec", "Mamba4Rec (its paper)", 0.3121, 0.1822, 0.1425,
              "full ML-1M, leave-one-out, full ranking, unmasked", "Mamba4Rec paper"),
    Published("ml-1m", "gru4rec", "GRU4Rec (RecBole benchmark)", 0.2776, 0.1545, 0.1171,
              "full ML-1M, length 50, leave-one-out, full ranking, unmasked", "RecBole benchmark tables"),
    Published("ml-1m", "sasrec", "SASRec (RecBole benchmark)", 0.2468, 0.1286, 0.0929,
              "full ML-1M, length 50, leave-one-out, full ranking, unmasked", "RecBole benchmark tables"),
)

WHY_THEY_DIFFER = {
    "ml-1m": ("Ours are ML-1M users 1..2999 (the shared copy lacks timestamps for the rest), so the test users "
              "differ; the RecBole benchmark rows use length 50 and RecBole's recipes, ours length 200 and recipes "
              "chosen on our validation. Compare orders and rough sizes, not digits. Published figures are unmasked "
              "(already-rated movies stay in the ranking): set them beside our unmasked numbers only."),
}


def published_table(dataset: str, ours: dict[str, tuple[float, float, float]] | None = None) -> pd.DataFrame:
    """The published rows of `dataset`, each beside our test numbers of the same model (`ours`: model key ->
    (HR@10, NDCG@10, MRR@10) means, from the unmasked verdict) where we have them."""
    rows = []
    for p in PUBLISHED:
        if p.dataset != dataset:
            continue
        mine = (ours or {}).get(p.model)
        rows.append({"model": p.label, "published NDCG@10": p.ndcg10, "ours NDCG@10": mine[1] if mine else None,
                     "published HR@10": p.hr10, "ours HR@10": mine[0] if mine else None,
                     "published MRR@10": p.mrr10, "ours MRR@10": mine[2] if mine else None,
                     "published under": p.protocol, "source": p.source})
    return pd.DataFrame(rows)


__all__ = ["PUBLISHED", "WHY_THEY_DIFFER", "Published", "published_table"]
