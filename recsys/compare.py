"""Comparing finished (and running) runs: which runs may stand side by side, their metrics, learning curves, paired
bootstrap differences and per-bucket breakdowns. Plain functions over run.json contents and per-user test results,
so everything here is tested without Streamlit; `pages/compare.py` only arranges widgets and charts.

Comparability rule (`comparability_key`)
----------------------------------------
Two numbers may stand side by side only when they were measured on the same held-out data with the same protocol.
A run reports one or two *metric families*:

* ``ranking`` (HR/NDCG/MRR@K): every ranking run, including SS4Rec;
* ``rating`` (RMSE/MAE): every rating run, and an SS4Rec run with a rating head, whose RMSE/MAE are measured on
  exactly the rows of the chronological rating protocol (each user's last rating by time, predicted from strictly
  earlier history). Such a run therefore appears in two groups: its ranking group and its rating group.

The key of a run in a family is ``(family, data, protocol)``:

* data: dataset name, data fingerprint (sha256 of the source files) and every recorded filter (k-core sizes,
  timestamped-users-only, rating counts before/after filtering). A run without a fingerprint gets a key of its own:
  it is never put next to anything, because its data cannot be checked.
* ranking protocol: every field of run.json's protocol (split = leave-one-out by time, candidates, tie rule,
  history order, ``mask_seen``, the cutoffs ``ks``, and any field a future protocol adds) EXCEPT ``max_len``.
  ``max_len`` only limits how much history a model reads: the test targets, the candidate set and the masked items
  (all seen items, whatever ``max_len``) are the same, NCF and the popularity floor ignore history altogether, and
  for sequence models it is a model setting (RecBole's MAX_ITEM_LIST_LENGTH). It is shown in every table and a
  group whose members differ in ``max_len`` says so.
* rating protocol: the split and the fields that define its rows: nothing more for ``chronological``; ``test_frac``,
  ``valid_frac``, ``seed`` for ``random``; ``k``, ``fold``, ``seed``, ``valid_frac`` for ``kfold``; ``fold``,
  ``valid_frac``, ``seed`` for ``ml100k-folds`` (the seed and valid_frac choose the early-stopping rows, i.e. the
  training data); every field for an unknown split. The rating head of a ranking run counts as ``chronological``.

`group_runs` groups runs by this key, one group per (family, key); `explain_differences` says field by field why
two groups are apart. Paired comparisons additionally check, row by row, that both runs hold the same users (and
held-out items, and true ratings) before any difference is computed (`align_pair`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from recsys.runs import RUN_FILE, TEST_RESULTS, RunDirectory, RunError, sha256_file
from recsys.evaluation.metrics import paired_bootstrap

__all__ = [
    "FLOOR_MODELS", "FAMILIES", "Run", "ScanResult", "ComparabilityKey", "Group", "ComparisonError", "scan_runs",
    "validate_info", "families", "comparability_key", "group_runs", "explain_differences", "is_floor",
    "is_embedded_ml100k", "default_selection", "model_label", "run_names", "dataset_summary", "filters_summary",
    "protocol_summary", "group_title", "group_caption", "available_ks", "metric_columns", "run_metrics",
    "metrics_table", "format_table", "max_len_note", "load_test_results", "history_frame", "valid_metric_names",
    "monitored_metric", "best_epoch", "learning_curves", "curve_chart", "align_pair", "paired_bootstrap_rmse",
    "compare_pair", "comparison_sentence", "comparison_metrics", "metric_display", "preferred_order", "format_p",
    "has_rating_head", "key_differences", "ACTIVITY_LABELS", "GAP_LABELS", "activity_buckets", "gap_buckets",
    "breakdown", "breakdown_chart",
]

# The closed-form reference models (recsys.training.runner.FLOORS): they bound what a learned model must beat.
FLOOR_MODELS = {"global-mean": "rating", "bias": "rating", "popular": "ranking"}
FAMILIES = ("ranking", "rating")
MODEL_NAMES = {"ss4rec": "SS4Rec", "ncf": "NCF", "popular": "Popular", "bias": "Bias", "global-mean": "Global mean"}

# Protocol fields that do not decide which numbers are comparable (see the module docstring).
_RANKING_IGNORED = frozenset({"max_len", "rating", "notes", "sizes", "name", "user_k", "item_k",
                              "timestamped_users_only"})
_RATING_SPLIT_FIELDS = {
    "chronological": (),
    "random": ("test_frac", "valid_frac", "seed"),
    "kfold": ("k", "fold", "seed", "valid_frac"),
    "ml100k-folds": ("fold", "valid_frac", "seed"),
}
_RATING_IGNORED = frozenset({"notes", "sizes", "name", "user_k", "item_k", "timestamped_users_only"})
_CHRONO_RANKING_SPLIT = "leave_one_out_by_time"


class ComparisonError(ValueError):
    """Two runs cannot be compared row by row (different users, items or ratings); the message says why."""


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A loaded run: its folder and its validated run.json."""

    path: Path
    info: dict

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return str(self.info.get("status") or "unknown")


