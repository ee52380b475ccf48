"""A campaign plan: a YAML file that lists runs (model, recipe, overrides, seeds, data) and where they go.

    name: ml1m                               # optional; the file's stem otherwise
    root: checkpoints                        # the folder the run folders go into (relative to where you run it)
    defaults:                                # merged into every entry; an entry's own keys win, `set` key by key
      dataset: ml-1m
      data_dir: ../shared/movielens/ml-1m
      set: {timestamped_users_only: true, max_len: 200, epochs: 1000, patience: 10}
    runs:
      - model: ss4rec
        config: configs/ss4rec.yaml          # the recipe (a YAML file of options), as for scripts/train.py
        seeds: [0, 1, 2]
        set: {variant: released}             # --set KEY=VALUE overrides
        masked: true                         # also re-evaluate each finished seed with seen items masked
        expect_epochs: 60                    # optional: for the time estimate before any seed has finished

Every entry becomes one training job per seed, resolved here exactly as `scripts/train.py` resolves its options
(so a bad key or value is refused before anything runs) and named as `scripts/train.py` names its default folder,
under `root`; a masked entry adds one re-evaluation job per seed that waits for its training job.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from recsys.config import ConfigError, RunConfig, load_config_file, resolve_config

PLAN_KEYS = {"name", "root", "defaults", "runs", "description"}
ENTRY_KEYS = {"model", "config", "seeds", "set", "dataset", "data_dir", "objective", "masked", "expect_epochs",
              "note"}
# settings that say where or how fast a run executes, not what it computes: a folder recorded with other values
# still belongs to the plan (a run started on 2 threads may finish on 1, or on a GPU machine's copy of the data)
EXECUTION_KEYS = {"device", "cpu_threads", "eval_batch_size", "data_dir"}
MAX_PLAN_BYTES = 1 << 20


class PlanError(ValueError):
    """A plan file that cannot be run as written; the message names the file, the entry and the key."""


@dataclass(frozen=True)
class Job:
    """One run folder the campaign must finish: a training run, or a re-evaluation of one (`after` names it)."""

    key: str                    # the run folder's name
    kind: str                   # train | evaluate
    path: Path                  # the run folder
    model: str
    argv: tuple[str, ...]       # arguments of scripts/train.py or scripts/evaluate.py that start it
    config: dict = field(default_factory=dict, compare=False)  # resolved flat configuration (train jobs)
    after: str | None = None    # the training job whose run an evaluate job re-evaluates
    entry: int = 0              # index of the plan entry it came from (shared estimates)
    expect_epochs: int | None = None


@dataclass
class Plan:
    path: Path
    name: str
    root: Path
    jobs: list[Job]

    def job(self, key: str) -> Job:
        return next(j for j in self.jobs if j.key == key)


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan; every job's configuration is resolved (PlanError on the first problem)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_PLAN_BYTES:
            raise PlanError(f"{path}: {path.stat().st_size:,} bytes; a plan is at most {MAX_PLAN_BYTES:,}")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PlanError(f"{path}: cannot read the plan ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("runs"), list) or not raw["runs"]:
        raise PlanError(f"{path}: a plan is a mapping with a non-empty list under 'runs'")
    unknown = set(raw) - PLAN_KEYS
    if unknown:
        raise PlanError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(PLAN_KEYS))}")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise PlanError(f"{path}: 'defaults' must be a mapping")
    root = Path(str(raw.get("root", "checkpoints")))
    jobs: list[Job] = []
    for i, entry in enumerate(raw["runs"]):
        where = f"{path}: runs[{i}]"
        jobs.extend(_entry_jobs(_merged(defaults, entry, where), i, root, where))
    seen: dict[str, int] = {}
    for job in jobs:
        if job.key in seen:
            raise PlanError(f"{path}: runs[{seen[job.key]}] and runs[{job.entry}] both make {job.key}; give one a "
                            f"distinct variant")
        seen[job.key] = job.entry
    return Plan(path, str(raw.get("name") or path.stem), root, jobs)


def _merged(defaults: dict, entry, where: str) -> dict:
    if not isinstance(entry, dict):
        raise PlanError(f"{where}: an entry is a mapping (model, config, seeds, set, ...)")
    for source, name in ((defaults, "defaults"), (entry, "entry")):
        unknown = set(source) - ENTRY_KEYS
        if unknown:
            raise PlanError(f"{where}: unknown key(s) in {name}: {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(sorted(ENTRY_KEYS))}")
        if not isinstance(source.get("set", {}), dict):
            raise PlanError(f"{where}: 'set' must be a mapping of option: value")
    merged = {**defaults, **entry}
    merged["set"] = {**(defaults.get("set") or {}), **(entry.get("set") or {})}
    if "model" not in merged:
        raise PlanError(f"{where}: no 'model'")
    return merged


def _entry_jobs(e: dict, index: int, root: Path, where: str) -> list[Job]:
    from recsys.cli.evaluate import default_out as eval_out
    from recsys.cli.train import default_out
    from recsys.training.runner import dataset_name

    seeds = e.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise PlanError(f"{where}: 'seeds' must be a list of non-negative integers, not {seeds!r}")
    expect = e.get("expect_epochs")
    if expect is not None and not (isinstance(expect, int) and expect > 0):
        raise PlanError(f"{where}: 'expect_epochs' must be a positive integer, not {expect!r}")
    try:
        file_cfg = load_config_file(e["config"]) if e.get("config") else {}
    except ConfigError as exc:
        raise PlanError(f"{where}: {exc}") from None
    jobs = []
    for seed in seeds:
        top = {k: e[k] for k in ("dataset", "data_dir", "objective") if e.get(k) is not None}
        try:
            cfg = resolve_config(str(e["model"]), file_cfg, {**top, **e["set"], "seed": seed})
        except ConfigError as exc:
            raise PlanError(f"{where}, seed {seed}: {exc}") from None
        if cfg.train.dataset is None:  # recorded as the release actually read, as training does
            cfg.train.dataset = dataset_name(cfg.train)
        key = default_out(cfg).name
        argv = ["--model", cfg.model, *(["--config", str(e["config"])] if e.get("config") else [])]
        argv += [f"--{k.replace('_', '-')}={v}" for k, v in top.items()]
        argv += [f"--set={k}={_cli_value(v)}" for k, v in {**e["set"], "seed": seed}.items()]
        argv += ["--out", str(root / key)]
        jobs.append(Job(key, "train", root / key, cfg.model, tuple(argv), cfg.as_dict(), None, index, expect))
        if e.get("masked"):
            masked = eval_out(root / key, {"mask_seen": True})
            jobs.append(Job(masked.name, "evaluate", masked, cfg.model,
                            ("--run", str(root / key), "--set", "mask_seen=true", "--out", str(masked)),
                            after=key, entry=index))
    return jobs


def _cli_value(value) -> str:
    """A --set value as train.py reads it back (YAML): plain text where YAML gives the same value, JSON otherwise."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if yaml.safe_load(text) == value else json.dumps(value)


def differences(job: Job, recorded: dict) -> list[str]:
    """The configuration keys (other than execution settings) where a run folder's recorded configuration differs
    from what the plan would start; [] when the folder is this job's run."""
    try:
        old = RunConfig.from_dict(recorded).as_dict()
    except ConfigError as exc:
        return [f"unreadable configuration ({exc})"]
    keys = (set(old) | set(job.config)) - EXECUTION_KEYS
    return sorted(k for k in keys if old.get(k) != job.config.get(k))
