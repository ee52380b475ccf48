"""Every number on the Compare page names what it is: model labels, dataset / protocol summaries, group captions, and
the metrics table (blank, never 0, where a metric does not apply), as plain strings and frames.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recsys import catalogue
from recsys.compare.discovery import Run, info_of, label_of, objective
from recsys.compare.grouping import CHRONO_RANKING_SPLIT, Group, families

# The closed-form reference models (cards with floor: true) and every model's display name, from the catalogue (the
# cards beside each model; these two are snapshots for readers of the names, the functions below read it live).
FLOOR_MODELS = catalogue.floors()
MODEL_NAMES = catalogue.names()


def is_floor(info: dict) -> bool:
    return catalogue.is_floor_model(info.get("model"))


def model_label(info: dict) -> str:
    name = catalogue.display_name(info.get("model"))
    return f"{name} (floor)" if is_floor(info) else name


def run_names(items: Sequence[Any]) -> list[str]:
    """Short names for runs: the model name, with the run folder added where two runs share a model."""
    labels = [catalogue.display_name(info_of(x).get("model")) for x in items]
    return [f"{lab} [{label_of(x)}]" if labels.count(lab) > 1 else lab for lab, x in zip(labels, items)]


def is_embedded_ml100k(info: dict) -> bool:
    """A run of the embedded ML-100K (`--dataset ml-100k` without `--data-dir`)."""
    ds, cfg = info.get("dataset") or {}, info.get("config") or {}
    if str(ds.get("name", "")).lower() != "ml-100k":
        return False
    if "data_dir" in cfg:
        return cfg["data_dir"] in (None, "")
    source = str(ds.get("source", ""))
    return source.startswith("embedded ml-100k") or "dataset_example" in source  # today's label, or older runs' path


def default_selection(runs: Sequence[Run]) -> list[str]:
    """Labels of the complete runs of the embedded ML-100K, ablations left out (What matters shows them; they can
    be added to the selection)."""
    from recsys.compare.variants import is_ablation

    return [r.label for r in runs if r.status in ("complete", "inconsistent") and is_embedded_ml100k(r.info)
            and not is_ablation(r.info)]


def filters_summary(info: dict) -> str:
    ds = info["dataset"]
    f = ds.get("filters") if isinstance(ds.get("filters"), dict) else info["protocol"]
    uk, ik = f.get("user_k"), f.get("item_k")
    parts = []
    if uk is not None or ik is not None:
        parts.append(f"{uk}-core users and items" if uk == ik else f"users >= {uk}, items >= {ik} ratings")
    if f.get("timestamped_users_only"):
        parts.append("fully timestamped users only")
    if f.get("ratings_after_filter") is not None:
        before = f.get("ratings_before_filter")
        parts.append(f"{f['ratings_after_filter']:,}" + (f" of {before:,}" if before is not None else "")
                     + " ratings kept")
    return ", ".join(parts) or "no filters recorded"


def dataset_summary(info: dict) -> str:
    ds = info["dataset"]
    where = "embedded copy" if is_embedded_ml100k(info) else f"from {ds.get('source') or 'unknown source'}"
    fp = ds.get("fingerprint")
    fp_text = f"fingerprint {fp[:12]}" if fp else "NO fingerprint recorded"
    return f"{ds.get('name')} ({where}; {fp_text}; {filters_summary(info)})"


def protocol_summary(info: dict, family: str | None = None, with_max_len: bool = True) -> str:
    """One line naming the split and protocol of a run's `family` metrics."""
    family = family or objective(info)
    p = info["protocol"]
    if family == "ranking":
        ks = "/".join(str(k) for k in p.get("ks", []))
        parts = ["leave-one-out by time (each user's last interaction is the test target)" if
                 p.get("split") == CHRONO_RANKING_SPLIT else f"split {p.get('split')}",
                 "full ranking over all items" if "all items" in str(p.get("candidates", "all items")) else
                 str(p.get("candidates")),
                 "seen items masked" if p.get("mask_seen") else "seen items not masked",
                 "pessimistic ties" if str(p.get("ties", "pessimistic")).startswith("pessimistic") else
                 f"ties: {p.get('ties')}"]
        if ks:
            parts.append(f"K in {ks}")
        if with_max_len and p.get("max_len") is not None:
            parts.append(f"max_len {p['max_len']}")
        return "ranking: " + ", ".join(parts)
    if objective(info) == "ranking":
        return ("rating: chronological hold-out (each user's last rating by time, predicted from strictly earlier "
                "history), from the model's rating head")
    split = p.get("split")
    if split == "chronological":
        return ("rating: chronological hold-out (each user's last rating by time, predicted from strictly earlier "
                "history)")
    vf = p.get("valid_frac")
    valid = f", {vf:.0%} of training rows for early stopping" if isinstance(vf, (int, float)) else ""
    if split == "random":
        tf = p.get("test_frac", 0.1)
        return f"rating: random {1 - tf:.0%}/{tf:.0%} split, seed {p.get('seed')}{valid}"
    if split == "kfold":
        return f"rating: {p.get('k')}-fold, fold {p.get('fold')}, seed {p.get('seed')}{valid}"
    if split == "ml100k-folds":
        return f"rating: official ML-100K u{p.get('fold')} fold{valid}, seed {p.get('seed')}"
    return f"rating: split {split}"


