"""What a run's configuration changes from the released SS4Rec (or from plain SASRec), read from its configuration
(never from its variant's name), and whether it is an ablation: evidence for "why" (recsys.compare.ablations), not a
candidate for the headline comparison (recsys.compare.answer)."""
from __future__ import annotations

from recsys import catalogue


def changes(info: dict) -> list[str]:
    """What a run's configuration changes from the released one of its model, in words (from the model's card,
    recsys/catalogue.py: SS4Rec's gaps, layers and time scaling; SASRec's target-gap embedding; ...)."""
    return catalogue.changes(info)


def is_ablation(info: dict) -> bool:
    """A configuration that takes a part of a model away (SS4Rec's layer, gaps or target time), or gives a baseline
    SS4Rec's target-time input: evidence for "why", never a candidate for the headline comparison."""
    return catalogue.is_ablation(info)


def reads_target_time(info: dict) -> bool:
    """Whether the model's score depends on the time of the interaction it predicts."""
    return catalogue.reads_target_time(info)
