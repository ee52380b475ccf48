"""Learning curves: history.jsonl as frames, the monitored metric, and the best epoch (recorded, or best so far for a
run still training). Charts of these frames are drawn by recsys.charts.curve_chart.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from recsys.compare.discovery import objective


def history_frame(history: Sequence[dict]) -> pd.DataFrame:
    """history.jsonl rows as a frame indexed by epoch (1-based); numeric columns only."""
    if not history:
        return pd.DataFrame()
    df = pd.DataFrame(list(history))
    if "epoch" not in df:
        df["epoch"] = np.arange(1, len(df) + 1)
    df = df.drop_duplicates("epoch", keep="last").sort_values("epoch")
    num = df.apply(pd.to_numeric, errors="coerce")
    return num.set_index("epoch")


def valid_metric_names(histories: Iterable[Sequence[dict]]) -> list[str]:
    """Validation metrics recorded per epoch (without the ``valid_`` prefix), ranking metrics first."""
    names: set[str] = set()
    for h in histories:
        for row in h:
            names.update(k[len("valid_"):] for k in row if k.startswith("valid_"))

    def order(n: str):
        base, _, k = n.partition("@")
        return ({"ndcg": 0, "hr": 1, "mrr": 2, "rmse": 3, "mae": 4}.get(base, 9), int(k) if k.isdigit() else 0, n)
    return sorted(names, key=order)


def monitored_metric(info: dict) -> tuple[str, str]:
    """(metric, "min"|"max") that picks the best epoch: run.json's monitor, else ndcg@10 (ranking) / rmse (rating)."""
    mon = str(info.get("monitor") or "")
    name = mon.split(" ", 1)[1] if mon.startswith("valid ") else ("ndcg@10" if objective(info) == "ranking"
                                                                   else "rmse")
    return name, ("min" if name in ("rmse", "mae") else "max")


def best_epoch(info: dict, history: Sequence[dict]) -> int | None:
    """The recorded best epoch of a complete run; for a running run, the best so far on its monitored metric."""
    if info.get("status") == "complete" and info.get("best_epoch"):
        return int(info["best_epoch"])
    df = history_frame(history)
    name, mode = monitored_metric(info)
    col = f"valid_{name}"
    if df.empty or col not in df or df[col].isna().all():
        return None
    return int(df[col].idxmin() if mode == "min" else df[col].idxmax())


def learning_curves(runs: Sequence[tuple[str, dict, Sequence[dict]]], metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, valid) long frames with columns run, epoch, value, best (is this the run's best epoch).

    `runs` holds (name, info, history) triples; train = the training loss on training data, valid = `metric` on
    the validation users."""
    train: list[pd.DataFrame] = []
    valid: list[pd.DataFrame] = []
    for name, info, history in runs:
        df = history_frame(history)
        if df.empty:
            continue
        best = best_epoch(info, history)
        for col, sink in (("train_loss", train), (f"valid_{metric}", valid)):
            if col in df:
                s = df[col].dropna()
                sink.append(pd.DataFrame({"run": name, "epoch": s.index.astype(int), "value": s.to_numpy(),
                                          "best": s.index.astype(int) == (best if best is not None else -1)}))
    cols = ["run", "epoch", "value", "best"]
    cat = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)  # noqa: E731
    return cat(train), cat(valid)



def seed_band(curves: pd.DataFrame, configuration: dict[str, str]) -> pd.DataFrame:
    """Learning curves of the seeds of each configuration pooled: per (configuration, epoch) the mean over the seeds
    that reached that epoch, the min and max (the band) and how many seeds (`n`). `configuration` maps each run name
    of `curves` (a frame of `learning_curves`) to its configuration's label; runs not in it are their own."""
    cols = ["configuration", "epoch", "mean", "low", "high", "n"]
    if curves.empty:
        return pd.DataFrame(columns=cols)
    df = curves.assign(configuration=[configuration.get(r, r) for r in curves["run"]])
    out = (df.groupby(["configuration", "epoch"], sort=False)["value"]
             .agg(mean="mean", low="min", high="max", n="count").reset_index())
    return out[cols]