@dataclass
class ScanResult:
    runs: list[Run] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)  # (folder, message): shown, never a traceback
    root_error: str | None = None


def validate_info(info: Any, where: str | Path = "run.json") -> dict:
    """Check the parts of run.json this page relies on; raise RunError with a plain message otherwise."""
    if not isinstance(info, dict):
        raise RunError(f"{where}: malformed run record (not a JSON object)")
    for key in ("dataset", "protocol", "config"):
        if not isinstance(info.get(key), dict):
            raise RunError(f"{where}: malformed run record ('{key}' is not a mapping)")
    if not info["dataset"].get("name"):
        raise RunError(f"{where}: malformed run record (dataset has no name)")
    if _objective(info) not in FAMILIES:
        raise RunError(f"{where}: unknown objective {info.get('objective')!r} (expected ranking or rating)")
    metrics = info.get("metrics")
    if metrics is not None and (not isinstance(metrics, dict)
                                or any(not isinstance(v, dict) for v in metrics.values())):
        raise RunError(f"{where}: malformed run record ('metrics' must map valid/test to metric values)")
    ks = info["protocol"].get("ks")
    if ks is not None and (not isinstance(ks, list) or not all(isinstance(k, int) for k in ks)):
        raise RunError(f"{where}: malformed run record (protocol ks must be a list of integers)")
    return info


def _load_one(path: Path) -> dict:
    info = RunDirectory(path).info()
    return validate_info(info, path / RUN_FILE)


def scan_runs(root: str | Path) -> ScanResult:
    """Every run folder under root (or root itself if it is a run folder).

    Sub-folders that are not readable runs of this workbench (no run.json, corrupted or foreign run.json, malformed
    record) are returned in `errors` with a message; hidden folders and ``__pycache__`` are ignored.
    """
    root = Path(root).expanduser()
    out = ScanResult()
    if not root.exists():
        out.root_error = f"{root}: no such folder"
        return out
    if not root.is_dir():
        out.root_error = f"{root}: not a folder"
        return out
    candidates = [root] if (root / RUN_FILE).exists() else sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    for p in candidates:
        try:
            out.runs.append(Run(p, _load_one(p)))
        except RunError as exc:
            out.errors.append((p, str(exc)))
        except Exception as exc:  # unreadable folder, permissions...: still a message, never a traceback
            out.errors.append((p, f"{p}: cannot read ({type(exc).__name__}: {exc})"))
    return out


def load_test_results(path: str | Path, info: dict | None = None) -> pd.DataFrame:
    """Per-user / per-interaction test results, checked against the sha256 in run.json when one is recorded."""
    run = RunDirectory(path)
    f = run.path / TEST_RESULTS
    if not f.exists():
        status = (info or {}).get("status")
        why = "the run is still training" if status == "running" else "no test_results.parquet in the run folder"
        raise RunError(f"{run.path.name}: no per-user test results ({why})")
    digest = ((info or {}).get("artefacts") or {}).get(TEST_RESULTS)
    if digest and sha256_file(f) != digest:
        raise RunError(f"{f}: contents differ from the sha256 recorded in run.json (modified or copied from another "
                       f"run)")
    return run.test_results()


# ----------------------------------------------------------------------------------------------------------------
# Families and the comparability key
# ----------------------------------------------------------------------------------------------------------------


def _objective(info: dict) -> str | None:
    obj = info.get("objective") or info.get("protocol", {}).get("name")
    return str(obj) if obj is not None else None


def _info(item: Any) -> dict:
    return item.info if isinstance(item, Run) else item


def _label(item: Any) -> str:
    if isinstance(item, Run):
        return item.label
    return str(item.get("run_id") or item.get("model") or "run")


def has_rating_head(info: dict) -> bool:
    """A ranking run that also reports RMSE/MAE of the chronological held-out ratings (SS4Rec's rating head)."""
    if "rating" in info.get("protocol", {}):
        return True
    metrics = info.get("metrics") or {}
    return any("rmse" in m for m in metrics.values() if isinstance(m, dict))


def families(info: dict) -> list[str]:
    """The metric families a run reports: its objective, plus ``rating`` for a ranking run with a rating head."""
    obj = _objective(info)
    out = [obj] if obj in FAMILIES else []
    if obj == "ranking" and has_rating_head(info):
        out.append("rating")
    return out


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class ComparabilityKey:
    """(family, data fields, protocol fields); fields are (name, canonical JSON value) pairs, sorted by name."""

    family: str
    data: tuple[tuple[str, str], ...]
    protocol: tuple[tuple[str, str], ...]

    def fields(self) -> dict[str, str]:
        return {"family": _canon(self.family), **{f"data.{k}": v for k, v in self.data},
                **{f"protocol.{k}": v for k, v in self.protocol}}