def _representative(group: Group) -> dict:
    """The run whose protocol describes the group: for a rating group, a rating run rather than a rating head."""
    infos = group.infos
    if group.family == "rating":
        return next((i for i in infos if objective(i) == "rating"), infos[0])
    return infos[0]


def group_title(group: Group) -> str:
    info = _representative(group)
    family = "Ranking" if group.family == "ranking" else "Rating"
    return f"Group {group.number} · {family} · {info['dataset'].get('name')} · " + (
        "leave-one-out, " + ("seen masked" if info["protocol"].get("mask_seen") else "seen not masked")
        if group.family == "ranking" else protocol_summary(info, "rating").split(": ", 1)[1].split(" (")[0])


def group_caption(group: Group, split: str = "test", what: str = "") -> str:
    """'Dataset: ... · Protocol: ... · Split shown: ...' for a table or chart of this group."""
    info = _representative(group)
    proto = protocol_summary(info, group.family, with_max_len=False)
    heads = [label_of(m) for m in group.members if group.family == "rating" and objective(info_of(m)) == "ranking"]
    if heads and objective(info) == "rating":
        proto += f" (the rating head of {', '.join(heads)} is scored on these same rows)"
    n = {(info_of(m).get("metrics") or {}).get(split, {}).get("n") for m in group.members} - {None}
    unit = "users" if group.family == "ranking" else "held-out ratings"
    n_text = f" ({', '.join(f'{x:,}' for x in sorted(n))} {unit})" if n else ""
    lead = f"{what} — " if what else ""
    return (f"{lead}Dataset: {dataset_summary(info)} · Protocol: {proto} · Split shown: {split}{n_text}.")


def max_len_note(group: Group) -> str | None:
    """A sentence when the members of a ranking group read different amounts of history."""
    if group.family != "ranking":
        return None
    lens: dict[int | None, list[str]] = {}
    for item in group.members:
        lens.setdefault(info_of(item)["protocol"].get("max_len"), []).append(label_of(item))
    if len(lens) <= 1:
        return None
    listing = "; ".join(f"max_len {k}: {', '.join(v)}" for k, v in sorted(lens.items(), key=lambda kv: str(kv[0])))
    return ("Members read different amounts of history (" + listing + "). Test targets, candidates and masking are "
            "identical, so the numbers are comparable; NCF and the popularity floor ignore history.")


def format_p(p: float, n_boot: int) -> str:
    """A bootstrap p-value; 0 means 'below the resolution 1/n_boot'."""
    return f"< {1 / n_boot:.2g}" if p <= 0 else f"{p:.3f}"


def metric_display(metric: str) -> str:
    base, _, k = metric.partition("@")
    return base.upper() + (f"@{k}" if k else "")


# ----------------------------------------------------------------------------------------------------------------
# Metrics table
# ----------------------------------------------------------------------------------------------------------------


