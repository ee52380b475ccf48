"""Finding runs to compare: every run folder under a root, read through the run-directory contract.

recsys.runs owns the contract (run.json's format, the sha256 of each artefact, how each file is parsed); this module
only walks a folder, adds the checks the comparison relies on (`validate_info`), and turns every unreadable folder
into a message instead of a traceback. Nothing here parses run.json or hashes a file itself: `RunDirectory.info()`,
`.verify()`, `.history()`, `.id_maps()` and `.test_results()` do.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.locking import LOCK_FILE, lock_holder
from recsys.runs import (
    HISTORY,
    RUN_FILE,
    TEST_RESULTS,
    WEIGHTS,
    IdsWithheld,
    RunDirectory,
    RunError,
    check_metrics,
    host_id,
)

FAMILIES = ("ranking", "rating")


@dataclass
class Run:
    """A loaded run: its folder and its validated run.json. A run that fails a check keeps its place in the tables
    with `problem` set, its status "inconsistent" and no metrics: its numbers are never used."""

    path: Path
    info: dict
    problem: str | None = None

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return str(self.info.get("status") or "unknown")


@dataclass
class ScanResult:
    runs: list[Run] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)  # (folder, message): shown, never a traceback
    root_error: str | None = None


def objective(info: dict) -> str | None:
    """What the run was trained for: ``ranking`` or ``rating`` (run.json's objective, else its protocol name)."""
    obj = info.get("objective") or info.get("protocol", {}).get("name")
    return str(obj) if obj is not None else None


def info_of(item: Any) -> dict:
    """The run.json of a `Run`, or the item itself (functions of this package take either)."""
    return item.info if isinstance(item, Run) else item


def label_of(item: Any) -> str:
    if isinstance(item, Run):
        return item.label
    return str(item.get("run_id") or item.get("model") or "run")


def validate_info(info: Any, where: str | Path = "run.json") -> dict:
    """Check the parts of run.json this page relies on; raise RunError with a plain message otherwise."""
    if not isinstance(info, dict):
        raise RunError(f"{where}: malformed run record (not a JSON object)")
    for key in ("dataset", "protocol", "config"):
        if not isinstance(info.get(key), dict):
            raise RunError(f"{where}: malformed run record ('{key}' is not a mapping)")
    if not info["dataset"].get("name"):
        raise RunError(f"{where}: malformed run record (dataset has no name)")
    if objective(info) not in FAMILIES:
        raise RunError(f"{where}: unknown objective {info.get('objective')!r} (expected ranking or rating)")
    metrics = info.get("metrics")
    if metrics is not None and (not isinstance(metrics, dict)
                                or any(not isinstance(v, dict) for v in metrics.values())):
        raise RunError(f"{where}: malformed run record ('metrics' must map valid/test to metric values)")
    ks = info["protocol"].get("ks")
    if ks is not None and (not isinstance(ks, list) or not all(isinstance(k, int) for k in ks)):
        raise RunError(f"{where}: malformed run record (protocol ks must be a list of integers)")
    return info


def _stamp(path: Path) -> tuple:
    out: list[tuple[int, int, int, int] | None] = []
    for name in (RUN_FILE, TEST_RESULTS, WEIGHTS):
        try:
            st = (path / name).lstat()
            # ctime too: it changes with any write and cannot be set back (os.utime resets only mtime), so a
            # same-size rewrite with its mtime restored still changes the stamp
            out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class CheckFailed(Exception):
    """A check that could not run (memory, a file busy or unreadable for now): not a verdict on the run, so never
    cached; the run is shown as unchecked and checked again on the next scan."""


# what says nothing about a run's files: the machine, not the run
_TRANSIENT = (MemoryError, BlockingIOError, InterruptedError, TimeoutError)


# The checks' verdicts, kept on disk per (folder, stamp of its three files) so that a restarted dashboard does not
# re-hash every run's results and weights (about 1 s for 100 runs): a changed file changes the stamp, and the key's
# version changes when the checks do. Written atomically; unreadable or foreign content is ignored (checked again).
CHECKS_VERSION = 1
CHECKS_FILE = "run-checks.json"
_MAX_VERDICTS = 4096
_verdicts_lock = threading.Lock()
_verdicts: dict[str, str | None] | None = None


def _verdicts_path() -> Path:
    from recsys.data.loader import default_cache_dir

    return default_cache_dir() / CHECKS_FILE


def _verdict_key(path: str, stamp: tuple) -> str:
    return f"v{CHECKS_VERSION}|{os.path.realpath(path)}|{json.dumps(stamp)}"


def _load_verdicts() -> dict[str, str | None]:
    global _verdicts
    if _verdicts is None:
        try:
            raw = json.loads(_verdicts_path().read_text())
            ok = isinstance(raw, dict) and all(isinstance(v, (str, type(None))) for v in raw.values())
            _verdicts = dict(raw) if ok else {}
        except (OSError, ValueError):
            _verdicts = {}
    return _verdicts


def _remember(key: str, verdict: str | None) -> None:
    from recsys.run_io import atomic_write_json

    with _verdicts_lock:
        known = _load_verdicts()
        known[key] = verdict
        while len(known) > _MAX_VERDICTS:
            known.pop(next(iter(known)))
        try:
            _verdicts_path().parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(_verdicts_path(), known)
        except OSError:
            pass  # a read-only cache: the verdict is kept in memory only


@functools.lru_cache(maxsize=512)
def _checked(path: str, stamp: tuple) -> str | None:
    """Why a complete run's numbers cannot be trusted (None when they can), from the disk's verdict for this stamp
    when there is one, else checked now and remembered. Raises CheckFailed (never remembered) when the check itself
    could not run."""
    key = _verdict_key(path, stamp)
    with _verdicts_lock:
        known = _load_verdicts()
        if key in known:
            return known[key]
    verdict = _check(path)
    _remember(key, verdict)
    return verdict


def _check(path: str) -> str | None:
    """The checks: its per-user results are the ones run.json hashed, its weights were written for its model, and
    its test metrics are what those results give."""
    run = RunDirectory(path)
    try:
        info = run.info()
        run.verify(info, only=(TEST_RESULTS,))
        run.check_weights_model(info)
        check_metrics(info, run.test_results(), Path(path) / RUN_FILE)
    except RunError as exc:
        if isinstance(exc.__cause__ or exc.__context__, _TRANSIENT):
            raise CheckFailed(f"{type(exc.__cause__ or exc.__context__).__name__}") from exc
        return str(exc)
    except _TRANSIENT as exc:
        raise CheckFailed(type(exc).__name__) from exc
    except Exception as exc:  # anything unexpected is a failed check, never a traceback
        return f"{path}: cannot be checked ({type(exc).__name__}: {exc})"
    return None


def _not_running(path: Path, info: dict) -> str | None:
    """Why a run that says "running" is not being trained (None when it is, or cannot be told). The writer lock
    decides where the folder has one: held means training, free means its writer is gone, whatever pid or host
    run.json records (a pid now used by another process, a folder copied back from a pod). Without a lock file (runs
    from before the lock): a recorded pid on this host that no longer exists, or a run recorded on another host
    whose files have not changed for a day."""
    if (path / LOCK_FILE).exists():
        return None if lock_holder(path) is not None else "ended without finishing (killed?)"
    pid, host = info.get("pid"), info.get("host_id")
    if host is not None and host != host_id():
        try:
            quiet = time.time() - max((path / n).stat().st_mtime for n in (RUN_FILE, HISTORY) if (path / n).exists())
        except (OSError, ValueError):
            return None
        return (f"was recorded as running on another machine ({host}) and has not changed for "
                f"{quiet / 86400:.0f} days") if quiet > 86400 else None
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "ended without finishing (killed?)"
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=1024)
def _read_info(path: str, stamp: tuple) -> dict:
    """run.json read, digest-checked and validated once per version of the file (stamp: its mtime, size, inode):
    the dashboard scans the folder several times per page run."""
    return validate_info(RunDirectory(path).info(), Path(path) / RUN_FILE)


