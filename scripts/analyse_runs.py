"""Analyses of trained runs quoted in docs/results.md.

    python scripts/analyse_runs.py seen-share checkpoints/ncf-ranking-ml-100k-seed0 [more runs]
    python scripts/analyse_runs.py gap-sensitivity checkpoints/ss4rec-ranking-ml-100k-len50-released-seed0 [--users 200]
    python scripts/analyse_runs.py bootstrap RUN_A RUN_B [--metrics ndcg@10 hr@10] [--n-boot 2000]
    python scripts/analyse_runs.py matrix checkpoints [more folders of runs] [--metric ndcg@10]
    python scripts/analyse_runs.py ablations checkpoints [more folders of runs] [--n-boot 2000]
    python scripts/analyse_runs.py rating checkpoints [more folders of runs] [--n-boot 2000]

seen-share: the share of each user's unmasked top-10 (test cases) that they have already rated.
gap-sensitivity: for SS4Rec, the S5 retention per layer for a few gaps, and how much the top-10 for a next rating
after each gap overlaps the top-10 one day after the last rating.
bootstrap: paired bootstrap of metric(A) - metric(B) over the users both runs were tested on (the Compare runs
page's computation; refused when the two runs were not evaluated on the same cases).
matrix: every complete ranking run under the folders, runs that differ only in seed pooled: model x dataset as
"mean ± sd (n seeds)" of the test metric, then per dataset the paired bootstrap of the reference configuration
(SS4Rec, variant released) against each other configuration: by default a two-level bootstrap (seeds, then users,
paired: training randomness included); `--interval users` resamples users over seed-averaged values only.
answer: the answer page's ranking verdicts as text (headline, how many intervals would exclude 0 by chance, every
configuration and whether it is reliably above the best floor), `--interval` as for matrix; then SS4Rec against each
other model by the gap to the predicted interaction (What matters' buckets).
ablations: the What matters page's tables (recsys.compare.ablations): each ablation against its reference (mean ± sd
over seeds, paired bootstrap of NDCG/HR/MRR@10), then each one's NDCG@10 difference by the gap to the predicted
interaction and by history length, with users and 95% intervals per bucket.
rating: per rating protocol (dataset, split, fold), every configuration's validation and test RMSE (mean ± sd over
seeds; the best learned one and the best floor chosen on validation), the paired bootstrap of each learned
configuration against NCF and against the best floor (squared errors averaged over seeds, the same held-out rows),
the RMSE by history length and by the gap since the previous rating, and the mean over ML-100K's u1..u5 folds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys.analysis import gap_sensitivity, retention_table, seen_share_of_topk
from recsys.compare import compare_pair, comparison_sentence
from recsys.inference import load_run
from recsys.runs import RunDirectory

ROOT = Path(__file__).resolve().parents[1]

GAPS = {"1 minute": 60, "1 hour": 3600, "1 day": 86400, "1 week": 7 * 86400, "2 years": 730 * 86400}


def checked_runs(roots) -> list:
    """Every run under the folders that passed its checks (a folder that cannot be read stops the command)."""
    from recsys.compare import distinct, scan_runs

    runs = []
    for root in roots:
        scan = scan_runs(root)
        if scan.root_error:
            raise SystemExit(scan.root_error)
        runs += [r for r in scan.runs if r.problem is None]
    return distinct(runs)  # a folder named twice, or a copy of a run in another folder, is one run


def load_results(run):
    """A checked run's per-user (or per-rating) test results, as every command below reads them."""
    from recsys.compare import load_test_results

    return load_test_results(run.path, run.info)


