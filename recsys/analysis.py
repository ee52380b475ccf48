"""Analyses behind the claims in docs/results.md, so each number there comes from a named command
(`python scripts/analyse_runs.py ...`)."""
from __future__ import annotations

import numpy as np
import torch

from recsys.evaluation.protocols import leave_one_out
from recsys.inference import LoadedRun, prefill, score_history, user_history


@torch.no_grad()
def seen_share_of_topk(run: LoadedRun, k: int = 10, stage: str = "test") -> float:
    """Mean share of each user's unmasked top-k that the user has already rated before the held-out movie."""
    loo = leave_one_out(run.prepared)
    indptr, seen = loo.seen_items(stage)
    scores = run.model.score(loo.cases(stage, run.max_len)).float().clone()
    scores[:, 0] = float("-inf")
    top = torch.topk(scores, k, dim=1).indices.numpy()
    return float(np.mean([len(set(top[i]) & set(seen[indptr[i]:indptr[i + 1]])) / k for i in range(len(top))]))


@torch.no_grad()
def gap_sensitivity(run: LoadedRun, gaps: dict[str, int], users: int = 200, k: int = 10,
                    baseline: int = 86400) -> dict[str, dict]:
    """For SS4Rec: how much each what-if gap's top-k overlaps the top-k at `baseline` seconds (first `users` users).

    Returns, per gap label, the mean overlap (0..k) and the share of users whose list is identical."""
    if run.kind != "ss4rec":
        raise ValueError("gap sensitivity needs an SS4Rec run")
    overlaps: dict[str, list[int]] = {label: [] for label in gaps}
    for u in run.prepared.user_map.raw[:users]:
        h = user_history(run, int(u))
        items, times = h["item_idx"].to_numpy(), h["timestamp"].to_numpy()
        cache = prefill(run, items, times)
        base = set(score_history(run, items, times, now=int(times[-1]) + baseline, k=k, cache=cache).table["item"])
        for label, gap in gaps.items():
            other = score_history(run, items, times, now=int(times[-1]) + gap, k=k, cache=cache).table["item"]
            overlaps[label].append(len(base & set(other)))
    return {label: {"mean_overlap": float(np.mean(v)), "identical_share": float(np.mean(np.array(v) == k))}
            for label, v in overlaps.items()}


def retention_table(run: LoadedRun, gaps: dict[str, int]) -> dict[str, list[float]]:
    """S5 retention (mean |Abar|) of each layer for each gap."""
    dt = torch.tensor([float(g) for g in gaps.values()])
    model = run.ss4rec
    per_layer = [block.s5.retention(model.scale_gaps(dt)).tolist() for block in model.block_list
                 if block.s5 is not None]
    return {label: [layer[i] for layer in per_layer] for i, label in enumerate(gaps)}