def _load_one(path: Path) -> Run:
    stamp = _stamp(path)
    info = copy.deepcopy(_read_info(str(path), stamp)) if stamp[0] is not None else \
        validate_info(RunDirectory(path).info(), path / RUN_FILE)
    if info.get("status") == "complete":
        try:
            problem = _checked(str(path), stamp)
        except CheckFailed as exc:
            return Run(path, {**info, "status": "unchecked", "metrics": {}},
                       f"{path.name}: could not be checked just now ({exc}); its numbers are not used until a "
                       f"reload checks it")
        if problem:
            return Run(path, {**info, "status": "inconsistent", "metrics": {}}, problem)
    elif info.get("status") == "interrupted" or info.get("status") == "running":
        gone = "was stopped" if info.get("status") == "interrupted" else _not_running(path, info)
        if gone:
            why = f"{path.name}: its training process {gone}; continue it with scripts/train.py --resume {path}"
            return Run(path, {**info, "status": "interrupted"}, why)
    return Run(path, info)


def identity(run: Run) -> str:
    """What makes two folders one run: run.json's content digest (a copy has the same), else the real path."""
    digest = run.info.get("digest")
    return f"digest:{digest}" if isinstance(digest, str) and digest else f"path:{os.path.realpath(run.path)}"


def distinct(runs: list[Run], errors: list | None = None) -> list[Run]:
    """Runs with copies and links of one run counted once (the first by folder name): pooled as seeds, a copy
    would shrink the interval with no new evidence. Each dropped folder is named in `errors` when given."""
    seen: dict[str, Run] = {}
    out = []
    for run in runs:
        key = identity(run)
        if key in seen:
            if errors is not None:
                errors.append((run.path, f"{run.path}: the same run as {seen[key].path} (a copy or a link); "
                                         f"counted once"))
            continue
        seen[key] = run
        out.append(run)
    return out


