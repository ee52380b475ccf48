"""Re-evaluate a trained run under changed evaluation settings, writing a new run directory.

    python scripts/evaluate.py --run checkpoints/ss4rec-ranking-ml-100k-len50-released-seed0 --set mask_seen=true \\
        [--out checkpoints/ss4rec-ranking-ml-100k-len50-released-masked-seed0]

Only evaluation settings may change (mask_seen, ks, eval_batch_size, device, cpu_threads): the weights, data and
split stay the run's own. The new run.json records the command and the run its weights came from.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys.cli import recorded_command
from recsys.commands import command_text
from recsys.config import ConfigError, parse_overrides
from recsys.data.schema import DataError
from recsys.locking import RunLock
from recsys.runs import RunError
from recsys.training.reevaluate import evaluate_run
from recsys.training.runner import summarise


def default_out(src: Path, overrides: dict) -> Path:
    """The folder a re-evaluation writes by default: the source's name with `masked` before its seed, or `-eval`."""
    src = Path(src)
    if overrides.get("mask_seen"):
        head, sep, seed = src.name.rpartition("-seed")
        return src.parent / (f"{head}-masked{sep}{seed}" if sep else f"{src.name}-masked")
    return src.parent / f"{src.name}-eval"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="scripts/evaluate.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="the trained run directory")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an evaluation setting")
    ap.add_argument("--out", help="new run directory (default: the run's name with the changes appended)")
    args = ap.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
        src = Path(args.run)
        out = Path(args.out) if args.out else default_out(src, overrides)
        command = recorded_command("scripts/evaluate.py", argv)
        with RunLock(out, command_text(command)):
            if (out / "run.json").exists():
                raise ConfigError(f"{out} already holds a run")
            info = evaluate_run(src, out, overrides, command)
    except (ConfigError, DataError, RunError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summarise(info))
    print(f"run directory: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
