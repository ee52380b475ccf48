"""Run a campaign of training runs from a plan, or say where it stands.

    recsys-campaign status configs/campaigns/ml1m.yaml
    recsys-campaign curves configs/campaigns/ml1m-screening.yaml --every 2     # validation curves, markdown
    recsys-campaign run configs/campaigns/ml1m.yaml --parallel 2 --threads 1 --nice 19
    recsys-campaign run configs/campaigns/ml1m.yaml --device cuda --parallel 8     # many small runs on one GPU
    recsys-campaign run configs/campaigns/ml1m.yaml --only 'ss4rec-*'

`run` can be stopped at any moment (Ctrl-C, kill, a closing session); running it again continues every run from
its last finished epoch and never re-trains or re-tests a finished one. `status` runs nothing. Plans are described
in recsys/campaign/plan.py and the files in configs/campaigns/. Installed as `recsys-campaign`; scripts/campaign.py
is the same program.
"""
from __future__ import annotations

import argparse
import sys

from recsys.campaign import Options, PlanError, inspect, load_plan, render, run_campaign, selected
from recsys.campaign.status import curves


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys-campaign", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="print where every run of the plan stands (runs nothing)")
    st.add_argument("plan")
    st.add_argument("--only", action="append", help="runs whose folder name matches this glob (repeatable)")
    st.add_argument("--parallel", type=int, default=2, help="for the wall-time estimate (default 2)")
    cv = sub.add_parser("curves", help="print each run's validation curve as a markdown table (runs nothing)")
    cv.add_argument("plan")
    cv.add_argument("--only", action="append", help="runs whose folder name matches this glob (repeatable)")
    cv.add_argument("--every", type=int, default=1, help="show every k-th epoch (default 1)")
    r = sub.add_parser("run", help="start, resume or skip every run of the plan")
    r.add_argument("plan")
    r.add_argument("--parallel", type=int, default=2, help="runs at a time (default 2)")
    r.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    r.add_argument("--nice", type=int, default=0, help="lower the runs' CPU priority (0..19; default 0)")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), help="device of runs started now (resumed runs "
                                                                     "keep the one they recorded)")
    r.add_argument("--only", action="append", help="runs whose folder name matches this glob (repeatable)")
    r.add_argument("--retry-failed", action="store_true", help="also resume runs that failed before")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if getattr(args, "parallel", 1) < 1 or getattr(args, "threads", 1) < 1 or not 0 <= getattr(args, "nice", 0) <= 19:
        print("error: --parallel and --threads must be at least 1, --nice in 0..19", file=sys.stderr)
        return 2
    try:
        plan = load_plan(args.plan)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "status":
        states = [s for s in inspect(plan) if selected(s.job.key, args.only)]
        print(f"campaign {plan.name} ({plan.path}), runs under {plan.root}/")
        print(render(states, args.parallel))
        return 0
    if args.command == "curves":
        print(curves([s for s in inspect(plan) if selected(s.job.key, args.only)], max(args.every, 1)))
        return 0
    opts = Options(parallel=args.parallel, threads=args.threads, nice=args.nice, device=args.device,
                   only=args.only, retry_failed=args.retry_failed, progress=not args.quiet)
    rc = run_campaign(plan, opts, say=lambda msg: print(msg, flush=True))
    print(render([s for s in inspect(plan) if selected(s.job.key, args.only)], args.parallel))
    return rc


if __name__ == "__main__":
    sys.exit(main())