def folder_stamp(root: str | Path) -> tuple:
    """What changes when any run under root is added, removed, re-trained or edited: each folder's name and the
    stamps (mtime, size, inode) of its run.json, results and weights. Cheap: no file is read."""
    root = Path(root).expanduser()
    try:
        if (root / RUN_FILE).exists():
            return ((root.name, _stamp(root)),)
        return tuple((p.name, _stamp(p)) for p in sorted(root.iterdir())
                     if p.is_dir() and not p.name.startswith((".", "__")))
    except OSError:
        return ()


def scan_runs(root: str | Path) -> ScanResult:
    """Every run folder under root (or root itself if it is a run folder).

    Sub-folders that are not readable runs of this workbench (no run.json, corrupted or foreign run.json, malformed
    record) are returned in `errors` with a message; hidden folders and ``__pycache__`` are ignored.
    """
    root = Path(root).expanduser()
    out = ScanResult()
    if not root.exists():
        out.root_error = f"{root}: no such folder"
        return out
    if not root.is_dir():
        out.root_error = f"{root}: not a folder"
        return out
    try:
        candidates, skipped, more = _candidates(root)
    except OSError as exc:
        out.root_error = f"{root}: cannot list ({exc.strerror or exc})"
        return out
    for p in candidates:
        try:
            out.runs.append(_load_one(p))
        except RunError as exc:
            out.errors.append((p, str(exc)))
        except Exception as exc:  # unreadable folder, permissions...: still a message, never a traceback
            out.errors.append((p, f"{p}: cannot read ({type(exc).__name__}: {exc})"))
    if skipped:
        names = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5:,} more" if len(skipped) > 5 else "")
        out.errors.append((root, f"{root}: {len(skipped):,} sub-folder(s) with no {RUN_FILE} ignored (not runs): "
                                 f"{names}"))
    if more:
        out.errors.append((root, f"{root}: holds more than {MAX_RUNS:,} run folders; only the first {MAX_RUNS:,} "
                                 f"by name are shown ({more:,} left out): split it into several folders"))
    out.runs = distinct(out.runs, out.errors)
    return out