def matrix(args) -> None:
    from recsys.compare import ranking_matrix, reference_comparisons
    from recsys.compare.seeds import INTERVALS

    runs = checked_runs(args.roots)
    table = ranking_matrix(runs, args.metric, args.split)
    print(f"{args.split} {args.metric}, mean ± sd over seeds (leave-one-out by time, full ranking):\n")
    cols = list(table.columns)
    print("| model | " + " | ".join(cols) + " |\n| --- |" + " --- |" * len(cols))
    for name, row in table.iterrows():
        print(f"| {name} | " + " | ".join(str(row[c]) for c in cols) + " |")
    model, _, variant = args.reference.partition(":")
    comp = reference_comparisons(runs, load_results, (model, variant or "default"),
                                 metrics=(args.metric, "hr@10", "mrr@10") if args.metric.endswith("@10") else
                                 (args.metric,), n_boot=args.n_boot, interval=args.interval)
    if comp.empty:
        print(f"\nNo {args.reference} runs to compare with.")
        return
    print(f"\nPaired bootstrap, {args.n_boot} resamples, interval `{args.interval}`: {INTERVALS[args.interval]}:\n")
    print("| dataset | reference | other | metric | reference | other | diff | 95% CI | p |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in comp.to_dict("records"):
        if isinstance(r.get("problem"), str):
            print(f"| {r['dataset']} | {r['reference']} | {r['other']} | {r.get('metric', '')} | not comparable: "
                  f"{r['problem']} | | | | |")
            continue
        p = r["p_value"]
        p_txt = f"< {1 / args.n_boot:.4f}" if p == 0 else f"{p:.4f}"
        print(f"| {r['dataset']} | {r['reference']} | {r['other']} ({r['seeds'].split(' vs ')[1]}) | {r['metric']} | "
              f"{r['reference value']:.4f} | {r['other value']:.4f} | {r['diff']:+.4f} | "
              f"{r['ci_low']:+.4f} … {r['ci_high']:+.4f} | {p_txt} |")


def markdown(frame) -> str:
    """A DataFrame as a Markdown table (no tabulate dependency)."""
    cells = [[str(c) for c in frame.columns]] + [[str(v) for v in row] for row in frame.itertuples(index=False)]
    return "\n".join("| " + " | ".join(r) + " |" for r in cells[:1] + [["---"] * len(frame.columns)] + cells[1:])


def time_entries(args) -> None:
    """How time enters (What matters' section): each way time enters against the same architecture without time."""
    from recsys.compare import ablations as AB

    runs, load = checked_runs(args.roots), load_results
    studies = AB.time_entry_studies(runs, load, n_boot=args.n_boot, interval=args.interval)
    if not studies:
        raise SystemExit("no way time enters has its time-free reference (SS4Rec constant-gap, plain SASRec) here")
    for study in studies:
        print(f"## {study.title}\n\n{study.data}; {study.protocol}; intervals: {args.interval}, {args.n_boot} "
              f"resamples\n")
        for note in study.notes:
            print(f"> {note}\n")
        print(markdown(AB.time_table(study)))
        print("\nΔ NDCG@10 by the gap to the predicted interaction (mean paired difference, 95% interval, users):\n")
        print(markdown(AB.time_by_gap(study, load)))
        print()
        for line in AB.conclusions(study):
            print(f"- {line}")
        print()


def ablations(args) -> None:
    from recsys.compare import ablations as AB

    runs, load = checked_runs(args.roots), load_results
    studies = AB.ablation_studies(runs, load, n_boot=args.n_boot)
    if not studies:
        raise SystemExit("no released SS4Rec with ablations on the same data and protocol")
    for study in studies:
        print(f"## {study.title}\n\n{study.data}; {study.protocol}; reference {study.reference.name} "
              f"({study.reference.seeds_text})\n")
        print("| variant | compared with | seeds | test NDCG@10 | Δ NDCG@10 (95% CI) | p | Δ HR@10 (95% CI) | "
              "Δ MRR@10 (95% CI) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in study.rows:
            cells = []
            for m in AB.METRICS:
                c = row.comparisons[m]
                cells.append("n/a" if c.problem else f"{c.diff:+.4f} ({c.ci_low:+.4f} … {c.ci_high:+.4f})")
            c = row.comparisons["ndcg@10"]
            p = "" if c.problem else (f"< {1 / c.n_boot:.4f}" if c.p_value == 0 else f"{c.p_value:.3f}")
            mean, sd, _ = row.config.test["ndcg@10"]
            print(f"| {row.config.variant} | {row.reference.name} | {row.config.n_seeds} | {mean:.4f}"
                  f"{f' ± {sd:.4f}' if sd == sd else ''} | {cells[0]} | {p} | {cells[1]} | {cells[2]} |")
        for by, title in (("gap", "gap from the last rating to the predicted one"), ("length", "history length")):
            print(f"\nΔ NDCG@10 by {title} (users; mean paired difference, 95% interval):\n")
            first = AB.regime_breakdown(study.rows[0], load, by=by)
            print("| variant | " + " | ".join(f"{b} (n={n})" for b, n in zip(first["bucket"], first["users"]))
                  + " |\n| --- |" + " --- |" * len(first))
            for row in study.rows:
                bd = AB.regime_breakdown(row, load, by=by)
                vs = "" if row.reference is study.reference else f" − {row.reference.name}"
                print(f"| {row.config.variant}{vs} | " + " | ".join(
                    f"{d:+.4f} ({lo:+.4f} … {hi:+.4f})" for d, lo, hi in zip(bd["diff"], bd["ci_low"], bd["ci_high"]))
                    + " |")
        print()


def _pooled_with_context(config, load) -> object:
    """A configuration's held-out rows, errors averaged over its seeds, with its first seed's history length and
    gap before the target where its results record them."""
    from recsys.compare.answer import pooled_rating_rows
    from recsys.compare.paired import _rating_rows

    frames = [load(m) for m in config.seeds.members]
    rows = pooled_rating_rows(frames, config.name)
    first = _rating_rows(frames[0], config.name)
    key = "user_id" if "user_id" in rows else "user"
    ctx = [c for c in ("history_length", "gap_before_target") if c in first]
    return rows.merge(first[[key, "item", *ctx]], on=[key, "item"], how="left") if ctx else rows


def answer(args) -> None:
    """The answer page's ranking verdicts as text: headline, the multiplicity sentence and every configuration with
    its test numbers and whether it is reliably above the best floor."""
    from recsys.compare import answer as A
    from recsys.compare.seeds import INTERVALS

    verdicts = A.ranking_verdicts(checked_runs(args.roots), load_results, n_boot=args.n_boot, interval=args.interval)
    print(f"Intervals: {args.interval} ({INTERVALS[args.interval]}), {args.n_boot} resamples.\n")
    for v in verdicts:
        print(f"## {v.title}\n\n{v.headline}\n\n{A.multiplicity_note(v.comparisons + v.variants)}\n")
        table = A.contender_table(v)
        print("| " + " | ".join(table.columns) + " |\n|" + " --- |" * len(table.columns))
        for row in table.itertuples(index=False):
            print("| " + " | ".join(str(x) for x in row) + " |")
        print()
        if v.ss4rec is not None:
            _regimes(v)


def _regimes(v) -> None:
    """SS4Rec against every other non-ablation configuration of a verdict, by the gap to the predicted interaction
    (What matters' regime buckets: one rule, recsys.compare.breakdowns.GAP_SCHEMES)."""
    from recsys.compare import ablations as AB
    from recsys.compare.variants import is_ablation

    others = [c for c in v.contenders if c is not v.ss4rec and not is_ablation(c.seeds.info) and c.model != "ss4rec"]
    means, diffs = {}, {}
    for c in others:
        try:
            bd = AB.regime_breakdown(AB.AblationRow(config=v.ss4rec, reference=c, change=""), load_results)
        except Exception as exc:  # a configuration without the gap column: named, not fatal
            print(f"(no gap breakdown for {c.name}: {exc})")
            continue
        means[v.ss4rec.name] = {b.bucket: (b.configuration, b.users) for b in bd.itertuples()}
        means[c.name] = {b.bucket: (b.reference, b.users) for b in bd.itertuples()}
        diffs[c.name] = {b.bucket: f"{b.diff:+.4f} ({b.ci_low:+.4f} … {b.ci_high:+.4f})" for b in bd.itertuples()}
    if not means:
        return
    buckets = list(next(iter(means.values())))
    print(f"{v.metric} by the gap to the predicted interaction (test; per-user values averaged over seeds; "
          "SS4Rec − other: 1,000 resamples of the bucket's users):\n")
    print("| configuration | " + " | ".join(f"{b} (n={means[v.ss4rec.name][b][1]})" for b in buckets) + " |")
    print("| --- |" + " --- |" * len(buckets))
    for name, row in means.items():
        print(f"| {name} | " + " | ".join(f"{row[b][0]:.4f}" for b in buckets) + " |")
    print("\n| SS4Rec − | " + " | ".join(buckets) + " |\n| --- |" + " --- |" * len(buckets))
    for name, row in diffs.items():
        print(f"| {name} | " + " | ".join(row[b] for b in buckets) + " |")
    print()


def rating(args) -> None:
    import statistics

    from recsys.compare import answer as A
    from recsys.compare import answer_rating as R
    from recsys.compare.breakdowns import breakdown

    runs, load = checked_runs(args.roots), load_results
    verdicts = A.rating_verdicts(runs, load, n_boot=args.n_boot)
    if not verdicts:
        raise SystemExit("no complete rating runs (or SS4Rec runs with a rating head) under these folders")
    folds: dict[str, list[float]] = {}
    for v in verdicts:
        print(f"## {v.title}\n\n{v.protocol}\n")
        print("| configuration | role | seeds | valid RMSE | test RMSE | test MAE |")
        print("| --- | --- | --- | --- | --- | --- |")
        for c in v.contenders:
            role = "chosen model" if c is v.model else "chosen floor" if c is v.floor else "floor" if c.floor else ""
            print(f"| {c.name} | {role} | {c.seeds_text} | {c.valid:.4f} | {A.mean_sd_text(c.test['rmse'])} | "
                  f"{A.mean_sd_text(c.test['mae'])} |")
            if "fold" in v.protocol or "ml100k-folds" in v.title:
                folds.setdefault(f"{c.model} · {c.variant}", []).append(c.test["rmse"][0])
        ncf = next((c for c in v.contenders if c.model == "ncf"), None)
        refs = [r for r in (ncf, v.floor) if r is not None]
        print(f"\nPaired bootstrap of test RMSE differences ({args.n_boot} resamples of the held-out rows; "
              f"negative = the first is better):\n")
        print("| configuration | compared with | diff | 95% CI | p |\n| --- | --- | --- | --- | --- |")
        for c in v.contenders:
            if c.floor and c is not v.floor:
                continue
            for r in refs:
                if r is c:
                    continue
                x = R._compare_rating(c, r, load, args.n_boot, 0)
                if x.problem:
                    print(f"| {c.name} | {r.name} | not comparable: {x.problem} | | |")
                    continue
                p = f"< {1 / x.n_boot:.4f}" if x.p_value == 0 else f"{x.p_value:.4f}"
                print(f"| {c.name} | {r.name} | {x.diff:+.4f} | {x.ci_low:+.4f} … {x.ci_high:+.4f} | {p} |")
        shown = [c for c in v.contenders if not c.floor or c is v.floor]
        frames = {c.name: _pooled_with_context(c, load) for c in shown}
        for by, title in (("activity", "history length (ratings before the target; quartiles)"),
                          ("gap", "gap since the previous rating")):
            table, skipped, _ = breakdown(frames, by, "rating", "rmse", scheme="quantile")
            if table.empty:
                continue
            print(f"\nTest RMSE by {title} (held-out ratings per bucket; 95% interval):\n")
            buckets = [b for b in table["bucket"].drop_duplicates()]
            counts = table.groupby("bucket", observed=True)["count"].max()
            print("| configuration | " + " | ".join(f"{b} (n={int(counts.get(b, 0))})" for b in buckets) + " |")
            print("| --- |" + " --- |" * len(buckets))
            for name in table["run"].drop_duplicates():
                t = table[table["run"] == name].set_index("bucket")
                print(f"| {name} | " + " | ".join(
                    "" if t.loc[b, "value"] != t.loc[b, "value"] else
                    f"{t.loc[b, 'value']:.3f} ({t.loc[b, 'ci_low']:.3f} … {t.loc[b, 'ci_high']:.3f})"
                    for b in buckets) + " |")
        print()
    if folds:
        print("## Mean test RMSE over the ML-100K u1..u5 folds (one seed per fold)\n")
        print("| configuration | folds | mean | per fold |\n| --- | --- | --- | --- |")
        for name, vals in sorted(folds.items(), key=lambda kv: statistics.mean(kv[1])):
            print(f"| {name} | {len(vals)} | {statistics.mean(vals):.4f} | {' '.join(f'{x:.4f}' for x in vals)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("seen-share")
    a.add_argument("runs", nargs="+")
    b = sub.add_parser("gap-sensitivity")
    b.add_argument("run")
    b.add_argument("--users", type=int, default=200)
    c = sub.add_parser("bootstrap")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.add_argument("--metrics", nargs="+", default=["ndcg@10", "hr@10"])
    c.add_argument("--n-boot", type=int, default=2000)
    d = sub.add_parser("matrix")
    d.add_argument("roots", nargs="+")
    d.add_argument("--metric", default="ndcg@10")
    d.add_argument("--split", default="test", choices=("test", "valid"))
    d.add_argument("--reference", default="ss4rec:released", help="MODEL:VARIANT compared with every other one")
    d.add_argument("--n-boot", type=int, default=2000)
    d.add_argument("--interval", default="seeds+users", choices=("seeds+users", "users"))
    g = sub.add_parser("answer")
    g.add_argument("roots", nargs="+")
    g.add_argument("--n-boot", type=int, default=2000)
    g.add_argument("--interval", default="seeds+users", choices=("seeds+users", "users"))
    e = sub.add_parser("ablations")
    e.add_argument("roots", nargs="+")
    e.add_argument("--n-boot", type=int, default=2000)
    t = sub.add_parser("time")
    t.add_argument("roots", nargs="+")
    t.add_argument("--n-boot", type=int, default=2000)
    t.add_argument("--interval", default="seeds+users", choices=("seeds+users", "users"))
    f = sub.add_parser("rating")
    f.add_argument("roots", nargs="+")
    f.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()
    print(f"$ python scripts/analyse_runs.py {' '.join(sys.argv[1:])}\n")
    if args.what == "seen-share":
        print("| run | share of the unmasked top-10 already rated (test) |\n| --- | --- |")
        for r in args.runs:
            print(f"| {Path(r).name} | {seen_share_of_topk(load_run(r)):.1%} |")
        return
    if args.what == "answer":
        answer(args)
        return
    if args.what == "matrix":
        matrix(args)
        return
    if args.what == "ablations":
        ablations(args)
        return
    if args.what == "rating":
        rating(args)
        return
    if args.what == "time":
        time_entries(args)
        return
    if args.what == "bootstrap":
        runs = [RunDirectory(r) for r in (args.run_a, args.run_b)]
        family = "rating" if runs[0].info().get("objective") == "rating" else "ranking"
        names = tuple(Path(r).name for r in (args.run_a, args.run_b))
        for metric in args.metrics:
            res = compare_pair(runs[0].test_results(), runs[1].test_results(), family, metric,
                               n_boot=args.n_boot, names=names)
            print(f"- {comparison_sentence(res, *names)}")
        return
    run = load_run(args.run)
    print("| gap | S5 retention per layer | mean overlap with the 1-day top-10 | identical lists |")
    print("| --- | --- | --- | --- |")
    ret = retention_table(run, GAPS)
    sens = gap_sensitivity(run, GAPS, users=args.users)
    for label in GAPS:
        print(f"| {label} | {' / '.join(f'{x:.3f}' for x in ret[label])} | {sens[label]['mean_overlap']:.2f} | "
              f"{sens[label]['identical_share']:.0%} |")


if __name__ == "__main__":
    main()
