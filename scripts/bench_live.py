"""Live-scoring latency: top-10 of the whole catalogue for one user, as the Live recommendations page does it.

    python scripts/bench_live.py [--run checkpoints/ss4rec-ranking-ml-100k-len50-released-seed0]
                                 [--users 50] [--threads 1]

Per user: a full score (prefill the history through every layer + one step for "now" + top-10), and a what-if
re-score (one step per layer from the cached states, for a new "now"). Prints median and 95th percentile in ms.
Target: top-10 for one user under 20 ms on CPU at ML-100K size.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recsys.inference import load_run, prefill, score_history, user_history

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", nargs="+", default=sorted(str(p) for p in (ROOT / "checkpoints").glob("ss4rec-*")))
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"$ python scripts/bench_live.py {' '.join(sys.argv[1:])}")
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)\n")
    print("| run | catalogue | history fed (median) | full score p50 / p95 (ms) | what-if re-score p50 / p95 (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.run:
        run = load_run(path)
        users = run.prepared.user_map.raw[: args.users]
        full, whatif, fed = [], [], []
        for u in users:
            h = user_history(run, int(u))
            items, times = h["item_idx"].to_numpy(), h["timestamp"].to_numpy()
            fed.append(min(len(items), run.max_len))
            t0 = time.perf_counter()
            score_history(run, items, times, now=int(times[-1]) + 3600, k=10)
            full.append((time.perf_counter() - t0) * 1000)
            cache = prefill(run, items, times)
            t0 = time.perf_counter()
            score_history(run, items, times, now=int(times[-1]) + 86400 * 7, k=10, cache=cache)
            whatif.append((time.perf_counter() - t0) * 1000)
        p = lambda xs, q: float(np.percentile(xs, q))  # noqa: E731
        print(f"| {Path(path).name} | {run.prepared.n_items:,} movies | {int(np.median(fed))} | "
              f"{p(full, 50):.1f} / {p(full, 95):.1f} | {p(whatif, 50):.2f} / {p(whatif, 95):.2f} |")


if __name__ == "__main__":
    main()
