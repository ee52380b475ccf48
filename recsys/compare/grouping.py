"""Which runs may stand side by side: the comparability key, groups of comparable runs, and why groups differ.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recsys.compare.discovery import FAMILIES, info_of, label_of, objective

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
CHRONO_RANKING_SPLIT = "leave_one_out_by_time"


def has_rating_head(info: dict) -> bool:
    """A ranking run that also reports RMSE/MAE of the chronological held-out ratings (SS4Rec's rating head)."""
    if "rating" in info.get("protocol", {}):
        return True
    metrics = info.get("metrics") or {}
    return any("rmse" in m for m in metrics.values() if isinstance(m, dict))


def families(info: dict) -> list[str]:
    """The metric families a run reports: its objective, plus ``rating`` for a ranking run with a rating head."""
    obj = objective(info)
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
    if objective(info) == "ranking":  # the rating head of a ranking run: chronological held-out ratings
        if proto.get("split") != CHRONO_RANKING_SPLIT:
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
    info = info_of(info)
    family = family or objective(info)
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
        return [info_of(m) for m in self.members]

    @property
    def labels(self) -> list[str]:
        return [label_of(m) for m in self.members]


def group_runs(items: Iterable[Any]) -> list[Group]:
    """Comparable groups of runs (dicts from run.json, or `Run`s): ranking groups first, then rating groups, each in
    order of first appearance. A ranking run with a rating head appears in one group of each family."""
    by_key: dict[ComparabilityKey, list] = {}
    for family in FAMILIES:
        for item in items:
            key = comparability_key(info_of(item), family)
            if key is not None:
                by_key.setdefault(key, []).append(item)
    return [Group(i + 1, key, members) for i, (key, members) in enumerate(by_key.items())]


_FIELD_NAMES = {
    "family": "metric family", "data.name": "dataset", "data.fingerprint": "data fingerprint (source files)",
    "protocol.mask_seen": "mask_seen", "protocol.ks": "cutoffs ks", "protocol.split": "split",
}


def default_group(groups: Sequence[Group]) -> int:
    """The group a page opens on: ranking runs of SS4Rec that were trained (not re-evaluated) under the unmasked
    protocol, most such runs first; else the first group."""
    def score(g: Group) -> tuple[int, int, int]:
        trained = [i for i in g.infos if not isinstance(i.get("evaluated_from"), dict)]
        ss4rec = sum(i.get("model") == "ss4rec" for i in trained)
        masked = any(bool((i.get("protocol") or {}).get("mask_seen")) for i in g.infos)
        return (g.family == "ranking" and ss4rec > 0 and not masked, ss4rec, len(trained))

    return max(range(len(groups)), key=lambda i: score(groups[i])) if groups else 0


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

