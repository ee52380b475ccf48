"""Why SS4Rec wins or loses: its ablation variants against the released configuration, from the runs in a folder.

Per comparability group of complete ranking runs (same data, filters and protocol):

* the *reference* is the released SS4Rec (variant "released", or else the one SS4Rec configuration that changes
  nothing `changes` knows);
* every other SS4Rec configuration is a row: what it changes (read from its configuration, not from its name), its
  test metrics as mean +- sd over its seeds, and the paired bootstrap of (variant - released) over users, per-user
  metrics averaged over each configuration's seeds;
* SASRec given the target gap (`target_gap_embedding`) is compared with plain SASRec (does the information help
  attention?) and with the released SS4Rec (is the S5 worth more than the information?);
* `regime_breakdown`: the same paired difference inside buckets of the gap to the predicted interaction (same second,
  under a minute, under a day, longer) or of the history length, each with its count and a 95% interval.

Everything is plain data, tested without Streamlit; app_pages/ablations.py draws it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.compare.answer import (
    Comparison,
    Contender,
    _compare_ranking,
    _contenders,
    _group_title,
    _groups,
    _holm_text,
    _n_users,
    set_holm,
)
from recsys.compare.breakdowns import GAP_SCHEMES, activity_buckets, bucket_interval, gap_buckets
from recsys.compare.describe import dataset_summary, protocol_summary
from recsys.compare.discovery import info_of, objective
from recsys.compare.seeds import DEFAULT_INTERVAL, SeedAlignmentError, per_user_mean, seed_groups
from recsys.compare.variants import changes, is_ablation

METRICS = ("ndcg@10", "hr@10", "mrr@10")

# the gap to the predicted interaction, in the regimes that matter for a model told it (a coarsening of the one gap
# rule: recsys.compare.breakdowns.GAP_SCHEMES)
REGIME_EDGES, REGIME_LABELS = GAP_SCHEMES["regime"]


@dataclass
class AblationRow:
    """One configuration against its reference."""

    config: Contender
    reference: Contender
    change: str
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # metric -> (this - reference)

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class AblationStudy:
    title: str
    dataset: str
    masked: bool
    protocol: str
    data: str
    n_users: int | None
    reference: Contender
    rows: list[AblationRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _reference(contenders: list[Contender]) -> Contender | None:
    plain = [c for c in contenders if c.model == "ss4rec" and not changes(c.seeds.info)]
    named = [c for c in plain if c.variant == "released"]
    pick = named or plain
    return max(pick, key=lambda c: c.n_seeds) if pick else None


def ablation_studies(runs: Sequence[Any], load_results: Callable[[Any], pd.DataFrame],
                     metrics: Sequence[str] = METRICS, n_boot: int = 2000, seed: int = 0,
                     interval: str = DEFAULT_INTERVAL) -> list[AblationStudy]:
    """One study per comparability group that holds the released SS4Rec and at least one other configuration to
    compare with it (see the module docstring). Intervals as recsys.compare.seeds.INTERVALS[interval] says; p-values
    Holm-adjusted over every comparison of a study (its rows x metrics: what its chart shows)."""
    out = []
    for group in _groups(runs, "ranking"):
        members = [m for m in group.members if objective(info_of(m)) == "ranking"]
        contenders = _contenders(seed_groups(members), metrics[0], list(metrics))
        ref = _reference(contenders)
        if ref is None:
            continue
        info = info_of(ref.seeds.members[0])
        study = AblationStudy(title=_group_title(info), dataset=str(info["dataset"].get("name")),
                              masked=bool(info["protocol"].get("mask_seen")),
                              protocol=protocol_summary(info, "ranking"), data=dataset_summary(info),
                              n_users=_n_users(members), reference=ref)
        plain_sasrec = [c for c in contenders if c.model == "sasrec" and not changes(c.seeds.info)]
        for c in contenders:
            if c is ref:
                continue
            if c.model == "ss4rec":
                refs = [ref]
            elif c.model == "sasrec" and is_ablation(c.seeds.info):
                refs = plain_sasrec[:1] + [ref]
            else:
                continue
            for r in refs:
                row = AblationRow(config=c, reference=r,
                                  change="; ".join(changes(c.seeds.info)) or "a different training setting")
                for m in metrics:
                    row.comparisons[m] = _compare_ranking(c, r, load_results, m, n_boot, seed, interval)
                study.rows.append(row)
        if not study.rows:
            continue
        set_holm([c for row in study.rows for c in row.comparisons.values()])
        study.rows.sort(key=_row_order)
        if any(c.n_seeds == 1 for c in [ref] + [r.config for r in study.rows]):
            study.notes.append("Some configurations have a single seed: their ± is missing and their interval "
                               "covers users only, not training randomness.")
        out.append(study)
    return sorted(out, key=lambda s: (s.masked, s.dataset != "ml-100k", s.dataset))


# the order: what the model is told, the gaps, their scale, the layers; then anything else
ORDER = ("no-target-time", "zero-gaps", "shuffled-gaps", "constant-gap", "log1p-gaps", "span-normalised", "s5-only",
         "mamba-only")


def _row_order(row: AblationRow) -> tuple:
    v = row.config.variant
    return (row.config.model != "ss4rec", ORDER.index(v) if v in ORDER else len(ORDER), row.name,
            row.reference.model != row.config.model)


def study_table(study: AblationStudy, metric: str = "ndcg@10", digits: int = 4) -> pd.DataFrame:
    """One line per row: what changed, seeds, test metric mean ± sd, the difference from its reference with its
    interval and p, and a plain reading."""
    from recsys.compare.answer import mean_sd_text
    from recsys.compare.describe import format_p, metric_display

    lines = []
    for row in study.rows:
        c = row.comparisons.get(metric)
        ok = c if c is not None and not c.problem else None  # a comparison with a result
        lines.append({
            "configuration": row.name, "compared with": row.reference.name, "what changes": row.change,
            "seeds": row.config.seeds_text,
            f"test {metric_display(metric)}": mean_sd_text(row.config.test[metric], digits),
            f"reference {metric_display(metric)}": mean_sd_text(row.reference.test[metric], digits),
            "difference (95% CI)": (f"{ok.diff:+.{digits}f} ({ok.ci_low:+.{digits}f} … {ok.ci_high:+.{digits}f})"
                                    if ok is not None else f"not comparable: {c.problem if c else 'no result'}"),
            "p": format_p(ok.p_value, ok.n_boot) if ok is not None else "",
            "p (Holm)": _holm_text(ok) if ok is not None else "",
            "reading": reading(ok) if ok is not None else "",
        })
    return pd.DataFrame(lines)


def reading(c: Comparison) -> str:
    if not c.reliable:
        return "no detectable difference"
    return "better than the reference" if c.a_better else "worse than the reference"


def study_frame(study: AblationStudy, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """For `charts.difference_chart`: row (configuration vs reference), metric, diff, ci_low, ci_high, text."""
    from recsys.compare.answer import comparison_text
    from recsys.compare.describe import metric_display

    rows = []
    for row in study.rows:
        for m in metrics:
            c = row.comparisons.get(m)
            if c is None or c.problem:
                continue
            rows.append({"row": f"{row.name} − {row.reference.name}", "metric": metric_display(m), "diff": c.diff,
                         "ci_low": c.ci_low, "ci_high": c.ci_high, "text": comparison_text(c)})
    return pd.DataFrame(rows, columns=["row", "metric", "diff", "ci_low", "ci_high", "text"])


def regime_buckets(gap_seconds) -> pd.Categorical:
    """The gap to the predicted interaction: same second (0 s), 1 s – 1 min, 1 min – 1 day, over a day."""
    return gap_buckets(gap_seconds, "regime")


def regime_breakdown(row: AblationRow, load_results: Callable[[Any], pd.DataFrame], by: str = "gap",
                     metric: str = "ndcg@10", n_boot: int = 1000) -> pd.DataFrame:
    """(row's configuration - its reference) on `metric` within buckets of the gap to the predicted interaction
    (`by="gap"`) or of the history length (`by="length"`): per bucket the users, both means, the mean paired
    difference and its 95% bootstrap interval (seeds averaged per user first)."""
    frames_a = [load_results(m) for m in row.config.seeds.members]
    frames_b = [load_results(m) for m in row.reference.seeds.members]
    a, b = per_user_mean(frames_a, [metric]), per_user_mean(frames_b, [metric])
    col = "user_id" if "user_id" in a and "user_id" in b else "user"
    context = frames_b[0]
    need = "gap_before_target" if by == "gap" else "history_length"
    if need not in context:
        raise SeedAlignmentError(f"the per-user results do not record {need}")
    ia, ib = a.set_index(col).sort_index(), b.set_index(col).sort_index()
    if not ia.index.equals(ib.index):
        raise SeedAlignmentError("the two configurations were tested on different users")
    ctx = context.set_index(col if col in context else "user").sort_index().reindex(ia.index)
    buckets = regime_buckets(ctx[need]) if by == "gap" else activity_buckets(ctx[need])
    diff = ia[metric].to_numpy(float) - ib[metric].to_numpy(float)
    out = []
    for label in buckets.categories:
        sel = np.asarray(buckets == label)
        lo, hi = bucket_interval(diff[sel], n_boot=n_boot)
        out.append({"bucket": label, "users": int(sel.sum()),
                    "configuration": float(ia[metric].to_numpy(float)[sel].mean()) if sel.any() else math.nan,
                    "reference": float(ib[metric].to_numpy(float)[sel].mean()) if sel.any() else math.nan,
                    "diff": float(diff[sel].mean()) if sel.any() else math.nan, "ci_low": lo, "ci_high": hi})
    df = pd.DataFrame(out)
    df["bucket"] = pd.Categorical(df["bucket"], categories=list(buckets.categories), ordered=True)
    return df


def _listing(items: list[str]) -> str:
    """"A", "A and B", "A, B and C"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def conclusions(study: AblationStudy, metrics: Sequence[str] | None = None, digits: int = 4) -> list[str]:
    """One sentence per row, from its numbers only, covering every metric it was compared on (what the chart
    shows): each metric's difference and interval, then the reading per metric ("worse on HR@10; no detectable
    difference on NDCG@10 and MRR@10")."""
    from recsys.compare.describe import metric_display

    out = []
    for row in study.rows:
        comps = [(m, c) for m, c in row.comparisons.items()
                 if (metrics is None or m in metrics) and c is not None and not c.problem]
        if not comps:
            continue
        numbers = "; ".join(f"{metric_display(m)} {c.diff:+.{digits}f} (95% CI {c.ci_low:+.{digits}f} … "
                            f"{c.ci_high:+.{digits}f})" for m, c in comps)
        by_reading: dict[str, list[str]] = {}
        for m, c in comps:
            by_reading.setdefault(reading(c), []).append(metric_display(m))
        verdict = "; ".join(f"{r} on {_listing(ms)}" if len(comps) > 1 else r for r, ms in by_reading.items())
        out.append(f"**{row.name}** ({row.change}) against {row.reference.name} ({row.config.seeds_text} vs "
                   f"{row.reference.seeds_text}): {numbers}: {verdict}.")
    return out


# ------------------------------------------------------------------------------------------------ how time enters
# The settings through which time reaches each architecture (issue 23). A configuration that changes only these is a
# "way time enters" that architecture; its reference is the same architecture without time: SS4Rec with every gap
# set to one constant (time-blind, order kept), plain SASRec. TiSASRec (relation embeddings of the intervals between
# history items) is set against plain SASRec, an architecture and recipe of its own (said beside it).
TIME_SETTINGS = {"ss4rec": {"target_gap", "gap_features"}, "sasrec": {"target_gap_embedding"}}


def _changed(info: dict) -> set[str]:
    """The card settings whose value differs from the released one (the catalogue's rule)."""
    from recsys import catalogue

    card = catalogue.card(info.get("model"))
    return set(card.changed(info.get("config") or {})) if card else set()


def time_free(info: dict) -> bool:
    """An architecture without time: SS4Rec fed one constant gap (nothing else changed), SASRec as published."""
    model, changed = info.get("model"), _changed(info)
    if model == "ss4rec":
        return changed == {"gap_ablation"} and (info.get("config") or {}).get("gap_ablation") == "constant"
    return model == "sasrec" and not changed


def how_time_enters(info: dict) -> str | None:
    """In words, how time reaches a configuration's scores, and whether the target's time does; None when the
    configuration is not one of the ways time enters that this section compares."""
    from recsys.compare.variants import reads_target_time

    model, changed, cfg = info.get("model"), _changed(info), info.get("config") or {}
    target = "the target's time included" if reads_target_time(info) else "history only"
    if model == "ss4rec" and changed <= TIME_SETTINGS["ss4rec"]:
        features = cfg.get("gap_features", "none")
        how = "S5 decay by the gaps" + {"all": " + gap features (gap after each item)",
                                         "history": " + gap features (gap before each item)"}.get(features, "")
        return f"{how}; {target}"
    if model == "sasrec" and changed == {"target_gap_embedding"}:
        return f"gap feature (gap after each item); {target}"
    if model == "tisasrec" and not changed:
        unit = "raw seconds, log2 buckets" if cfg.get("interval") == "log2" else "units of the user's smallest gap"
        return f"relation embeddings of the intervals between history items ({unit}); {target}"
    return None


def time_entry_studies(runs: Sequence[Any], load_results: Callable[[Any], pd.DataFrame],
                       metrics: Sequence[str] = METRICS, n_boot: int = 2000, seed: int = 0,
                       interval: str = DEFAULT_INTERVAL) -> list[AblationStudy]:
    """Per comparability group, every way time enters an architecture (`how_time_enters`) against the same
    architecture without time (`time_free`): paired bootstraps as in `ablation_studies`, p-values Holm-adjusted over
    the study. A row's `change` says how time enters; groups without a time-free reference are left out."""
    out = []
    for group in _groups(runs, "ranking"):
        members = [m for m in group.members if objective(info_of(m)) == "ranking"]
        contenders = _contenders(seed_groups(members), metrics[0], list(metrics))
        free = {m: max((c for c in contenders if c.model == m and time_free(c.seeds.info)), key=lambda c: c.n_seeds,
                       default=None) for m in ("ss4rec", "sasrec")}
        rows = []
        for c in contenders:
            how = how_time_enters(c.seeds.info)
            ref = free.get("sasrec" if c.model == "tisasrec" else c.model)
            if how is None or ref is None:
                continue
            row = AblationRow(config=c, reference=ref, change=how)
            for m in metrics:
                row.comparisons[m] = _compare_ranking(c, ref, load_results, m, n_boot, seed, interval)
            rows.append(row)
        if not rows:
            continue
        info = info_of(rows[0].reference.seeds.members[0])
        study = AblationStudy(title=_group_title(info), dataset=str(info["dataset"].get("name")),
                              masked=bool(info["protocol"].get("mask_seen")),
                              protocol=protocol_summary(info, "ranking"), data=dataset_summary(info),
                              n_users=_n_users(members), reference=rows[0].reference, rows=rows)
        set_holm([c for row in rows for c in row.comparisons.values()])
        study.rows.sort(key=lambda r: (r.config.model != "ss4rec", r.config.model, "history only" in r.change,
                                       r.change))
        if any(r.config.model == "tisasrec" for r in rows):
            study.notes.append("TiSASRec is set against plain SASRec, the nearest architecture without time: it is "
                               "a model of its own with its paper's recipe (hidden 50, one head), so its row "
                               "mixes the time input with those differences.")
        if any(c.n_seeds == 1 for r in rows for c in (r.config, r.reference)):
            study.notes.append("Some configurations have a single seed: their ± is missing and their interval "
                               "covers users only, not training randomness.")
        out.append(study)
    return sorted(out, key=lambda s: (s.masked, s.dataset != "ml-100k", s.dataset))


def time_table(study: AblationStudy, metrics: Sequence[str] = METRICS, digits: int = 4) -> pd.DataFrame:
    """One line per way time enters: architecture, how, the time-free reference, seeds, and per metric the
    difference from the reference with its 95% interval."""
    from recsys.compare.describe import metric_display

    lines = []
    for row in study.rows:
        line = {"architecture": row.config.name.split(" · ")[0], "how time enters": row.change}
        for m in metrics:  # the numbers before the names, which the chart beside it already shows
            c = row.comparisons.get(m)
            line[f"{metric_display(m)} difference (95% CI)"] = (
                f"{c.diff:+.{digits}f} ({c.ci_low:+.{digits}f} … {c.ci_high:+.{digits}f})"
                if c is not None and not c.problem else f"not comparable: {c.problem if c else 'no result'}")
        line.update({"seeds": f"{row.config.n_seeds} vs {row.reference.n_seeds}", "configuration": row.name,
                     "without time": row.reference.name})
        lines.append(line)
    return pd.DataFrame(lines)


def time_by_gap(study: AblationStudy, load_results: Callable[[Any], pd.DataFrame], metric: str = "ndcg@10",
                n_boot: int = 1000) -> pd.DataFrame:
    """Rows x gap buckets: each way time enters minus its time-free reference on `metric` inside each bucket of the
    gap to the predicted interaction, "diff (low … high), n users"."""
    table = {}
    for row in study.rows:
        bd = regime_breakdown(row, load_results, "gap", metric, n_boot)
        table[row.name] = {str(b.bucket): (f"{b.diff:+.4f} ({b.ci_low:+.4f} … {b.ci_high:+.4f}), n={b.users:,}"
                                           if b.users else "no users") for b in bd.itertuples()}
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("configuration").reset_index()
