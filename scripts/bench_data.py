"""Benchmark the data layer at ML-25M size: load (parse + validate), k-core filter, index, and sequence.

    python scripts/bench_data.py [--scale 1.0] [--dir /tmp/synthetic-ml25m] [--repeat 1]

Generates (once, then reuses) a synthetic ML-25M-shaped ratings.csv/movies.csv in the real ML-25M file format, then
measures each stage in a fresh child process so the generator's memory is not counted. Prints a table with seconds
and the process's peak resident memory after each stage. Target: under 60 s and under 6 GB in all on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def measure(directory: Path) -> dict:
    """Runs in the child: every stage timed, peak RSS read after each."""
    from recsys.data import build_sequences, read_movielens
    from recsys.data.prepare import prepare
    from recsys.evaluation.protocols import LeaveOneOut

    rows = []
    t0 = time.perf_counter()

    def stage(name, fn):
        t = time.perf_counter()
        out = fn()
        rows.append({"stage": name, "seconds": time.perf_counter() - t, "peak_gb": peak_gb()})
        return out

    data = stage("read + validate CSV", lambda: read_movielens(directory, "synthetic-ml25m"))
    n_raw = len(data.interactions)
    prepared = stage("5-core filter + index + id maps", lambda: prepare(data, 5, 5))
    seqs = stage("chronological sequences", lambda: build_sequences(prepared.interactions))
    stage("leave-one-out split", lambda: LeaveOneOut.from_sequences(seqs).cases("test", 200))
    total = time.perf_counter() - t0
    return {"rows": rows, "total_seconds": total, "peak_gb": peak_gb(), "ratings": n_raw,
            "after_filter": len(prepared.interactions), "users": prepared.n_users, "items": prepared.n_items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of ML-25M size (1.0 = 25M ratings)")
    parser.add_argument("--dir", type=Path, default=None, help="where the synthetic CSVs are kept between runs")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: child-process mode
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return

    directory = args.dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"synthetic-ml25m-{args.scale:g}"
    if not (directory / "ratings.csv").exists():
        from recsys.data.synthetic import generate_ml25m_like
        from recsys.data.synthetic_files import write_movielens_csv

        t = time.perf_counter()
        print(f"generating synthetic ML-25M-shaped data (scale {args.scale:g}) into {directory} ...", flush=True)
        write_movielens_csv(generate_ml25m_like(scale=args.scale, seed=0, progress=True), directory)
        print(f"  generated in {time.perf_counter() - t:.1f} s (not part of the measurement)", flush=True)
    out = subprocess.run([sys.executable, __file__, "--measure", str(directory)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    size_mb = (directory / "ratings.csv").stat().st_size / 1e6
    print(f"\n$ python scripts/bench_data.py --scale {args.scale:g}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; ratings.csv {size_mb:,.0f} MB, {res['ratings']:,} ratings")
    print(f"after 5-core: {res['after_filter']:,} ratings, {res['users']:,} users, {res['items']:,} items\n")
    print(f"| {'stage':<32} | {'seconds':>8} | {'peak RSS (GB)':>13} |")
    print(f"| {'-' * 32} | {'-' * 8} | {'-' * 13} |")
    for r in res["rows"]:
        print(f"| {r['stage']:<32} | {r['seconds']:>8.2f} | {r['peak_gb']:>13.2f} |")
    print(f"| {'total':<32} | {res['total_seconds']:>8.2f} | {res['peak_gb']:>13.2f} |")
    ok = res["total_seconds"] < 60 and res["peak_gb"] < 6
    print(f"\ntarget (< 60 s, < 6 GB): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
