"""Run a campaign: start, resume or skip every run of a plan, N at a time, each in its own process.

Each run is `scripts/train.py` (or `scripts/evaluate.py` for a re-evaluation) in a child process with its own thread
count, so one run's crash cannot take the others down and its run.json records a command anyone can replay. The
runner can be stopped at any moment (Ctrl-C, kill, a session's clock): the children are stopped with it (SIGTERM,
which training records as `interrupted`; if the runner itself is killed with -9, the kernel sends them SIGTERM), and
the next `run` resumes each from its last finished epoch. Runs already done are never trained or tested again; a
folder another process is writing (its lock is held), a broken folder, or one made with other settings is reported
and left alone while the others go on.
"""
from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from recsys.campaign.plan import Job, Plan
from recsys.campaign.status import RUNNABLE, inspect, inspect_job

STOP_GRACE_SECONDS = 60


@dataclass
class Active:
    job: Job
    proc: subprocess.Popen
    log: Path
    epochs: int = 0


@dataclass
class Options:
    parallel: int = 2
    threads: int = 1
    nice: int = 0
    device: str | None = None
    only: list[str] | None = None       # globs on the run folder's name; None: every run
    retry_failed: bool = False
    poll_seconds: float = 2.0
    progress: bool = True


def run_campaign(plan: Plan, opts: Options, say=print) -> int:
    """Run what is left of the plan; 0 when every selected run is done, 1 when some failed or could not start,
    130 when stopped (run again to continue)."""
    everything = inspect(plan)
    states = [s for s in everything if selected(s.job.key, opts.only)]
    if not states:
        say(f"no run of {plan.path} matches {', '.join(opts.only or [])}")
        return 1
    for s in states:
        if s.state in ("broken", "differs", "training") or (s.state == "failed" and not opts.retry_failed):
            say(f"skipped {s.job.key}: {s.state}: {s.message}")
    pending = [s.job for s in states if s.state in RUNNABLE or (opts.retry_failed and s.state == "failed")]
    done = {s.job.key for s in everything if s.state == "done"}
    active: dict[str, Active] = {}
    failed: list[str] = []
    logs = plan.root / ".campaign" / plan.name
    tqdm.monitor_interval = 0  # no monitor thread: children are forked with a pre-exec step
    bar = tqdm(total=len(states), initial=sum(s.job.key in done for s in states), unit="run", desc=plan.name,
               disable=not opts.progress, dynamic_ncols=True)
    previous = signal.signal(signal.SIGTERM, _as_interrupt)
    try:
        while pending or active:
            _fill(pending, active, done, opts, logs, say)
            if not active:
                break
            time.sleep(opts.poll_seconds)
            _poll(active, done, failed, bar, say)
    except KeyboardInterrupt:
        _stop_all(active, say)
        say(f"stopped; `recsys-campaign run {plan.path}` continues every run from its last finished epoch")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
    left = [j.key for j in pending]
    if left:
        say(f"not started: {', '.join(left)} (each waits for a run that did not finish here)")
    return 1 if failed or left or any(s.state in ("broken", "differs", "training") for s in states) else 0


def selected(key: str, only: list[str] | None) -> bool:
    """Whether a run folder's name matches one of the globs (every run when there are none)."""
    return not only or any(fnmatch.fnmatch(key, g) for g in only)


def _as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _fill(pending: list[Job], active: dict[str, Active], done: set[str], opts: Options, logs: Path, say) -> None:
    while len(active) < opts.parallel:
        ready = next((j for j in pending if j.after is None or j.after in done), None)
        if ready is None:
            return
        pending.remove(ready)
        resumed = (ready.path / "run.json").exists()
        active[ready.key] = _start(ready, opts, logs)
        say(f"{'resumed' if resumed else 'started'} {ready.key} (log: {active[ready.key].log})")


def _start(job: Job, opts: Options, logs: Path) -> Active:
    if job.kind == "train":
        module = "recsys.cli.train"
        if (job.path / "run.json").exists():
            argv = ["--resume", str(job.path)]
        else:
            argv = [*job.argv, *(["--device", opts.device] if opts.device else [])]
        argv.append("--quiet")
    else:
        module, argv = "recsys.cli.evaluate", list(job.argv)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{job.key}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads), "MKL_NUM_THREADS": str(opts.threads),
           "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as fh:
        fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {module} {' '.join(argv)}\n".encode())
        fh.flush()
        proc = subprocess.Popen([sys.executable, "-m", module, *argv], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                preexec_fn=_child_setup(opts.nice))
    return Active(job, proc, log, inspect_job(job).epochs if job.kind == "train" else 0)


def _child_setup(nice: int):
    def setup():  # in the child, before exec: lower its priority, and have the kernel stop it if the runner dies
        if nice:
            os.nice(nice)
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG (Linux)
    return setup


def _poll(active: dict[str, Active], done: set[str], failed: list[str], bar, say) -> None:
    for key, a in list(active.items()):
        rc = a.proc.poll()
        if a.job.kind == "train":
            _report_epochs(a, bar)
        if rc is None:
            continue
        del active[key]
        state = inspect_job(a.job)
        if rc == 0 and state.state == "done":
            done.add(key)
            bar.update(1)
            test = "" if state.test is None else f", test {state.monitor} {state.test:.4f}"
            say(f"done {key}" + (f": best valid {state.monitor} {state.best:.4f} at epoch {state.best_epoch}"
                                 if state.best_epoch else "") + test)
        else:
            failed.append(key)
            say(f"failed {key} (exit {rc}): {_tail(a.log)}")
    if active:
        bar.set_postfix_str("; ".join(f"{_short(k)} e{a.epochs}" for k, a in active.items()), refresh=True)


def _report_epochs(a: Active, bar) -> None:
    state = inspect_job(a.job)
    if state.epochs > a.epochs:
        a.epochs = state.epochs
        spe = f", {state.seconds[-1]:.0f} s" if state.seconds else ""
        best = f" (best {state.best:.4f} at {state.best_epoch})" if state.best is not None else ""
        bar.write(f"{a.job.key}: epoch {state.epochs}{best}, {state.since_best} since best{spe}")


def _short(key: str) -> str:
    return key if len(key) <= 40 else key[:18] + "…" + key[-21:]


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_bytes()[-4000:].decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return f"see {log}"
    return " | ".join(text[-lines:]) + f" (log: {log})"


def _stop_all(active: dict[str, Active], say) -> None:
    """SIGTERM every child (training records `interrupted` and keeps its last checkpoint), then wait; SIGKILL any
    that is still there after STOP_GRACE_SECONDS (its last finished epoch is on disk either way)."""
    for a in active.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(a.proc.pid, signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_SECONDS
    for a in active.values():
        try:
            a.proc.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(a.proc.pid, signal.SIGKILL)
            a.proc.wait()
        say(f"stopped {a.job.key} at epoch {inspect_job(a.job).epochs}")