def _data_fields(info: dict) -> tuple[tuple[str, str], ...]:
    ds, proto = info["dataset"], info["protocol"]
    fp = ds.get("fingerprint")
    if not fp:  # unverifiable data: never grouped with anything else
        fp = f"unknown (run {info.get('run_id') or id(info)})"
    filters = ds.get("filters")
    if not isinstance(filters, dict):
        filters = {k: proto[k] for k in ("user_k", "item_k", "timestamped_users_only") if k in proto}
    fields = {"name": str(ds.get("name")).lower(), "fingerprint": fp}
    fields.update({f"filters.{k}": v for k, v in filters.items()})
    return tuple(sorted((k, _canon(v)) for k, v in fields.items()))


def _ranking_protocol_fields(proto: dict) -> tuple[tuple[str, str], ...]:
    fields = {k: v for k, v in proto.items() if k not in _RANKING_IGNORED}
    if isinstance(fields.get("ks"), list):
        fields["ks"] = sorted(set(fields["ks"]))
    return tuple(sorted((k, _canon(v)) for k, v in fields.items()))


def _rating_protocol_fields(info: dict) -> tuple[tuple[str, str], ...]:
    proto = info["protocol"]
    if _objective(info) == "ranking":  # the rating head of a ranking run: chronological held-out ratings
        if proto.get("split") != _CHRONO_RANKING_SPLIT:
            fields = {"split": f"rating head of {proto.get('split')}"}
        else:
            fields = {"split": "chronological"}
    else:
        split = proto.get("split")
        if split in _RATING_SPLIT_FIELDS:
            fields = {"split": split, **{k: proto.get(k) for k in _RATING_SPLIT_FIELDS[split]}}
        else:
            fields = {k: v for k, v in proto.items() if k not in _RATING_IGNORED}
    return tuple(sorted((k, _canon(v)) for k, v in fields.items()))


def comparability_key(info: dict, family: str | None = None) -> ComparabilityKey | None:
    """The key under which a run's `family` metrics may be compared (module docstring); None if it has none.

    `family` defaults to the run's objective. A ranking run with a rating head has a second key for ``rating``.
    """
    info = _info(info)
    family = family or _objective(info)
    if family not in families(info):
        return None
    proto = _ranking_protocol_fields(info["protocol"]) if family == "ranking" else _rating_protocol_fields(info)
    return ComparabilityKey(family, _data_fields(info), proto)


@dataclass
class Group:
    """Runs whose `family` metrics are comparable (same key). `members` are the items given to group_runs."""

    number: int
    key: ComparabilityKey
    members: list = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.key.family

    @property
    def infos(self) -> list[dict]:
        return [_info(m) for m in self.members]

    @property
    def labels(self) -> list[str]:
        return [_label(m) for m in self.members]


def group_runs(items: Iterable[Any]) -> list[Group]:
    """Comparable groups of runs (dicts from run.json, or `Run`s): ranking groups first, then rating groups, each in
    order of first appearance. A ranking run with a rating head appears in one group of each family."""
    by_key: dict[ComparabilityKey, list] = {}
    for family in FAMILIES:
        for item in items:
            key = comparability_key(_info(item), family)
            if key is not None:
                by_key.setdefault(key, []).append(item)
    return [Group(i + 1, key, members) for i, (key, members) in enumerate(by_key.items())]


_FIELD_NAMES = {
    "family": "metric family", "data.name": "dataset", "data.fingerprint": "data fingerprint (source files)",
    "protocol.mask_seen": "mask_seen", "protocol.ks": "cutoffs ks", "protocol.split": "split",
}


def _field_value(name: str, value: str | None) -> str:
    if value is None:
        return "(not recorded)"
    v = json.loads(value)
    if name == "data.fingerprint" and isinstance(v, str) and not v.startswith("unknown"):
        return v[:12]
    return str(v)


def key_differences(a: ComparabilityKey, b: ComparabilityKey) -> list[str]:
    """Field-by-field differences between two keys, in words."""
    fa, fb = a.fields(), b.fields()
    out = []
    for name in sorted(set(fa) | set(fb)):
        if fa.get(name) != fb.get(name):
            label = _FIELD_NAMES.get(name, name.split(".", 1)[-1])
            out.append(f"{label}: {_field_value(name, fa.get(name))} vs {_field_value(name, fb.get(name))}")
    return out


def explain_differences(groups: Sequence[Group]) -> list[str]:
    """Why the groups are not shown side by side: one sentence per pair of groups of the same family, plus a note
    when both families are present."""
    out = []
    fams = {g.family for g in groups}
    if len(fams) > 1:
        out.append("Ranking groups (HR/NDCG/MRR: where the held-out item ranks among all items) and rating groups "
                   "(RMSE/MAE: error of the predicted rating of the held-out interaction) measure different things "
                   "and are never in one table.")
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            if a.family != b.family:
                continue
            diffs = key_differences(a.key, b.key)
            out.append(f"Group {a.number} vs group {b.number} ({a.family}): " + "; ".join(diffs) + ".")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Descriptions (every number on the page names its dataset, split and protocol)