MAX_RUNS = 2000          # run folders read from one root (a page of 10,000 is no longer a page)
MAX_ENTRIES = 100_000    # directory entries looked at while listing one root


def _candidates(root: Path) -> tuple[list[Path], list[str], int]:
    """(run folders to read, names of sub-folders without run.json, run folders left out over MAX_RUNS), listing at
    most MAX_ENTRIES entries: an empty sub-folder costs a stat, never a message row."""
    if (root / RUN_FILE).exists():
        return [root], [], 0
    runs, skipped = [], []
    with os.scandir(root) as it:
        for n, entry in enumerate(it):
            if n >= MAX_ENTRIES:
                break
            if entry.name.startswith((".", "__")):
                continue
            try:
                if not entry.is_dir():
                    continue
            except OSError:
                continue
            p = Path(entry.path)
            if (p / RUN_FILE).exists() or (p / RUN_FILE).is_symlink():
                runs.append(p)
            else:
                skipped.append(entry.name)
    runs.sort()
    skipped.sort()
    return runs[:MAX_RUNS], skipped, max(0, len(runs) - MAX_RUNS)


def load_test_results(path: str | Path, info: dict | None = None) -> pd.DataFrame:
    """Per-user / per-interaction test results, checked against the sha256 in run.json when one is recorded."""
    run = RunDirectory(path)
    if info and info.get("status") in ("inconsistent", "interrupted"):
        raise RunError(f"{run.path.name}: its per-user results are not used (the run is {info['status']})")
    if not (run.path / TEST_RESULTS).exists():
        status = (info or {}).get("status")
        why = "the run is still training" if status == "running" else "no test_results.parquet in the run folder"
        raise RunError(f"{run.path.name}: no per-user test results ({why})")
    if info:
        run.verify(info, only=(TEST_RESULTS,))
    return run.test_results()


def results_stamp(path: str | Path) -> float:
    """When the run's test results were last written (0.0 when there are none): a cache key that changes with them."""
    f = Path(path) / TEST_RESULTS
    return f.stat().st_mtime if f.exists() else 0.0


def info_stamp(path: str | Path) -> float:
    """When run.json was last written: a cache key that changes when a run is re-trained in the same folder."""
    return (Path(path) / RUN_FILE).stat().st_mtime


def read_history(path: str | Path) -> list[dict]:
    """history.jsonl rows (one per finished epoch); [] when the run has none or it cannot be read."""
    try:
        return RunDirectory(path).history()
    except Exception:  # an unreadable history only means no learning curve, never a failed page
        return []


def run_users(path: str | Path) -> np.ndarray:
    """Raw MovieLens ids of the users a run knows, without loading the model: its id maps, or for a licence-safe run
    (ML-1M) the ids rebuilt from the data folder run.json names, checked against the run's digests. RunError if
    unreadable, or saying exactly which folder to provide."""
    run = RunDirectory(path)
    try:
        return run.id_maps()[0]
    except IdsWithheld:
        pass
    from recsys.config import ConfigError, RunConfig
    from recsys.data.prepare import load_prepared

    info = run.info()
    try:  # through the one validated path every run's configuration takes (no unchecked value reaches a path)
        train = RunConfig.from_dict(info.get("config") or {}).train
    except ConfigError as exc:
        raise RunError(f"{run.path.name}: its run.json configuration is not valid here ({exc})") from None
    where = train.data_dir or "(none recorded)"
    try:
        _, prepared = load_prepared(train, download=False)
    except Exception as exc:
        raise RunError(f"{run.path.name} was trained on {info['dataset'].get('name')}, which may not be "
                       f"redistributed, so its user ids are not shipped: put that release's files in {where} "
                       f"(run.json's data folder, relative to where the app was started) and reload ({exc})") from None
    if not run.id_maps_match(prepared.user_map.raw, prepared.item_map.raw):
        raise RunError(f"{run.path.name}: the data in {where} is not the copy the run was trained on (its user and "
                       f"movie ids differ from the run's digests)")
    return prepared.user_map.raw
