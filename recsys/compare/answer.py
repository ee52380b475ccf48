"""The answer to the workbench's question, built from the runs in a folder: does SS4Rec beat its baselines, on which
metric, and by how much -- per dataset and protocol, with the caveats that qualify each claim.

Rules (the same a careful reader would apply by hand):

* Only complete runs that passed every check count; runs are compared only inside one comparability group
  (recsys.compare.grouping: same data, fingerprint, filters and protocol).
* Runs that differ only in their seed are one *configuration* (recsys.compare.seeds): mean +- sd over seeds.
* The configuration that represents a model is chosen on **validation** (mean over seeds of the validation metric);
  its test numbers are then read once. Never on test.
* The best SS4Rec configuration is compared with the best learned baseline (SASRec, GRU4Rec, NCF, ...) and with
  the best floor (closed-form: popularity, Markov) by a paired bootstrap over users of per-user metrics averaged
  over each configuration's seeds. A learned model whose test mean does not exceed the best floor's is flagged.
* Caveats are derived from the runs: SS4Rec's target-time input, masked re-evaluations of unmasked checkpoints,
  single seeds, unequal seed counts, floors not beaten.

Rating: the best learned rating model (by validation RMSE) against the best rating floor (bias / global mean),
RMSE pooled over seeds (per held-out row, the squared error averaged over seeds) with a paired bootstrap.
Everything here is plain data (dataclasses, frames) so it is tested without Streamlit; app_pages/answer.py draws it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.compare.describe import dataset_summary, history_length, is_floor, metric_display, protocol_summary
from recsys.compare.discovery import info_of, objective
from recsys.compare.grouping import Group, group_runs
from recsys.compare.paired import ComparisonError
from recsys.compare.seeds import (
    DEFAULT_INTERVAL,
    SeedAlignmentError,
    SeedGroup,
    compare_configurations,
    configuration_labels,
    mean_sd,
    pooled_rating_rows,
    seed_groups,
)
from recsys.compare.variants import is_ablation
from recsys.evaluation.metrics import holm_adjust

TARGET_TIME_CAVEAT = ("SS4Rec is told the time of the interaction it predicts (the gap to the target drives its last "
                      "state update); SASRec, GRU4Rec, NCF and the floors are not. That is the paper's setting, and "
                      "part of any SS4Rec advantage may come from it.")
MASKED_CAVEAT = ("Masked re-evaluations reuse checkpoints trained and selected under the unmasked protocol (same "
                 "weights, epoch chosen on unmasked validation); only the ranking of the test target changes.")


@dataclass
class Contender:
    """One configuration (its seeds pooled) with the numbers the answer quotes."""

    name: str
    model: str
    variant: str
    seeds: SeedGroup
    floor: bool
    valid: float  # mean over seeds of the selection metric on validation
    test: dict[str, tuple[float, float, int]]  # metric -> (mean, sd, n seeds) on test
    beats_floor: bool | None = None  # above the best floor with the interval excluding 0; None for floors / no floor
    vs_floor: Comparison | None = None  # this configuration - the best floor, on the verdict's metric

    @property
    def n_seeds(self) -> int:
        return len(self.seeds.members)

    @property
    def seeds_text(self) -> str:
        return self.seeds.seeds_text()


@dataclass
class Comparison:
    """Paired bootstrap of A - B on one metric (per-user values averaged over each configuration's seeds)."""

    a: str
    b: str
    metric: str
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_boot: int
    lower_is_better: bool = False
    problem: str | None = None
    interval: str = "users"  # how the interval was drawn: recsys.compare.seeds.INTERVALS
    p_holm: float = math.nan  # Holm-adjusted over the comparisons shown together (set by the verdict)

    @property
    def reliable(self) -> bool:
        return self.problem is None and not (self.ci_low <= 0 <= self.ci_high)

    @property
    def a_better(self) -> bool:
        return (self.diff < 0) if self.lower_is_better else (self.diff > 0)


@dataclass
class Verdict:
    """The answer for one comparability group of ranking runs."""

    title: str  # e.g. "ml-100k · seen items not masked"
    dataset: str
    masked: bool
    protocol: str
    data: str
    metric: str
    n_users: int | None
    ss4rec: Contender | None
    baseline: Contender | None
    floor: Contender | None
    contenders: list[Contender] = field(default_factory=list)  # every configuration of the group, best first
    comparisons: list[Comparison] = field(default_factory=list)
    variants: list[Comparison] = field(default_factory=list)  # other SS4Rec configurations against the chosen one
    caveats: list[str] = field(default_factory=list)
    headline: str = ""


def _metric_values(g: SeedGroup, split: str, metric: str) -> list[float | None]:
    return [((info_of(m).get("metrics") or {}).get(split) or {}).get(metric) for m in g.members]


def _contenders(groups: list[SeedGroup], metric: str, test_metrics: Sequence[str], lower_is_better: bool = False
                ) -> list[Contender]:
    out = []
    for g, name in zip(groups, configuration_labels(groups)):
        valid, _, n_valid = mean_sd(_metric_values(g, "valid", metric))
        test = {m: mean_sd(_metric_values(g, "test", m)) for m in test_metrics}
        if g.deterministic:
            test = {m: (v[0], math.nan, v[2]) for m, v in test.items()}
        out.append(Contender(name=name, model=g.model, variant=g.variant, seeds=g, floor=is_floor(g.info),
                             valid=valid if n_valid else math.nan, test=test))
    sign = 1.0 if lower_is_better else -1.0
    # best first by validation; configurations without a validation number last
    return sorted(out, key=lambda c: (not np.isfinite(c.valid), sign * c.valid if np.isfinite(c.valid) else 0.0))


def _best(contenders: list[Contender], keep: Callable[[Contender], bool]) -> Contender | None:
    return next((c for c in contenders if keep(c) and np.isfinite(c.valid)), None)


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if x is not None and np.isfinite(x) else "n/a"


def mean_sd_text(value: tuple[float, float, int], digits: int = 4) -> str:
    mean, sd, _ = value
    return _fmt(mean, digits) + (f" ± {sd:.{digits}f}" if sd is not None and np.isfinite(sd) else "")


def _no_comparison(a: Contender, b: Contender, metric: str, n_boot: int, problem: str,
                   lower_is_better: bool = False) -> Comparison:
    """A comparison that could not be made: every number NaN, n 0, and the reason."""
    nan = math.nan
    return Comparison(a.name, b.name, metric, nan, nan, nan, nan, nan, nan, n=0, n_boot=n_boot,
                      lower_is_better=lower_is_better, problem=problem)


def _compare_ranking(a: Contender, b: Contender, load_results, metric: str, n_boot: int, seed: int,
                     interval: str = DEFAULT_INTERVAL) -> Comparison:
    try:
        r = compare_configurations([load_results(m) for m in a.seeds.members],
                                   [load_results(m) for m in b.seeds.members], metric, n_boot=n_boot, seed=seed,
                                   interval=interval)
    except (SeedAlignmentError, ComparisonError, ValueError, OSError) as exc:
        return _no_comparison(a, b, metric, n_boot, str(exc))
    except Exception as exc:  # an unreadable result file is a message on the page, never a traceback
        return _no_comparison(a, b, metric, n_boot, f"{type(exc).__name__}: {exc}")
    return Comparison(a.name, b.name, metric, r["mean_a"], r["mean_b"], r["diff"], r["ci_low"], r["ci_high"],
                      r["p_value"], int(r["n"]), int(r["n_boot"]), interval=interval)


def set_holm(comparisons: Sequence[Comparison]) -> None:
    """Holm-adjusted p-values over comparisons shown together (those with a problem are not tests). A bootstrap p of
    0 means below 1/n_boot: it enters as 1/n_boot, so its adjusted value is an upper bound (shown with "≤")."""
    adjusted = holm_adjust([math.nan if c.problem else max(c.p_value, 1.0 / c.n_boot) for c in comparisons])
    for c, p in zip(comparisons, adjusted):
        c.p_holm = float(p)


def multiplicity_note(comparisons: Sequence[Comparison], alpha: float = 0.05) -> str:
    """One sentence on reading many intervals at once: how many exclude 0, how many would by chance if nothing
    differed, and how many stay below alpha after Holm's adjustment (set_holm) over all of them."""
    tests = [c for c in comparisons if not c.problem]
    if len(tests) < 2:
        return ""
    k = sum(c.reliable for c in tests)
    kept = sum(np.isfinite(c.p_holm) and c.p_holm < alpha for c in tests)
    return (f"{k} of these {len(tests)} intervals exclude 0; if nothing differed, about {alpha * len(tests):.1f} "
            f"would by chance. After Holm's adjustment over all {len(tests)}, {kept} "
            f"{'stays' if kept == 1 else 'stay'} below p = {alpha:g} "
            "(column p (Holm)).")


def comparison_text(c: Comparison, digits: int = 4) -> str:
    """"SS4Rec − GRU4Rec: −0.0068 (95% CI −0.0160 … +0.0021, p = 0.14, 943 users)"."""
    if c.problem:
        return f"{c.a} vs {c.b}: not comparable ({c.problem})"
    from recsys.compare.describe import format_p

    return (f"{c.a} − {c.b} on {metric_display(c.metric)}: {c.diff:+.{digits}f} (95% CI {c.ci_low:+.{digits}f} … "
            f"{c.ci_high:+.{digits}f}, p {'= ' if c.p_value > 0 else ''}{format_p(c.p_value, c.n_boot)}, "
            f"{c.n:,} {'users' if not c.lower_is_better else 'held-out ratings'})")


def _group_title(info: dict) -> str:
    masked = bool((info.get("protocol") or {}).get("mask_seen"))
    return f"{info['dataset'].get('name')}, leave-one-out, " + ("seen items masked" if masked else
                                                               "seen items not masked")


def _n_users(members: Sequence[Any]) -> int | None:
    ns = {n for m in members if (n := ((info_of(m).get("metrics") or {}).get("test") or {}).get("n")) is not None}
    return int(next(iter(ns))) if len(ns) == 1 else None


def _groups(runs: Sequence[Any], family: str) -> list[Group]:
    """The comparability groups of `family` among the complete runs of that objective that passed every check."""
    usable = [r for r in runs if info_of(r).get("status") == "complete" and not getattr(r, "problem", None)
              and objective(info_of(r)) == family]
    return [g for g in group_runs(usable) if g.family == family]


def ranking_verdicts(runs: Sequence[Any], load_results: Callable[[Any], pd.DataFrame], metric: str = "ndcg@10",
                     extra: Sequence[str] = ("hr@10", "mrr@10"), n_boot: int = 2000, seed: int = 0,
                     interval: str = DEFAULT_INTERVAL) -> list[Verdict]:
    """One verdict per comparability group of complete ranking runs that holds an SS4Rec or a learned baseline.
    Every interval is drawn as recsys.compare.seeds.INTERVALS[interval] says (default: seeds and users)."""
    out = []
    for group in _groups(runs, "ranking"):
        v = _ranking_verdict(group, load_results, metric, list(extra), n_boot, seed, interval)
        if v is not None:
            out.append(v)
    # the embedded / unmasked headline first, then by dataset
    return sorted(out, key=lambda v: (v.masked, v.dataset != "ml-100k", v.dataset))


def _ranking_verdict(group: Group, load_results, metric: str, extra: list[str], n_boot: int, seed: int,
                     interval: str = DEFAULT_INTERVAL) -> Verdict | None:
    members = [m for m in group.members if objective(info_of(m)) == "ranking"]
    contenders = _contenders(seed_groups(members), metric, [metric, *extra])
    if not any(not c.floor for c in contenders):
        return None
    info = info_of(members[0])
    # ablations (a layer, the gaps or the target's time taken away; a baseline given SS4Rec's target time) are
    # evidence for "why" (recsys.compare.ablations), not candidates for the headline
    ss4rec = _best(contenders, lambda c: c.model == "ss4rec" and not is_ablation(c.seeds.info))
    baseline = _best(contenders, lambda c: c.model != "ss4rec" and not c.floor and not is_ablation(c.seeds.info))
    floor = _best(contenders, lambda c: c.floor)
    if floor is not None:  # above the floor means the interval excludes 0, not a higher mean
        for c in contenders:
            if not c.floor:
                c.vs_floor = _compare_ranking(c, floor, load_results, metric, n_boot, seed, interval)
                c.beats_floor = c.vs_floor.reliable and c.vs_floor.a_better if not c.vs_floor.problem else None
    v = Verdict(title=_group_title(info), dataset=str(info["dataset"].get("name")),
                masked=bool(info["protocol"].get("mask_seen")), protocol=protocol_summary(info, "ranking"),
                data=dataset_summary(info), metric=metric, n_users=_n_users(members), ss4rec=ss4rec,
                baseline=baseline, floor=floor, contenders=contenders)
    if ss4rec is not None:
        for other in (baseline, floor):
            if other is None:
                continue
            for m in ([metric, *extra] if other is baseline else [metric]):
                v.comparisons.append(_compare_ranking(ss4rec, other, load_results, m, n_boot, seed, interval))
        for c in contenders:
            if c.model == "ss4rec" and c is not ss4rec and not is_ablation(c.seeds.info):
                v.variants.append(_compare_ranking(c, ss4rec, load_results, metric, n_boot, seed, interval))
    set_holm(v.comparisons + v.variants)
    v.caveats = _ranking_caveats(v, members)
    v.headline = _ranking_headline(v)
    return v


def _ranking_caveats(v: Verdict, members: Sequence[Any]) -> list[str]:
    caveats = []
    if v.ss4rec is not None:
        caveats.append(TARGET_TIME_CAVEAT)
    if v.masked and any(info_of(m).get("evaluated_from") for m in members):
        caveats.append(MASKED_CAVEAT)
    learned = [c for c in (v.ss4rec, v.baseline) if c is not None]
    single = [c.name for c in learned if c.n_seeds < 2]
    if single:
        caveats.append(f"One seed only for {', '.join(single)}: no seed-to-seed spread; the interval covers users, "
                       f"not training randomness.")
    if len({c.n_seeds for c in learned}) > 1:
        caveats.append("Unequal numbers of seeds: " + ", ".join(f"{c.name} {c.n_seeds}" for c in learned) + ".")
    below = [c.name for c in v.contenders if c.beats_floor is False]
    if below and v.floor is not None:
        caveats.append(f"Not reliably above the best floor ({v.floor.name}, test {metric_display(v.metric)} "
                       f"{_fmt(v.floor.test[v.metric][0])}; the interval of the difference includes 0 or lies "
                       f"below it): {', '.join(below)}.")
    if v.ss4rec is None:
        caveats.append("No complete SS4Rec run in this group.")
    if any(c.model in ("ss4rec", "sasrec", "gru4rec") for c in v.contenders) and \
            not any(c.model == "markov" for c in v.contenders):
        caveats.append("No Markov floor (the last movie's successors) was evaluated here, so the sequence models are "
                       "held only to the popularity floor.")
    if v.baseline is None:
        caveats.append("No learned baseline (SASRec, GRU4Rec, NCF) in this group: SS4Rec is compared with the floors "
                       "only.")
    unfinished = [f"{c.name} (best epoch {b} of {n})" for c in learned for b, n in _still_improving(c)]
    if unfinished:
        caveats.append("Still improving when training stopped (the best epoch is the last or the one before it, so "
                       "an epoch cap, not early stopping, ended the run): " + ", ".join(unfinished) + ". The "
                       "comparison is at that training budget, not between converged models.")
    lens = {history_length(info_of(m)) for c in (v.ss4rec, v.baseline) if c is not None for m in c.seeds.members}
    if len(lens - {None}) > 1:
        caveats.append("SS4Rec and the baseline read different history lengths (max_len "
                       + " vs ".join(str(x) for x in sorted(n for n in lens if n is not None)) + ").")
    return caveats


def _still_improving(c: Contender) -> list[tuple[int, int]]:
    """(best epoch, epochs run) of the seeds of `c` whose best epoch is the last or the one before it."""
    out = []
    for m in c.seeds.members:
        info = info_of(m)
        best, run = info.get("best_epoch"), info.get("epochs_run")
        if isinstance(best, int) and isinstance(run, int) and run > 0 and best >= run - 1:
            out.append((best, run))
    return out


def _ranking_headline(v: Verdict) -> str:
    md = metric_display(v.metric)
    if v.ss4rec is None:
        return f"No SS4Rec run on {v.title}."
    main = next((c for c in v.comparisons if v.baseline is not None and c.b == v.baseline.name
                 and c.metric == v.metric), None)
    if main is None:
        rival = v.floor
        main = next((c for c in v.comparisons if rival is not None and c.b == rival.name), None)
    if main is None or main.problem:
        return f"SS4Rec has nothing comparable on {v.title}."
    if not main.reliable:
        verb = "does not reliably differ from"
    else:
        verb = "beats" if main.a_better else "loses to"
    text = (f"On {v.title}, SS4Rec ({v.ss4rec.seeds_text}) {verb} {main.b} ({_seeds(v, main.b)}) on test {md}: "
            f"{_fmt(main.mean_a)} vs {_fmt(main.mean_b)}, difference {main.diff:+.4f} "
            f"(95% CI {main.ci_low:+.4f} … {main.ci_high:+.4f}).")
    return text + _floor_sentence(v, main)


def _floor_sentence(v: Verdict, main: Comparison) -> str:
    """Where SS4Rec stands against the best floor, when the headline compared it with something else."""
    fl = v.ss4rec.vs_floor if v.ss4rec is not None else None
    if v.floor is None or fl is None or fl.problem or main.b == v.floor.name:
        return ""
    where = ("above" if fl.a_better else "below") if fl.reliable else "not reliably above"
    return (f" SS4Rec is {where} the best floor, {v.floor.name}: {fl.diff:+.4f} "
            f"(95% CI {fl.ci_low:+.4f} … {fl.ci_high:+.4f}).")


def _seeds(v: Verdict, name: str) -> str:
    c = next((c for c in v.contenders if c.name == name), None)
    return c.seeds_text if c is not None else "?"


def contender_table(v: Verdict, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Every configuration of the verdict's group: role, validation (selection) metric, test mean ± sd, seeds,
    whether it beats the best floor."""
    if metrics is None:
        metrics = list(v.contenders[0].test) if v.contenders else [v.metric]
    rows = []
    for c in v.contenders:
        role = ("chosen SS4Rec" if c is v.ss4rec else "best baseline" if c is v.baseline
                else "best floor" if c is v.floor else "floor" if c.floor
                else "ablation (What matters)" if is_ablation(c.seeds.info) else "")
        row = {"configuration": c.name, "role": role, f"valid {metric_display(v.metric)} (selection)": _fmt(c.valid)}
        for m in metrics:
            row[f"test {metric_display(m)}"] = mean_sd_text(c.test[m])
        row["seeds"] = c.seeds_text
        row["beats best floor"] = _floor_cell(c)
        rows.append(row)
    return pd.DataFrame(rows)


def _floor_cell(c: Contender) -> str:
    """"yes" only when the interval of (this - best floor) excludes 0; otherwise say which way it fails."""
    f = c.vs_floor
    if c.floor or f is None:
        return ""
    if f.problem:
        return "not comparable"
    if f.reliable:
        return "yes" if f.a_better else f"NO (below: {f.diff:+.4f})"
    return f"not reliably ({f.diff:+.4f}, CI includes 0)"


def differences_frame(comparisons: Sequence[Comparison], name: str = "b") -> pd.DataFrame:
    """The comparable comparisons as rows for recsys.charts.difference_chart (those with a problem are left out);
    each row is named by its B configuration (`name="b"`: the rivals of one SS4Rec) or its A ("a": the variants
    held against one chosen configuration), and the metric."""
    rows = [{"row": f"{c.b if name == 'b' else c.a} · {metric_display(c.metric)}", "a": c.a, "b": c.b,
             "metric": metric_display(c.metric), "diff": c.diff, "ci_low": c.ci_low, "ci_high": c.ci_high,
             "p": c.p_value, "n": c.n, "n_boot": c.n_boot, "text": comparison_text(c)}
            for c in comparisons if not c.problem]
    return pd.DataFrame(rows, columns=["row", "a", "b", "metric", "diff", "ci_low", "ci_high", "p", "n", "n_boot",
                                       "text"])


def differences_table(comparisons: Sequence[Comparison], digits: int = 4) -> pd.DataFrame:
    """The comparisons for reading: A, B, metric, A − B, the 95% interval, the p-value, how many users."""
    from recsys.compare.describe import format_p

    rows = [{"A": c.a, "B": c.b, "metric": metric_display(c.metric),
             "A − B": f"{c.diff:+.{digits}f}" if not c.problem else "",
             "95% CI": f"{c.ci_low:+.{digits}f} … {c.ci_high:+.{digits}f}" if not c.problem else "",
             "p": format_p(c.p_value, c.n_boot) if not c.problem else "",
             "p (Holm)": _holm_text(c),
             "n": f"{c.n:,}" if not c.problem else "", "reading": _reading(c)} for c in comparisons]
    return pd.DataFrame(rows, columns=["A", "B", "metric", "A − B", "95% CI", "p", "p (Holm)", "n", "reading"])


def _holm_text(c: Comparison) -> str:
    if c.problem or not np.isfinite(c.p_holm):
        return ""
    return (f"≤ {c.p_holm:.3f}" if c.p_value <= 0 else f"{c.p_holm:.3f}")


def _reading(c: Comparison) -> str:
    if c.problem:
        return f"not comparable: {c.problem}"
    if not c.reliable:
        return "no reliable difference (the interval includes 0)"
    return f"{c.a if c.a_better else c.b} better"


# The rating half (RMSE verdicts) lives in recsys.compare.answer_rating; its names are part of this module's API.
from recsys.compare.answer_rating import (  # noqa: E402  (after the definitions it imports)
    RatingVerdict,
    interval_over_users,
    rating_verdicts,
)

__all__ = ["Contender", "Comparison", "Verdict", "RatingVerdict", "ranking_verdicts", "rating_verdicts",
           "interval_over_users", "contender_table", "differences_frame", "differences_table", "comparison_text",
           "multiplicity_note", "set_holm", "mean_sd_text", "pooled_rating_rows", "TARGET_TIME_CAVEAT",
           "MASKED_CAVEAT"]
