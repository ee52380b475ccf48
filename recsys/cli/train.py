"""Train NCF or SS4Rec (or fit a floor) on a MovieLens release and write a run directory.

Examples:
  python scripts/train.py --model ncf --dataset ml-100k --objective ranking
  python scripts/train.py --model ncf --objective rating --split ml100k-folds --fold 1 \\
      --data-dir ../shared/movielens/ml-100k
  python scripts/train.py --model bias --objective rating --split random --data-dir ../shared/movielens/ml-1m
  python scripts/train.py --resume checkpoints/ncf-ranking-ml-100k-seed0      # continue a killed run
  torchrun --nproc_per_node 2 scripts/train.py --model ncf --device cpu       # DistributedDataParallel

Configuration precedence: command line > --config FILE (YAML) > the defaults in recsys/config.py (training) and
each model's Config dataclass. Any option can also be set with --set KEY=VALUE (repeatable, YAML values:
--set mlp_dims=[128,64,32]). Installed as the `recsys-train` command; scripts/train.py is the same program.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from recsys.cli import recorded_command
from recsys.commands import command_argv, command_text
from recsys.config import ConfigError, RunConfig, load_config_file, parse_overrides, resolve_config
from recsys.data.schema import DataError
from recsys.locking import RunLock
from recsys.models import MODELS
from recsys.runs import RUN_FILE, RunDirectory, RunError, clear_run
from recsys.training.runner import dataset_name, run_training, summarise

ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/train.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(MODELS), help="ss4rec, sasrec, gru4rec, ncf, or a floor: "
                                                   "global-mean, bias (rating), popular, markov (ranking)")
    p.add_argument("--dataset", help="ml-100k (embedded default), ml-1m, ml-10m, ml-20m, ml-25m, ml-latest, "
                                     "ml-latest-small")
    p.add_argument("--data-dir", help="folder with the release's files; without it, ml-100k is the embedded copy "
                                      "and the others are downloaded from GroupLens (md5-checked)")
    p.add_argument("--config", help="YAML file of options (see configs/)")
    p.add_argument("--objective", choices=("ranking", "rating"),
                   help="ranking: leave-one-out full ranking (HR/NDCG/MRR); rating: RMSE/MAE")
    p.add_argument("--split", choices=("chronological", "random", "kfold", "ml100k-folds"),
                   help="rating split: chronological hold-out (default), random 90/10, k-fold, official u1..u5")
    p.add_argument("--fold", type=int, help="fold number for kfold / ml100k-folds (1-based)")
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping may end sooner)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="auto picks CUDA when present")
    p.add_argument("--seed", type=int, help="seed for splits, initialisation, batches and sampling")
    p.add_argument("--out", help="run directory to write (default: checkpoints/<model>-<objective>-<dataset>-...)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last finished epoch, with its "
                                                   "recorded configuration (from the start if it never finished one)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (a failed or unwanted "
                                                             "one) instead of refusing")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any option")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def default_out(cfg: RunConfig) -> Path:
    t = cfg.train
    parts = [cfg.model, t.objective, dataset_name(t)]
    if t.objective == "rating":
        parts.append(t.split + (f"{t.fold}" if t.split in ("kfold", "ml100k-folds") else ""))
    if MODELS[cfg.model].reads_history:
        parts.append(f"len{t.max_len}")
    if t.objective == "ranking" and t.mask_seen:
        parts.append("masked")
    if t.variant != "default":
        parts.append(t.variant)
    parts.append(f"seed{t.seed}")
    return ROOT / "checkpoints" / "-".join(str(p) for p in parts)


RESUME_FIXED = ("model", "dataset", "data_dir", "config", "objective", "split", "fold", "epochs", "device", "seed",
                "out", "overwrite", "set")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _planned(args) -> tuple[RunConfig | None, Path]:
    """(configuration, folder) of a new run, or (None, folder) for --resume (its configuration is in run.json)."""
    if args.resume:
        return None, Path(args.resume)
    cfg = _resolve(args)
    return cfg, Path(args.out) if args.out else default_out(cfg)


def _resolve(args) -> RunConfig:
    file_cfg = load_config_file(args.config) if args.config else {}
    overrides = {k: getattr(args, k) for k in ("dataset", "data_dir", "objective", "split", "fold", "epochs",
                                                "device", "seed") if getattr(args, k) is not None}
    overrides.update(parse_overrides(args.set))
    return resolve_config(args.model, file_cfg, overrides)


def _writer_lock(path: Path, command: str):
    """The run folder's lock, held by rank 0 only (torchrun's other ranks write nothing)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return RunLock(path, command)


def _train(args, command: list[str], cfg: RunConfig | None, out: Path) -> dict | None:
    """Under the folder's lock: resume, or check the folder is free (or clear it for --overwrite), then train."""
    if args.resume:
        previous = RunDirectory(args.resume).info()
        if previous.get("status") == "complete":
            print(f"{args.resume}: already complete; nothing to resume")
            print(summarise(previous))
            return None
        if not isinstance(previous.get("command"), str) or not previous["command"].strip():
            raise RunError(f"{args.resume}/run.json records no command; it cannot be resumed as it was started")
        cfg = RunConfig.from_dict(previous["config"])
        command = command_argv(previous["command"])
    else:
        if (out / RUN_FILE).exists() or (out / RUN_FILE).is_symlink():
            if not args.overwrite:
                raise ConfigError(f"{out} already holds a run; pass --resume {out} to continue it, --overwrite "
                                  f"to replace it, or another --out")
            clear_run(out)
    assert cfg is not None  # _planned resolves the configuration of every run but a resumed one
    return run_training(cfg, out, command, resume=bool(args.resume), progress=not args.quiet)


def _what_now(out: Path | None) -> str:
    """After an OS error: resumable only when the folder holds a finished epoch to resume from."""
    try:
        resumable = out is not None and (out / "resume" / "state.pt").is_file()
    except OSError:
        resumable = False
    if resumable:
        return f"the run can be resumed from its last finished epoch once this is fixed (--resume {out})"
    return "no epoch was saved; start the run again once this is fixed"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = recorded_command("scripts/train.py", argv)
    if not args.resume and not args.model:
        build_parser().error("--model is required (unless --resume)")
    changed = [f"--{k.replace('_', '-')}" for k in RESUME_FIXED if getattr(args, k) not in (None, [], False)]
    if args.resume and changed:  # a resumed run is the run that was started: nothing may change it half-way
        build_parser().error(f"--resume continues a run exactly as run.json records it; {', '.join(changed)} cannot "
                             f"change it (start a new run with --out, or --overwrite this one)")
    out = None
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)  # `kill` (and a campaign runner) ends like Ctrl-C
    try:
        cfg, out = _planned(args)
        if args.resume and not out.is_dir():
            raise RunError(f"{out}: no such run directory")
        if (out.exists() or out.is_symlink()) and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a run folder; pass a folder path")
        with _writer_lock(out, command_text(command)):
            info = _train(args, command, cfg, out)
            if info is None:
                return 0
    except KeyboardInterrupt:
        where = f" {out}" if out else ""
        print(f"interrupted; the run can be resumed from its last finished epoch (--resume{where})", file=sys.stderr)
        return 130
    except (ConfigError, DataError, RunError, RuntimeError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions: the last checkpoint is intact (every write is atomic)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; {_what_now(out)}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if info.get("status") == "complete":
        print(summarise(info))
        print(f"run directory: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
