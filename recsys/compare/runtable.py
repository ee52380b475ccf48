"""The run table of the Compare page (in the manner of an experiment tracker's): one row per run with what tells runs
apart (model, variant, seed, data, protocol), its cost (parameters, training time, seconds per epoch, the hardware)
and its headline test number; and the configuration difference between any two runs. Plain frames, torch-free."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from recsys.compare.describe import history_length, model_label
from recsys.compare.discovery import info_of, label_of, objective

COLUMNS = ["show", "run", "model", "variant", "seed", "dataset", "protocol", "test NDCG@10", "test RMSE", "parameters",
           "epochs", "train min", "s/epoch", "hardware", "status"]


def _protocol(info: dict) -> str:
    p = info.get("protocol") or {}
    if objective(info) == "rating":
        return f"rating · {p.get('split', '?')}"
    length = history_length(info)
    return "ranking · " + ("masked" if p.get("mask_seen") else "unmasked") + (f" · len{length}" if length else "")


def _hardware(info: dict) -> str:
    env = info.get("environment") or {}
    parts = [str(env.get("device", "?"))]
    if env.get("world_size", 1) and int(env.get("world_size", 1)) > 1:
        parts.append(f"x{int(env['world_size'])}")
    if env.get("precision"):
        parts.append(str(env["precision"]))
    if env.get("device") == "cpu" and env.get("cpu_kernels"):
        parts.append(f"{env['cpu_kernels']} kernels")
    return " ".join(parts)


def run_table(items: Sequence[Any], shown: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run; `show` is True for the labels in `shown` (the runs the page's tables use)."""
    rows = []
    for item in items:
        info, label = info_of(item), label_of(item)
        cfg, test = info.get("config") or {}, (info.get("metrics") or {}).get("test") or {}
        seconds, epochs = info.get("train_seconds"), info.get("epochs_run")
        rows.append({
            "show": label in shown, "run": label, "model": model_label(info),
            "variant": str(cfg.get("variant", "default")), "seed": cfg.get("seed"),
            "dataset": str((info.get("dataset") or {}).get("name", "?")), "protocol": _protocol(info),
            "test NDCG@10": test.get("ndcg@10"), "test RMSE": test.get("rmse"),
            "parameters": info.get("n_parameters"), "epochs": epochs,
            "train min": round(seconds / 60, 1) if isinstance(seconds, (int, float)) else None,
            "s/epoch": round(seconds / epochs, 1) if isinstance(seconds, (int, float)) and epochs else None,
            "hardware": _hardware(info), "status": info.get("status", "?"),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def filter_runs(table: pd.DataFrame, **chosen: Sequence[Any]) -> pd.DataFrame:
    """The rows whose column values are among `chosen[column]` (an empty choice keeps every row)."""
    keep = pd.Series(True, index=table.index)
    for column, values in chosen.items():
        if values:
            keep &= table[column].isin(list(values))
    return table[keep]


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_difference(a: Any, b: Any) -> pd.DataFrame:
    """Every setting (configuration, protocol, dataset, environment) on which two runs differ, side by side."""
    fa, fb = ({**_flat(info_of(x).get("config") or {}, "config."), **_flat(info_of(x).get("protocol") or {},
                                                                           "protocol."),
               **_flat(info_of(x).get("dataset") or {}, "dataset."),
               **_flat(info_of(x).get("environment") or {}, "environment."), "model": info_of(x).get("model")}
              for x in (a, b))
    keys = sorted(set(fa) | set(fb))
    rows = [{"setting": k, label_of(a): repr(fa.get(k, "—")), label_of(b): repr(fb.get(k, "—"))}
            for k in keys if fa.get(k, "—") != fb.get(k, "—")]
    return pd.DataFrame(rows, columns=["setting", label_of(a), label_of(b)])


__all__ = ["COLUMNS", "config_difference", "filter_runs", "run_table"]


def apply_ticks(ticked: set[str], shown: Sequence[str], edited: pd.DataFrame) -> set[str]:
    """The runs ticked after an edit of the (possibly filtered) table: the edited table's ticks for the runs it
    shows, the earlier ticks for the runs the filters hide (a filter never unticks what it hides)."""
    return (set(ticked) - set(shown)) | set(edited.loc[edited["show"].astype(bool), "run"])