def available_ks(items: Iterable[Any]) -> list[int]:
    """Cutoffs K reported by the ranking runs among items (protocol ks, or the metric names)."""
    ks: set[int] = set()
    for item in items:
        info = info_of(item)
        if "ranking" not in families(info):
            continue
        ks.update(int(k) for k in info["protocol"].get("ks") or [])
        for m in (info.get("metrics") or {}).values():
            ks.update(int(name.split("@")[1]) for name in m if name.startswith("hr@") and name[3:].isdigit())
    return sorted(ks)


def metric_columns(k: int) -> list[str]:
    return ["RMSE", "MAE", f"HR@{k}", f"NDCG@{k}", f"MRR@{k}"]


def _number(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def run_metrics(info: dict, k: int, split: str = "test", family: str | None = None) -> dict[str, float]:
    """RMSE, MAE, HR@K, NDCG@K, MRR@K of one run; NaN (shown blank) where a metric does not apply or is missing.

    With `family` only that family's metrics are filled (an SS4Rec run's RMSE belongs to its rating group)."""
    m = (info.get("metrics") or {}).get(split) or {}
    fams = families(info) if family is None else [f for f in families(info) if f == family]
    names = dict(zip(metric_columns(k), ["rmse", "mae", f"hr@{k}", f"ndcg@{k}", f"mrr@{k}"]))
    out = {}
    for col, key in names.items():
        fam = "rating" if key in ("rmse", "mae") else "ranking"
        out[col] = _number(m.get(key)) if fam in fams else float("nan")
    return out


def _best_epoch_value(info: dict) -> float:
    if is_floor(info) or info.get("status") != "complete":
        return float("nan")
    return _number(info.get("best_epoch"))


def metrics_table(items: Sequence[Any], k: int = 10, split: str = "test", family: str | None = None) -> pd.DataFrame:
    """One row per run: what it is (model, floor, status, dataset, protocol summary, max_len, best epoch, n) and
    RMSE, MAE, HR@K, NDCG@K, MRR@K; NaN where a metric does not apply (never 0)."""
    rows = []
    for item in items:
        info = info_of(item)
        fam = family or objective(info)
        p = info["protocol"]
        m = (info.get("metrics") or {}).get(split) or {}
        ranking = fam == "ranking"
        rows.append({
            "run": label_of(item),
            "model": model_label(info),
            "floor": is_floor(info),
            "status": info.get("status", "unknown"),
            "dataset": f"{info['dataset'].get('name')}" + (f" · {str(info['dataset'].get('fingerprint'))[:8]}"
                                                           if info["dataset"].get("fingerprint") else ""),
            "split": ("leave-one-out by time" if p.get("split") == CHRONO_RANKING_SPLIT else p.get("split"))
            if ranking or objective(info) == "rating" else "chronological (rating head)",
            "mask_seen": (bool(p.get("mask_seen")) if ranking else None),
            "max_len": (p.get("max_len") if objective(info) == "ranking" else None),
            "filters": filters_summary(info),
            "best epoch": _best_epoch_value(info),
            "n": _number(m.get("n")),
            **run_metrics(info, k, split, family),
        })
    # the metrics first after the run's name: they are what a person reads; protocol details follow (and are
    # also in the caption under the table)
    cols = ["run", "model", *metric_columns(k), "n", "best epoch", "floor", "status", "dataset", "split",
            "mask_seen", "max_len", "filters"]
    return pd.DataFrame(rows, columns=cols)


def format_table(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Display strings: metrics with `digits` decimals, counts as integers, and a blank for every missing value."""
    metric_like = [c for c in df.columns if c in ("RMSE", "MAE") or "@" in c]
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        def fmt(v, c=c):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            if c in metric_like:
                return f"{float(v):.{digits}f}"
            if c in ("best epoch", "n", "max_len"):
                return f"{int(v):,}" if c == "n" else str(int(v))
            if c == "floor":
                return "floor" if v else ""
            if isinstance(v, (bool, np.bool_)):
                return "yes" if v else "no"
            return str(v)
        out[c] = [fmt(v) for v in df[c].tolist()]
    return out

