"""What a run's configuration changes from the released SS4Rec (or from plain SASRec), read from its configuration
(never from its variant's name), and whether it is an ablation: evidence for "why" (recsys.compare.ablations), not a
candidate for the headline comparison (recsys.compare.answer)."""
from __future__ import annotations

import math
from typing import Any

# SS4Rec's settings an ablation may change, their released values, and what a change means
_SS4REC = {
    "target_gap": ("given", {
        "withheld": "the gap to the predicted interaction withheld: each output is read after the median non-zero "
                    "training gap instead (what a deployed recommender knows)"}),
    "gap_ablation": ("none", {
        "zero": "every gap 0: with zero-order hold the S5 state then never changes, so only its feed-through "
                "D·u is left (the S5 becomes a per-position linear map)",
        "constant": "every gap set to the median non-zero training gap: time-blind, order kept",
        "shuffled": "each history's gaps permuted: the same gaps in the wrong places"}),
    "blocks": ("s5+mamba", {
        "s5": "blocks without the Mamba layer (S5 only)",
        "mamba": "blocks without the S5 layer (Mamba only, close to Mamba4Rec; reads no time at all)"}),
    "time_transform": ("none", {"log1p": "gaps log1p-scaled (long gaps keep some weight)"}),
    "time_normalise": ("none", {"span": "gaps divided by the data's time span (RecBole's ml-100k setting)"}),
    "time_unit": (1.0, {}),
    "float32_timestamps": (False, {True: "timestamps rounded to float32 like RecBole"}),
    "mamba_dt_init": ("released", {"mamba": "Mamba's own step-size initialisation kept"}),
    "rating_head": (False, {True: "a joint rating head (our addition)"}),
    "rating_input": (False, {True: "reads the history's ratings and predicts the next one (rating-aware, issue 13)"}),
}
TARGET_GAP_SASREC = ("SASRec given the same target-gap information as SS4Rec: a log2-bucketed embedding of the gap "
                     "after each item (the target's at the last)")
def changes(info: dict) -> list[str]:
    """What a run's configuration changes from the released SS4Rec (or, for SASRec, from plain SASRec), in words."""
    cfg = info.get("config") or {}
    out = []
    if info.get("model") == "ss4rec":
        for key, (default, meaning) in _SS4REC.items():
            value = cfg.get(key, default)
            if value != default and not (isinstance(default, float) and _close(value, default)):
                out.append(meaning.get(value, f"{key} = {value}"))
    elif info.get("model") == "sasrec" and cfg.get("target_gap_embedding"):
        out.append(TARGET_GAP_SASREC)
    return out


def _close(a: Any, b: float) -> bool:
    try:
        return math.isclose(float(a), b)
    except (TypeError, ValueError):
        return False


def is_ablation(info: dict) -> bool:
    """A configuration that takes a part of SS4Rec away (a layer, the gaps, the target's time), or gives a baseline
    SS4Rec's target-time input: evidence for "why", never a candidate for the headline comparison."""
    cfg = info.get("config") or {}
    if info.get("model") == "ss4rec":
        return (cfg.get("gap_ablation", "none") != "none" or cfg.get("target_gap", "given") != "given"
                or cfg.get("blocks", "s5+mamba") != "s5+mamba")
    return info.get("model") == "sasrec" and bool(cfg.get("target_gap_embedding"))


def reads_target_time(info: dict) -> bool:
    """Whether the model's score depends on the time of the interaction it predicts."""
    cfg = info.get("config") or {}
    if info.get("model") == "sasrec":
        return bool(cfg.get("target_gap_embedding"))
    if info.get("model") != "ss4rec":
        return False
    return (cfg.get("target_gap", "given") == "given" and cfg.get("gap_ablation", "none") in ("none", "shuffled")
            and cfg.get("blocks", "s5+mamba") != "mamba")
