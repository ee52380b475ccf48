"""Analyses of trained runs quoted in docs/results.md.

    python scripts/analyse_runs.py seen-share checkpoints/ncf-ranking-ml-100k-seed0 [more runs]
    python scripts/analyse_runs.py gap-sensitivity checkpoints/ss4rec-ranking-ml-100k-len50-seed0 [--users 200]
    python scripts/analyse_runs.py bootstrap RUN_A RUN_B [--metrics ndcg@10 hr@10] [--n-boot 2000]

seen-share: the share of each user's unmasked top-10 (test cases) that they have already rated.
gap-sensitivity: for SS4Rec, the S5 retention per layer for a few gaps, and how much the top-10 for a next rating
after each gap overlaps the top-10 one day after the last rating.
bootstrap: paired bootstrap of metric(A) - metric(B) over the users both runs were tested on (the Compare runs
page's computation; refused when the two runs were not evaluated on the same cases).
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
    args = ap.parse_args()
    print(f"$ python scripts/analyse_runs.py {' '.join(sys.argv[1:])}\n")
    if args.what == "seen-share":
        print("| run | share of the unmasked top-10 already rated (test) |\n| --- | --- |")
        for r in args.runs:
            print(f"| {Path(r).name} | {seen_share_of_topk(load_run(r)):.1%} |")
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
