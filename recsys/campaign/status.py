"""Where each run of a campaign stands, read from its folder without touching it, and what is left.

States: `done` (complete), `training` (a live process holds the folder's lock), `stopped` (started, resumable from
its last finished epoch), `waiting` (not started; a re-evaluation also waits for its training run), `failed`,
`broken` (the folder cannot be read: corrupted, tampered, foreign) and `differs` (the folder holds a run made with
another configuration than the plan's). The last three are never touched by the runner; the message says why.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from recsys.campaign.plan import Job, Plan, differences
from recsys.locking import lock_holder
from recsys.runs import RunDirectory, RunError

RUNNABLE = ("waiting", "stopped")
SHORT_CAP = 100  # epochs


@dataclass
class JobState:
    job: Job
    state: str
    message: str = ""
    epochs: int = 0                       # finished epochs in history.jsonl
    best: float | None = None             # best validation value of the monitored metric
    best_epoch: int | None = None         # 1-based
    patience: int | None = None
    max_epochs: int | None = None         # the configuration's epoch cap
    monitor: str = "ndcg@10"
    test: float | None = None             # test value of the monitored metric (done runs only)
    seconds: list[float] = field(default_factory=list)   # per-epoch training seconds
    values: list[float | None] = field(default_factory=list)  # per-epoch validation value of the monitored metric

    @property
    def since_best(self) -> int | None:
        return None if self.best_epoch is None else self.epochs - self.best_epoch

    @property
    def s_per_epoch(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def inspect(plan: Plan) -> list[JobState]:
    """The state of every job of the plan, in plan order."""
    states = [inspect_job(job) for job in plan.jobs]
    by_key = {s.job.key: s for s in states}
    for s in states:  # a re-evaluation can only start once its training run is done
        if s.state == "waiting" and s.job.after and by_key[s.job.after].state != "done":
            s.message = "after its training run"
    return states


def inspect_job(job: Job) -> JobState:
    path = job.path
    if path.is_symlink():
        return JobState(job, "broken", f"{path}: a symbolic link; a run folder must be a plain folder")
    holder = lock_holder(path) if path.is_dir() else None
    if not (path / "run.json").exists() and not (path / "run.json").is_symlink():
        return JobState(job, "training" if holder else "waiting", _holder_short(holder) if holder else "")
    try:
        run = RunDirectory(path)
        info, history = run.info(), run.history()
    except RunError as exc:
        return JobState(job, "broken", str(exc))
    # a re-evaluation carries its source run's history: its epochs and seconds are that run's, not its own
    s = _from_history(job, info, history if job.kind == "train" else [])
    if job.kind == "train":
        diff = differences(job, info.get("config") or {})
        if diff:
            return JobState(job, "differs", f"{path} holds a run made with other settings ({', '.join(diff[:6])}); "
                                            f"move it away or change the plan")
    status = info.get("status")
    if holder:
        s.state, s.message = "training", _holder_short(holder)
    elif status == "complete":
        s.state = "done"
        test = (info.get("metrics") or {}).get("test") or {}
        s.test = test.get(s.monitor) if isinstance(test.get(s.monitor), (int, float)) else None
    elif status == "failed" and not str(info.get("failure", "")).startswith("KeyboardInterrupt"):
        s.state, s.message = "failed", str(info.get("failure", "failed"))[:300]
    else:  # running (its process gone: killed), interrupted, or Ctrl-C'd before runs said so: resumable
        s.state = "stopped"
    return s


def _holder_short(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"


def _from_history(job: Job, info: dict, history: list[dict]) -> JobState:
    cfg = info.get("config") or {}
    rating = info.get("objective") == "rating"
    monitor = "rmse" if rating else "ndcg@10"
    s = JobState(job, "stopped", monitor=monitor, epochs=len(history),
                 patience=cfg.get("patience") if isinstance(cfg.get("patience"), int) else None,
                 max_epochs=cfg.get("epochs") if isinstance(cfg.get("epochs"), int) else None)
    s.values = [r.get(f"valid_{monitor}") if isinstance(r.get(f"valid_{monitor}"), (int, float)) else None
                for r in history]
    values = [(i + 1, v) for i, v in enumerate(s.values) if v is not None]
    if values:
        if rating:
            s.best_epoch, s.best = min(values, key=lambda v: (v[1], v[0]))
        else:
            s.best_epoch, s.best = max(values, key=lambda v: (v[1], -v[0]))
    elif info.get("status") == "complete":  # a floor: fitted, no epochs
        s.best = ((info.get("metrics") or {}).get("valid") or {}).get(monitor)
    s.seconds = [float(r["seconds"]) for r in history if isinstance(r.get("seconds"), (int, float))]
    return s


def estimate_left(states: list[JobState]) -> tuple[float, int]:
    """(seconds of run time still needed, number of runs whose cost cannot be estimated yet).

    A started run needs at least the epochs patience still requires (at most what its epoch cap allows); a run not
    started needs what the finished runs of its plan entry took (else its `expect_epochs`, else a short epoch cap),
    at the seconds per epoch measured for its entry or its model. An estimate, not a bound: a started run that keeps
    improving takes longer."""
    per_entry: dict[int, list[JobState]] = {}
    for s in states:
        per_entry.setdefault(s.job.entry, []).append(s)
    total, unknown = 0.0, 0
    for s in states:
        if s.state in ("done", "failed", "broken", "differs") or s.job.kind == "evaluate":
            continue
        spe = s.s_per_epoch or _median([x.s_per_epoch for x in per_entry[s.job.entry] if x.s_per_epoch]) \
            or _median([x.s_per_epoch for x in states if x.job.model == s.job.model and x.s_per_epoch])
        epochs: float | None
        if s.state in ("training", "stopped") and s.patience and s.since_best is not None:
            epochs = max(s.patience - s.since_best, 0)
            if s.max_epochs:
                epochs = min(epochs, max(s.max_epochs - s.epochs, 0))
        else:
            finished = [x.epochs for x in per_entry[s.job.entry] if x.state == "done" and x.epochs]
            cap = s.job.config.get("epochs")  # a short cap (a screening) is the run's length; a long one is none
            epochs = _median(finished) or s.job.expect_epochs or (cap if cap and cap <= SHORT_CAP else None)
        if spe is None or epochs is None:
            unknown += 1
            continue
        total += spe * epochs
    return total, unknown


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _row(s: JobState) -> list[str]:
    best = "" if s.best is None else f"{s.best:.4f}" + (f" @{s.best_epoch}" if s.best_epoch else "")
    since = "" if s.since_best is None or s.state == "done" else f"{s.since_best}/{s.patience or '?'}"
    state = s.state if not s.message or s.state in ("done",) else f"{s.state}: {s.message}"
    if s.job.kind == "evaluate":
        best = "" if s.test is None else "(re-evaluation)"
    return [s.job.key, state, str(s.epochs or ""), best, since, "" if s.test is None else f"{s.test:.4f}",
            _fmt_seconds(s.s_per_epoch) if s.seconds else "", _fmt_seconds(sum(s.seconds)) if s.seconds else ""]


def render(states: list[JobState], parallel: int = 2) -> str:
    """The status table (one line per run) and a footer: counts, measured cost and an estimate of what is left."""
    head = ["run", "state", "epochs", "best valid", "since best", "test", "s/epoch", "train time"]
    rows = [head] + [_row(s) for s in states]
    widths = [min(max(len(r[i]) for r in rows), 110 if i == 1 else 80) for i in range(len(head))]
    lines = ["  ".join(c[:w].ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    spent = sum(sum(s.seconds) for s in states)
    left, unknown = estimate_left(states)
    lines.append("")
    lines.append(f"{len(states)} runs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if left or not unknown:
        what = (f"about {_fmt_seconds(left)} of run time, {_fmt_seconds(left / max(parallel, 1))} at {parallel} at "
                f"a time" + (f", plus {unknown} run(s) not estimable yet (no measured run of their kind)"
                             if unknown else ""))
    else:
        what = f"not estimable yet ({unknown} run(s), none of their kind measured)"
    lines.append(f"training time so far: {_fmt_seconds(spent)} (sum of the epochs' seconds); left: {what}")
    return "\n".join(lines)


def curves(states: list[JobState], every: int = 1) -> str:
    """A markdown table of each trained run's validation curve (every `every`-th epoch), its best value and epoch,
    and the training seconds it took to reach its best: what a recipe screening compares."""
    trained = [s for s in states if s.values]
    if not trained:
        return "no run has finished an epoch yet"
    last = max(len(s.values) for s in trained)
    shown = [e for e in range(1, last + 1) if e % every == 0 or e == 1]
    head = ["run", *(f"ep {e}" for e in shown), "best (epoch)", "s/epoch", "train s to best"]
    rows = []
    for s in trained:
        cells = [f"{s.values[e - 1]:.4f}" if e <= len(s.values) and s.values[e - 1] is not None else ""
                 for e in shown]
        to_best = sum(s.seconds[: s.best_epoch]) if s.best_epoch else None
        rows.append([s.job.key, *cells, f"{s.best:.4f} ({s.best_epoch})" if s.best is not None else "",
                     f"{s.s_per_epoch:.0f}" if s.s_per_epoch else "", f"{to_best:.0f}" if to_best else ""])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