# ----------------------------------------------------------------------------------------------------------------


def is_floor(info: dict) -> bool:
    return info.get("model") in FLOOR_MODELS


def model_label(info: dict) -> str:
    name = MODEL_NAMES.get(info.get("model"), str(info.get("model")))
    return f"{name} (floor)" if is_floor(info) else name


def run_names(items: Sequence[Any]) -> list[str]:
    """Short names for runs: the model name, with the run folder added where two runs share a model."""
    labels = [MODEL_NAMES.get(_info(x).get("model"), str(_info(x).get("model"))) for x in items]
    return [f"{lab} [{_label(x)}]" if labels.count(lab) > 1 else lab for lab, x in zip(labels, items)]


def is_embedded_ml100k(info: dict) -> bool:
    """A run of the embedded ML-100K (`--dataset ml-100k` without `--data-dir`)."""
    ds, cfg = info.get("dataset") or {}, info.get("config") or {}
    if str(ds.get("name", "")).lower() != "ml-100k":
        return False
    if "data_dir" in cfg:
        return cfg["data_dir"] in (None, "")
    return "dataset_example" in str(ds.get("source", ""))


def default_selection(runs: Sequence[Run]) -> list[str]:
    """Labels of the complete runs of the embedded ML-100K."""
    return [r.label for r in runs if r.status == "complete" and is_embedded_ml100k(r.info)]


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
    family = family or _objective(info)
    p = info["protocol"]
    if family == "ranking":
        ks = "/".join(str(k) for k in p.get("ks", []))
        parts = ["leave-one-out by time (each user's last interaction is the test target)" if
                 p.get("split") == _CHRONO_RANKING_SPLIT else f"split {p.get('split')}",
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
    if _objective(info) == "ranking":
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
        return next((i for i in infos if _objective(i) == "rating"), infos[0])
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
    heads = [_label(m) for m in group.members if group.family == "rating" and _objective(_info(m)) == "ranking"]
    if heads and _objective(info) == "rating":
        proto += f" (the rating head of {', '.join(heads)} is scored on these same rows)"
    n = {(_info(m).get("metrics") or {}).get(split, {}).get("n") for m in group.members} - {None}
    unit = "users" if group.family == "ranking" else "held-out ratings"
    n_text = f" ({', '.join(f'{x:,}' for x in sorted(n))} {unit})" if n else ""
    lead = f"{what} — " if what else ""
    return (f"{lead}Dataset: {dataset_summary(info)} · Protocol: {proto} · Split shown: {split}{n_text}.")


def max_len_note(group: Group) -> str | None:
    """A sentence when the members of a ranking group read different amounts of history."""
    if group.family != "ranking":
        return None
    lens = {}
    for item in group.members:
        lens.setdefault(_info(item)["protocol"].get("max_len"), []).append(_label(item))
    if len(lens) <= 1:
        return None
    listing = "; ".join(f"max_len {k}: {', '.join(v)}" for k, v in sorted(lens.items(), key=lambda kv: str(kv[0])))
    return ("Members read different amounts of history (" + listing + "). Test targets, candidates and masking are "
            "identical, so the numbers are comparable; NCF and the popularity floor ignore history.")


# ----------------------------------------------------------------------------------------------------------------
# Metrics table
# ----------------------------------------------------------------------------------------------------------------


def available_ks(items: Iterable[Any]) -> list[int]:
    """Cutoffs K reported by the ranking runs among items (protocol ks, or the metric names)."""
    ks: set[int] = set()
    for item in items:
        info = _info(item)
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
        info = _info(item)
        fam = family or _objective(info)
        p = info["protocol"]
        m = (info.get("metrics") or {}).get(split) or {}
        ranking = fam == "ranking"
        rows.append({
            "run": _label(item),
            "model": model_label(info),
            "floor": is_floor(info),
            "status": info.get("status", "unknown"),
            "dataset": f"{info['dataset'].get('name')}" + (f" · {str(info['dataset'].get('fingerprint'))[:8]}"
                                                           if info["dataset"].get("fingerprint") else ""),
            "split": ("leave-one-out by time" if p.get("split") == _CHRONO_RANKING_SPLIT else p.get("split"))
            if ranking or _objective(info) == "rating" else "chronological (rating head)",
            "mask_seen": (bool(p.get("mask_seen")) if ranking else None),
            "max_len": (p.get("max_len") if _objective(info) == "ranking" else None),
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


# ----------------------------------------------------------------------------------------------------------------
# Learning curves
# ----------------------------------------------------------------------------------------------------------------


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
    name = mon.split(" ", 1)[1] if mon.startswith("valid ") else ("ndcg@10" if _objective(info) == "ranking"
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
    train, valid = [], []
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


def curve_chart(df: pd.DataFrame, title: str, y_title: str):
    """Line per run over epochs; the best epoch is a large diamond."""
    import altair as alt

    base = alt.Chart(df).encode(x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
                                y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
                                color=alt.Color("run:N", title="run"),
                                tooltip=["run", "epoch", alt.Tooltip("value:Q", format=".4f"), "best"])
    lines = base.mark_line(point=True)
    best = base.transform_filter("datum.best").mark_point(shape="diamond", size=220, filled=True, opacity=0.9)
    return (lines + best).properties(title=title, height=300)


# ----------------------------------------------------------------------------------------------------------------
# Paired comparisons
# ----------------------------------------------------------------------------------------------------------------


def _user_col(a: pd.DataFrame, b: pd.DataFrame) -> str:
    for col in ("user_id", "user"):
        if col in a and col in b:
            return col
    raise ComparisonError("the per-user results have no user column (user_id or user) in both runs")


def _rating_rows(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Per-rating rows in one layout: user, item, rating, sq_error, abs_error (from a rating run or a rating head)."""
    if "pred_rating" in df:  # the rating head of a ranking run: target = item, target_rating = the true rating
        need = ("target", "target_rating", "pred_rating")
        if any(c not in df for c in need):
            raise ComparisonError(f"{name}: per-user results lack {', '.join(c for c in need if c not in df)}")
        out = pd.DataFrame({"item": df["target"], "rating": df["target_rating"].astype(float)})
        pred = df["pred_rating"].astype(float)
    elif "sq_error" in df and "item" in df:
        out = pd.DataFrame({"item": df["item"], "rating": df["target"].astype(float) if "target" in df else np.nan})
        pred = df["pred"].astype(float) if "pred" in df else None
    else:
        raise ComparisonError(f"{name}: these results hold no per-rating errors (a ranking run without a rating "
                              f"head?)")
    out["sq_error"] = df["sq_error"].astype(float) if "sq_error" in df else (pred - out["rating"]) ** 2
    out["abs_error"] = df["abs_error"].astype(float) if "abs_error" in df else np.sqrt(out["sq_error"])
    for col in ("user_id", "user"):
        if col in df:
            out.insert(0, col, df[col].to_numpy())
    for col in ("history_length", "gap_before_target"):
        if col in df:
            out[col] = df[col].to_numpy()
    return out


def _examples(values: Iterable, n: int = 3) -> str:
    vals = sorted(values, key=str)[:n]
    return ", ".join(str(v) for v in vals)


def align_pair(a: pd.DataFrame, b: pd.DataFrame, family: str, names: tuple[str, str] = ("A", "B")) -> pd.DataFrame:
    """Rows of two runs' results matched by user (ranking) or by (user, item) (rating), as one frame with columns
    suffixed ``_a`` / ``_b``. Refuses (ComparisonError) unless both runs hold exactly the same users (and the same
    held-out item per user, and the same true rating per row)."""
    na, nb = names
    if family == "rating":
        a, b = _rating_rows(a, na), _rating_rows(b, nb)
    ucol = _user_col(a, b)
    keys = [ucol] if family == "ranking" else [ucol, "item"]
    for df, name in ((a, na), (b, nb)):
        dup = df.duplicated(keys)
        if dup.any():
            what = "users" if family == "ranking" else "(user, item) pairs"
            raise ComparisonError(f"{name} lists {int(dup.sum())} {what} more than once; rows cannot be paired")
    ka = set(map(tuple, a[keys].to_numpy().tolist()))
    kb = set(map(tuple, b[keys].to_numpy().tolist()))
    if ka != kb:
        unit = "users" if family == "ranking" else "held-out (user, item) rows"
        only_a, only_b = ka - kb, kb - ka
        ex = lambda s: _examples([k[0] if len(k) == 1 else k for k in s])  # noqa: E731
        raise ComparisonError(
            f"{na} and {nb} were not evaluated on the same {unit}: {len(ka):,} vs {len(kb):,}; "
            f"{len(only_a):,} only in {na}" + (f" (e.g. {ex(only_a)})" if only_a else "") +
            f", {len(only_b):,} only in {nb}" + (f" (e.g. {ex(only_b)})" if only_b else "") +
            ". A paired comparison needs the same held-out data: check dataset, filters and split.")
    merged = a.merge(b, on=keys, suffixes=("_a", "_b"), validate="one_to_one").sort_values(keys)
    if family == "ranking" and "target_a" in merged and "target_b" in merged:
        bad = merged[merged["target_a"] != merged["target_b"]]
        if len(bad):
            u, ta, tb = (bad[c].iloc[0] for c in (ucol, "target_a", "target_b"))
            raise ComparisonError(
                f"{na} and {nb} hold the same users but a different held-out item for {len(bad):,} of them (e.g. "
                f"user {u}: item {ta} vs {tb}): different data or protocol.")
    if family == "rating" and merged["rating_a"].notna().all() and merged["rating_b"].notna().all():
        bad = merged[(merged["rating_a"] - merged["rating_b"]).abs() > 1e-6]
        if len(bad):
            raise ComparisonError(f"{na} and {nb} hold the same (user, item) rows but {len(bad):,} true ratings "
                                  f"differ: different data.")
    return merged.reset_index(drop=True)


def paired_bootstrap_rmse(sq_a: np.ndarray, sq_b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05,
                          seed: int = 0, chunk_size: int | None = None) -> dict:
    """Paired bootstrap of RMSE(a) - RMSE(b) from per-row squared errors of the same rows.

    Each replicate resamples rows with replacement (the same rows for both runs) and computes
    ``sqrt(mean(sq_a*)) - sqrt(mean(sq_b*))``: the RMSE is not a mean of per-row values, so bootstrapping the mean of
    per-row differences would be wrong. Returns the keys of `paired_bootstrap`: ``mean_a`` / ``mean_b`` hold the
    RMSEs, ``diff``, ``ci_low`` / ``ci_high`` (percentile), ``p_value`` (bootstrap sign-consistency, resolution
    1/n_boot), ``n_users`` (rows), ``n_boot``, ``alpha``, ``statistic`` = "rmse". Memory is O(chunk * n) and the
    result depends on the seed only.
    """
    a = np.asarray(sq_a, dtype=np.float64).reshape(-1)
    b = np.asarray(sq_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same rows in both runs: {a.shape[0]} vs {b.shape[0]}")
    if a.size == 0:
        raise ValueError("no rows: an RMSE over no ratings is undefined")
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or (a < 0).any() or (b < 0).any():
        raise ValueError("squared errors must be finite and non-negative")
    if int(n_boot) < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got {n_boot}, {alpha}")
    n, n_boot = a.shape[0], int(n_boot)
    per_chunk = int(chunk_size) if chunk_size else max(1, (1 << 22) // n)
    rng = np.random.default_rng(seed)
    diff = np.empty(n_boot)
    for start in range(0, n_boot, per_chunk):
        c = min(per_chunk, n_boot - start)
        idx = np.minimum((rng.random((c, n)) * n).astype(np.intp), n - 1)  # same stream whatever the chunking
        diff[start:start + c] = np.sqrt(a[idx].mean(axis=1)) - np.sqrt(b[idx].mean(axis=1))
    rmse_a, rmse_b = float(np.sqrt(a.mean())), float(np.sqrt(b.mean()))
    lo, hi = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
    p = 2.0 * min(float(np.mean(diff <= 0)), float(np.mean(diff >= 0)))
    return {"mean_a": rmse_a, "mean_b": rmse_b, "diff": rmse_a - rmse_b, "ci_low": float(lo), "ci_high": float(hi),
            "p_value": min(1.0, p), "n_users": int(n), "n_boot": n_boot, "alpha": float(alpha), "statistic": "rmse"}


def comparison_metrics(family: str, ks: Sequence[int]) -> list[str]:
    """Metrics offered for a paired comparison in a family."""
    if family == "rating":
        return ["rmse", "mae"]
    return [f"{m}@{k}" for k in ks for m in ("ndcg", "hr", "mrr")]


def preferred_order(items: Sequence[Any]) -> list[int]:
    """Indices of items with SS4Rec first, then other learned models, then floors (default run A, run B)."""
    def rank(i: int):
        info = _info(items[i])
        return (is_floor(info), info.get("model") != "ss4rec", i)
    return sorted(range(len(items)), key=rank)


def format_p(p: float, n_boot: int) -> str:
    """A bootstrap p-value; 0 means 'below the resolution 1/n_boot'."""
    return f"< {1 / n_boot:.2g}" if p <= 0 else f"{p:.3f}"


def metric_display(metric: str) -> str:
    base, _, k = metric.partition("@")
    return base.upper() + (f"@{k}" if k else "")


def compare_pair(a: pd.DataFrame, b: pd.DataFrame, family: str, metric: str, n_boot: int = 2000,
                 alpha: float = 0.05, seed: int = 0, names: tuple[str, str] = ("A", "B")) -> dict:
    """Paired bootstrap of metric(A) - metric(B) on aligned rows (see align_pair, which refuses mismatched runs).

    Ranking: per-user ``ndcg@K`` / ``hr@K`` / ``mrr@K``; rating: ``rmse`` (bootstrap of per-row squared errors, see
    paired_bootstrap_rmse) or ``mae`` (per-row absolute errors). Adds ``metric``, ``n`` (rows), ``unit``,
    ``lower_is_better`` and ``family`` to the bootstrap's result."""
    merged = align_pair(a, b, family, names)
    if family == "ranking":
        if f"{metric}_a" not in merged or f"{metric}_b" not in merged:
            raise ComparisonError(f"{metric} is not in the per-user results of both runs")
        res = paired_bootstrap(merged[f"{metric}_a"].to_numpy(float), merged[f"{metric}_b"].to_numpy(float),
                               n_boot=n_boot, alpha=alpha, seed=seed)
        lower, unit = False, "users"
    elif metric == "rmse":
        res = paired_bootstrap_rmse(merged["sq_error_a"].to_numpy(), merged["sq_error_b"].to_numpy(),
                                    n_boot=n_boot, alpha=alpha, seed=seed)
        lower, unit = True, "held-out ratings"
    elif metric == "mae":
        res = paired_bootstrap(merged["abs_error_a"].to_numpy(), merged["abs_error_b"].to_numpy(),
                               n_boot=n_boot, alpha=alpha, seed=seed)
        lower, unit = True, "held-out ratings"
    else:
        raise ComparisonError(f"unknown metric {metric!r} for the {family} family")
    return {**res, "metric": metric, "n": int(res["n_users"]), "unit": unit, "lower_is_better": lower,
            "family": family}


def comparison_sentence(res: dict, name_a: str, name_b: str, digits: int = 3) -> str:
    """Plain language, e.g. "SS4Rec's NDCG@10 is higher than NCF's by 0.012 (95% CI 0.004 to 0.020, 943 users)".

    Uses `digits` decimals, more when the difference would otherwise print as 0.000."""
    m = metric_display(res["metric"])
    level = f"{1 - res['alpha']:.0%}"
    d, lo, hi = res["diff"], res["ci_low"], res["ci_high"]
    if d != 0 and abs(d) < 10 ** -digits:
        digits = min(8, 1 - int(math.floor(math.log10(abs(d)))))
    f = lambda x: f"{x:.{digits}f}"  # noqa: E731
    ci = f"{level} CI {f(lo)} to {f(hi)}, {res['n']:,} {res['unit']}"
    if d == 0:
        core = f"{name_a}'s {m} equals {name_b}'s ({ci})"
    else:
        core = f"{name_a}'s {m} is {'higher' if d > 0 else 'lower'} than {name_b}'s by {f(abs(d))} ({ci})"
    better = (d < 0) == res["lower_is_better"]
    if lo <= 0 <= hi:
        tail = "; the interval includes 0, so these data show no reliable difference."
    else:
        tail = f"; {name_a if better else name_b} is better ({'lower' if res['lower_is_better'] else 'higher'} is " \
               f"better)."
    return core + tail


# ----------------------------------------------------------------------------------------------------------------
# Breakdowns
# ----------------------------------------------------------------------------------------------------------------

ACTIVITY_EDGES = (20, 50, 100, 200)
ACTIVITY_LABELS = ("≤20", "21–50", "51–100", "101–200", ">200")
_MIN, _HOUR, _DAY = 60, 3600, 86400
GAP_EDGES = (_MIN, _HOUR, _DAY, 7 * _DAY, 30 * _DAY)
GAP_LABELS = ("<1 min", "1 min–1 h", "1 h–1 d", "1 d–1 w", "1 w–1 mo", ">1 mo")


def activity_buckets(history_length, scheme: str = "fixed", q: int = 4, reference=None) -> pd.Categorical:
    """User activity (interactions before the held-out one) in buckets.

    fixed: ≤20, 21–50, 51–100, 101–200, >200 (with 5-core data every test user has at least 4). quantile: `q`
    buckets of equal size with edges from `reference` (default: the values themselves), labelled by their integer
    ranges, so several runs of the same users get the same buckets."""
    v = np.asarray(history_length, dtype=np.float64)
    if scheme == "fixed":
        codes = np.searchsorted(np.asarray(ACTIVITY_EDGES, float), v, side="left")
        return pd.Categorical.from_codes(codes, categories=list(ACTIVITY_LABELS), ordered=True)
    if scheme != "quantile":
        raise ValueError(f"scheme must be fixed or quantile, not {scheme!r}")
    ref = np.asarray(v if reference is None else reference, dtype=np.float64)
    edges = np.unique(np.floor(np.quantile(ref, np.linspace(0, 1, int(q) + 1))))
    if len(edges) < 2:
        edges = np.array([edges[0], edges[0]])
    inner = edges[1:-1]
    labels = []
    for i in range(len(edges) - 1):
        lo = int(edges[0]) if i == 0 else int(edges[i]) + 1
        hi = int(edges[i + 1])
        labels.append(str(lo) if lo == hi else f"{lo}–{hi}")
    if len(set(labels)) < len(labels):  # degenerate (all values equal): one bucket
        labels, inner = [labels[0]], np.array([])
    codes = np.searchsorted(inner, v, side="left")
    return pd.Categorical.from_codes(codes, categories=labels, ordered=True)


def gap_buckets(gap_seconds) -> pd.Categorical:
    """Time between a user's previous interaction and the held-out one: <1 min, 1 min–1 h, 1 h–1 d, 1 d–1 w,
    1 w–1 mo (30 days), >1 mo. Bins are [lower, upper): exactly 1 h goes to 1 h–1 d."""
    v = np.asarray(gap_seconds, dtype=np.float64)
    codes = np.searchsorted(np.asarray(GAP_EDGES, float), v, side="right")
    return pd.Categorical.from_codes(codes, categories=list(GAP_LABELS), ordered=True)


def _borrow_context(frames: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], str | None]:
    """For rating rows: history_length / gap_before_target from a run that has them for the same (user, item)
    (the rating head of a ranking run holds them; the chronological rating rows are the same interactions)."""
    donors = [(n, f) for n, f in frames.items() if "history_length" in f and "gap_before_target" in f]
    if not donors:
        return frames, None
    dname, donor = donors[0]
    ctx = donor[[c for c in ("user_id", "user") if c in donor][:1] + ["item", "history_length",
                                                                        "gap_before_target"]]
    out = {}
    for n, f in frames.items():
        if "history_length" in f or not set(ctx.columns[:2]) <= set(f.columns):
            out[n] = f
            continue
        out[n] = f.merge(ctx.drop_duplicates(list(ctx.columns[:2])), on=list(ctx.columns[:2]), how="left")
    return out, dname


def breakdown(frames: dict[str, pd.DataFrame], by: str, family: str, metric: str, scheme: str = "fixed",
              q: int = 4) -> tuple[pd.DataFrame, dict[str, str], str | None]:
    """Metric per bucket of user activity (`by="activity"`) or of the gap before the held-out interaction
    (`by="gap"`), per run.

    `frames` maps a run name to its test results. Ranking: mean per-user `metric`; rating: RMSE (`metric="rmse"`,
    sqrt of the mean squared error in the bucket) or MAE. Returns (long frame with run, bucket, value, count;
    every bucket of every run, value NaN where empty), {run: why it was skipped}, and the run whose context was
    borrowed for rating runs without it (or None)."""
    col = {"activity": "history_length", "gap": "gap_before_target"}[by]
    borrowed = None
    if family == "rating":
        rows = {}
        skipped: dict[str, str] = {}
        for n, f in frames.items():
            try:
                rows[n] = _rating_rows(f, n)
            except ComparisonError as exc:
                skipped[n] = str(exc)
        rows, borrowed = _borrow_context(rows)
    else:
        rows, skipped = dict(frames), {}
    usable = {}
    for n, f in rows.items():
        if col not in f or f[col].isna().all():
            what = "history length" if by == "activity" else "time gap"
            skipped[n] = f"no {what} per held-out row in its results (rating runs do not record it)"
        elif family == "ranking" and metric not in f:
            skipped[n] = f"no per-user {metric}"
        else:
            usable[n] = f[f[col].notna()]
    reference = np.concatenate([f[col].to_numpy(float) for f in usable.values()]) if usable else None
    parts = []
    for n, f in usable.items():
        buckets = (activity_buckets(f[col], scheme, q, reference) if by == "activity" else gap_buckets(f[col]))
        if family == "ranking":
            vals = f[metric].astype(float)
        else:
            vals = f["sq_error" if metric == "rmse" else "abs_error"].astype(float)
        g = pd.DataFrame({"bucket": buckets, "v": vals.to_numpy()}).groupby("bucket", observed=False)["v"]
        agg = g.agg(["mean", "count"]).reset_index()
        if family == "rating" and metric == "rmse":
            agg["mean"] = np.sqrt(agg["mean"])
        parts.append(pd.DataFrame({"run": n, "bucket": agg["bucket"], "value": agg["mean"],
                                   "count": agg["count"].astype(int)}))
    out = (pd.concat(parts, ignore_index=True) if parts
           else pd.DataFrame({"run": pd.Series(dtype=str), "bucket": pd.Series(dtype=str),
                              "value": pd.Series(dtype=float), "count": pd.Series(dtype=int)}))
    return out, skipped, borrowed


def breakdown_chart(df: pd.DataFrame, y_title: str, x_title: str):
    """Grouped bars (one bar per run in each bucket) with the number of users/rows on top of each bar."""
    import altair as alt

    order = list(df["bucket"].cat.categories) if isinstance(df["bucket"].dtype, pd.CategoricalDtype) \
        else list(dict.fromkeys(df["bucket"]))
    data = df.assign(bucket=df["bucket"].astype(str)).dropna(subset=["value"])
    base = alt.Chart(data).encode(
        x=alt.X("bucket:N", sort=[str(o) for o in order], title=x_title, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("run:N"),
        y=alt.Y("value:Q", title=y_title),
        color=alt.Color("run:N", title="run"),
        tooltip=["run", "bucket", alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("count:Q", title="n")])
    bars = base.mark_bar()
    text = base.mark_text(dy=-6, fontSize=10).encode(text=alt.Text("count:Q"))
    return (bars + text).properties(height=320)
