"""Literature RMSE report: NCF against its floors on the official ML-100K u1..u5 folds and ML-1M random 90/10.

    python scripts/report_rating.py --ml100k ../shared/movielens/ml-100k --ml1m ../shared/movielens/ml-1m \\
        [--out /tmp/rating-report] [--models global-mean bias ncf] [--folds 1 2 3 4 5]

Every number is a TEST RMSE on held-out ratings; model selection (early stopping, the bias regularisation) used a
seeded 10% of the training rows, never the test rows. Each run writes an ordinary run directory under --out, whose
run.json holds the exact command that reproduces it. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from recsys.config import RunConfig, load_config_file, resolve_config
from recsys.training.runner import run_training

ROOT = Path(__file__).resolve().parents[1]


def one(model: str, out: Path, overrides: dict) -> dict:
    file_cfg = load_config_file(ROOT / "configs" / "ncf-rating.yaml") if model == "ncf" else {}
    cfg = resolve_config(model, file_cfg, overrides)
    if (out / "run.json").exists():
        from recsys.runs import RunDirectory

        info = RunDirectory(out).info()
        if info.get("status") == "complete" and RunConfig.from_dict(info["config"]) == cfg:
            return info
    cmd = ["python", "scripts/train.py", "--model", model]
    if model == "ncf":
        cmd += ["--config", "configs/ncf-rating.yaml"]
    for k, v in overrides.items():
        flag = {"data_dir": "--data-dir"}.get(k, f"--{k}")
        cmd += [flag, str(v)] if k in ("data_dir", "split", "fold", "objective", "seed") else ["--set", f"{k}={v}"]
    cmd += ["--out", str(out)]
    return run_training(cfg, out, cmd, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml100k", help="original ML-100K folder (with u1..u5)")
    ap.add_argument("--ml1m", help="ML-1M folder")
    ap.add_argument("--out", type=Path, default=Path("/tmp/rating-report"))
    ap.add_argument("--models", nargs="+", default=["global-mean", "bias", "ncf"])
    ap.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    extra = {"cpu_threads": args.threads} if args.threads else {}
    rows = []
    if args.ml100k:
        for model in args.models:
            vals = []
            for fold in args.folds:
                info = one(model, args.out / f"{model}-ml100k-u{fold}",
                           {"objective": "rating", "split": "ml100k-folds", "fold": fold, "data_dir": args.ml100k,
                            **extra})
                vals.append(info["metrics"]["test"]["rmse"])
                print(f"{model} ML-100K u{fold}: test RMSE {vals[-1]:.4f}", flush=True)
            rows.append((model, f"ML-100K u{'/'.join(map(str, args.folds))} (80/20 each)", statistics.mean(vals),
                         " ".join(f"{v:.4f}" for v in vals)))
    if args.ml1m:
        for model in args.models:
            info = one(model, args.out / f"{model}-ml1m-random", {"objective": "rating", "split": "random",
                                                                  "data_dir": args.ml1m, "dataset": "ml-1m", **extra})
            v = info["metrics"]["test"]["rmse"]
            print(f"{model} ML-1M random 90/10: test RMSE {v:.4f}", flush=True)
            rows.append((model, "ML-1M random 90/10 (seed 0)", v, f"{v:.4f}"))
    print(f"\n$ python scripts/report_rating.py {' '.join(sys.argv[1:])}\n")
    print("| model | dataset / split | mean test RMSE | per fold |")
    print("| --- | --- | --- | --- |")
    for model, split, mean, per in rows:
        print(f"| {model} | {split} | {mean:.4f} | {per} |")


if __name__ == "__main__":
    main()
