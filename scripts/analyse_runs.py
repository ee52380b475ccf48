"""Analyses of trained runs quoted in docs/results.md.

    python scripts/analyse_runs.py seen-share checkpoints/ncf-ranking-ml-100k-seed0 [more runs]
    python scripts/analyse_runs.py gap-sensitivity checkpoints/ss4rec-ranking-ml-100k-len50-released-seed0 [--users 200]
    python scripts/analyse_runs.py bootstrap RUN_A RUN_B [--metrics ndcg@10 hr@10] [--n-boot 2000]
    python scripts/analyse_runs.py matrix checkpoints [more folders of runs] [--metric ndcg@10]
    python scripts/analyse_runs.py ablations checkpoints [more folders of runs] [--n-boot 2000]

seen-share: the share of each user's unmasked top-10 (test cases) that they have already rated.
gap-sensitivity: for SS4Rec, the S5 retention per layer for a few gaps, and how much the top-10 for a next rating
after each gap overlaps the top-10 one day after the last rating.
bootstrap: paired bootstrap of metric(A) - metric(B) over the users both runs were tested on (the Compare runs
page's computation; refused when the two runs were not evaluated on the same cases).
matrix: every complete ranking run under the folders, runs that differ only in seed pooled: model x dataset as
"mean ± sd (n seeds)" of the test metric, then per dataset the paired bootstrap of the reference configuration
(SS4Rec, variant released) against each other configuration on per-user metrics averaged over seeds.
ablations: the What matters page's tables (recsys.compare.ablations): each ablation against its reference (mean ± sd
over seeds, paired bootstrap of NDCG/HR/MRR@10), then each one's NDCG@10 difference by the gap to the predicted
interaction and by history length, with users and 95% intervals per bucket.
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
    from recsys.compare import scan_runs

    runs = []
    for root in roots:
        scan = scan_runs(root)
        if scan.root_error:
            raise SystemExit(scan.root_error)
        runs += [r for r in scan.runs if r.problem is None]
    return runs


def matrix(args) -> None:
    from recsys.compare import load_test_results, ranking_matrix, reference_comparisons

    runs = checked_runs(args.roots)
    table = ranking_matrix(runs, args.metric, args.split)
    print(f"{args.split} {args.metric}, mean ± sd over seeds (leave-one-out by time, full ranking):\n")
    cols = list(table.columns)
    print("| model | " + " | ".join(cols) + " |\n| --- |" + " --- |" * len(cols))
    for name, row in table.iterrows():
        print(f"| {name} | " + " | ".join(str(row[c]) for c in cols) + " |")
    model, _, variant = args.reference.partition(":")
    comp = reference_comparisons(runs, lambda r: load_test_results(r.path, r.info), (model, variant or "default"),
                                 metrics=(args.metric, "hr@10", "mrr@10") if args.metric.endswith("@10") else
                                 (args.metric,), n_boot=args.n_boot)
    if comp.empty:
        print(f"\nNo {args.reference} runs to compare with.")
        return
    print(f"\nPaired bootstrap ({args.n_boot} resamples over users, per-user test metrics averaged over seeds):\n")
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


def ablations(args) -> None:
    from recsys.compare import ablations as AB
    from recsys.compare import load_test_results

    runs = checked_runs(args.roots)
    load = lambda r: load_test_results(r.path, r.info)  # noqa: E731
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
    e = sub.add_parser("ablations")
    e.add_argument("roots", nargs="+")
    e.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()
    print(f"$ python scripts/analyse_runs.py {' '.join(sys.argv[1:])}\n")
    if args.what == "seen-share":
        print("| run | share of the unmasked top-10 already rated (test) |\n| --- | --- |")
        for r in args.runs:
            print(f"| {Path(r).name} | {seen_share_of_topk(load_run(r)):.1%} |")
        return
    if args.what == "matrix":
        matrix(args)
        return
    if args.what == "ablations":
        ablations(args)
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
