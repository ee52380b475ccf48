"""Fit SS4Rec's rating head after training, encoder frozen, selected on validation RMSE; writes a new run.

    python scripts/fit_rating_head.py --run RUN_TRAINED_WITH_rating_head=true [--out DIR]

The ranking metrics of the new run equal the source run's (only the rating head changes).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys.cli import recorded_command
from recsys.config import ConfigError
from recsys.data.schema import DataError
from recsys.runs import RunError
from recsys.training.reevaluate import refit_rating_head
from recsys.training.runner import summarise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="scripts/fit_rating_head.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained SS4Rec run with a rating head")
    ap.add_argument("--out", help="new run directory (default: <run>-ratingfit)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args(argv)
    src = Path(args.run)
    out = Path(args.out) if args.out else src.parent / src.name.replace("-seed", "-ratingfit-seed")
    try:
        if (out / "run.json").exists():
            raise ConfigError(f"{out} already holds a run")
        info = refit_rating_head(src, out, recorded_command("scripts/fit_rating_head.py", argv), args.epochs, args.lr)
    except (ConfigError, DataError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    r = info["rating_head_refit"]
    print(f"valid RMSE {r['valid_rmse_before']:.4f} -> {r['valid_rmse_after']:.4f} after {r['epochs']} epochs")
    print(summarise(info) + f"; test rmse {info['metrics']['test']['rmse']:.4f}")
    print(f"run directory: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
