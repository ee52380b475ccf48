"""Scoring a saved run's top-k for a known user or for a history with its times: what Live does, without Streamlit.

`Service(root)` lists the complete, integrity-checked runs under one folder (the same checks as the dashboard:
hashes, metrics against per-user results, a foreign or tampered folder refused) and loads each model once, on first
use, shared by every request. Every refusal is a `ServeError` with an HTTP status, the request field it concerns and
a message; the web layer (recsys.serve.app) only translates.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys import compare as C
from recsys.catalogue import display_name
from recsys.compare.variants import reads_target_time
from recsys.inference import LoadedRun, load_run, prefill, score_history, user_history
from recsys.models import model_class
from recsys.roots import OutsideRoots, check_recorded_data_dir
from recsys.runs import RunError

SPAN_SLACK_SECONDS = 365 * 86400  # histories and "now" may reach a year beyond the data's first and last rating
MAX_K = 100
MAX_HISTORY = 5000
RESCAN_SECONDS = 2.0
CACHED_HISTORIES = 4096
CACHED_STATES = 1024  # SS4Rec states after a history: ~50 KB each


class ServeError(Exception):
    """A request the service refuses: HTTP status, the request field concerned, and why."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


@dataclass(frozen=True)
class Event:
    movie_id: int
    timestamp: int


def run_summary(run: C.Run) -> dict:
    """What /runs says of a complete run."""
    info = run.info
    proto = info.get("protocol") or {}
    cfg = info.get("config") or {}
    test = (info.get("metrics") or {}).get("test") or {}
    return {"run": run.label, "model": info["model"], "name": display_name(info["model"]),
            "variant": cfg.get("variant"), "seed": cfg.get("seed"), "objective": info.get("objective"),
            "dataset": (info.get("dataset") or {}).get("name"),
            "protocol": {k: proto.get(k) for k in ("name", "split", "max_len", "mask_seen") if k in proto},
            "scores": "predicted rating" if info.get("objective") == "rating" else "logit",
            "reads_history": bool(model_class(info["model"]).reads_history),
            "reads_target_time": reads_target_time(info),
            "test_metrics": {k: v for k, v in test.items() if isinstance(v, (int, float))}}


class Service:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._models: dict[str, LoadedRun] = {}
        self._runs: dict[str, C.Run] = {}
        self._stamp: tuple | None = None  # the runs folder's folder_stamp at the last scan
        self._checked = 0.0
        self._refused: dict[str, str] = {}
        self._prefilled: OrderedDict[tuple, dict] = OrderedDict()
        self._histories: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    # ------------------------------------------------------------------------------------- runs
    def runs(self) -> dict[str, C.Run]:
        """The complete runs under the folder, by folder name (rescanned when the folder changes; looked at no more
        than once every RESCAN_SECONDS, so a request does not stat every run's files)."""
        with self._lock:
            if self._stamp is not None and time.monotonic() - self._checked < RESCAN_SECONDS:
                return dict(self._runs)
        stamp = C.folder_stamp(self.root)
        with self._lock:
            self._checked = time.monotonic()
            if stamp != self._stamp:
                scan = C.scan_runs(self.root)
                if scan.root_error:
                    raise ServeError(503, "runs", scan.root_error)
                self._runs = {r.label: r for r in scan.runs if r.status == "complete" and not r.problem}
                self._refused = {r.label: r.problem or f"the run is {r.status}" for r in scan.runs
                                 if r.label not in self._runs}
                self._refused.update({p.name: msg for p, msg in scan.errors})
                self._stamp = stamp
            return dict(self._runs)

    def is_loaded(self, name: str) -> bool:
        return name in self._models

    def loaded(self, name: str) -> LoadedRun:
        """A run's model, loaded once and shared; 404 for a name that is not a complete run of the folder."""
        runs = self.runs()
        if name not in runs:
            why = self._refused.get(name)
            if why:
                raise ServeError(409, "run", f"run {name!r} cannot be used: {why}")
            raise ServeError(404, "run", f"no complete run named {name!r} in the runs folder (GET /runs lists them)")
        with self._lock:
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:
            if name not in self._models:
                try:
                    check_recorded_data_dir(runs[name].info)  # a run.json cannot send the server elsewhere
                    self._models[name] = load_run(runs[name].path)
                except (RunError, OSError, OutsideRoots) as exc:
                    raise ServeError(409, "run", f"run {name!r} cannot be used: {exc}") from None
            return self._models[name]

    # ------------------------------------------------------------------------------------- scoring
    def recommend(self, name: str, k: int = 10, user_id: int | None = None, history: list[Event] | None = None,
                  now: int | None = None, exclude_seen: bool = True) -> dict:
        """Top-k movies for a known user (`user_id`) or for a history of (movie, time) with "now"."""
        if (user_id is None) == (history is None):
            raise ServeError(422, "user_id", "give either user_id or history (not both)")
        if not 1 <= int(k) <= MAX_K:
            raise ServeError(422, "k", f"k must be in 1..{MAX_K}, not {k}")
        run = self.loaded(name)
        cls = model_class(run.kind)
        if getattr(run.config.params, "rating_input", False):
            raise ServeError(422, "run", f"run {name!r} is a rating-aware model: it predicts ratings from a history "
                                         f"of ratings, not a top-k; pick a ranking run or a rating run of NCF or a "
                                         f"floor")
        t0 = time.perf_counter()
        if history is not None:
            if not cls.reads_history:
                raise ServeError(422, "history", f"{run.kind} scores known users only (it cannot read a history); "
                                                 f"send user_id instead")
            items, times = self._history(run, history)
            now = self._now(run, times, now)
            scored = score_history(run, items, times, now=now, k=int(k), hide_seen=exclude_seen,
                                   cache=self._states(name, run, items, times))
        elif cls.reads_history:
            assert user_id is not None  # no history: a user (checked above)
            items, times = self._user_events(name, run, int(user_id))
            now = self._now(run, times, now)
            scored = score_history(run, items, times, now=now, k=int(k), hide_seen=exclude_seen,
                                   cache=self._states(name, run, items, times))
        else:
            assert user_id is not None
            self._user(run, user_id)
            if now is not None:
                raise ServeError(422, "now", f"{run.kind} does not read time; leave out now")
            scored = score_history(run, user_id=int(user_id), k=int(k), hide_seen=exclude_seen)
        kind = "predicted rating" if run.info.get("objective") == "rating" else "logit"
        value = "predicted rating" if kind == "predicted rating" else "score"
        table = scored.table
        return {"run": name, "model": run.kind, "dataset": run.info["dataset"].get("name"), "scores": kind,
                "now": now if cls.reads_history else None, "reads_target_time": reads_target_time(run.info),
                "exclude_seen": bool(exclude_seen), "note": scored.note,
                "millis": round((time.perf_counter() - t0) * 1000, 3),
                "items": [{"movie_id": int(m), "title": str(t), "score": float(s)}
                          for m, t, s in zip(table["item"], table["title"], table[value])]}

    def _user_events(self, name: str, run: LoadedRun, user_id: int) -> tuple[np.ndarray, np.ndarray]:
        """A known user's history (movie indices, times) as Live reads it, cached (bounded, least recent out)."""
        key = (name, user_id)
        with self._lock:
            if key in self._histories:
                self._histories.move_to_end(key)
                return self._histories[key]
        hist = self._user(run, user_id)
        events = (hist["item_idx"].to_numpy(), hist["timestamp"].to_numpy())
        with self._lock:
            self._histories[key] = events
            while len(self._histories) > CACHED_HISTORIES:
                self._histories.popitem(last=False)
        return events

    def _states(self, name: str, run: LoadedRun, items: np.ndarray, times: np.ndarray) -> dict | None:
        """SS4Rec's recurrent states after a history (what Live's what-if re-scores from), cached per history, so a
        repeated user or a new "now" costs one step per layer; None for other models."""
        if run.kind != "ss4rec":
            return None
        key = (name, items.astype(np.int64).tobytes(), times.astype(np.int64).tobytes())
        with self._lock:
            if key in self._prefilled:
                self._prefilled.move_to_end(key)
                return self._prefilled[key]
        try:
            states = prefill(run, items, times)
        except ValueError as exc:
            raise ServeError(422, "history", str(exc)) from None
        with self._lock:
            self._prefilled[key] = states
            while len(self._prefilled) > CACHED_STATES:
                self._prefilled.popitem(last=False)
        return states

    def _user(self, run: LoadedRun, user_id):
        try:
            return user_history(run, int(user_id))
        except (KeyError, ValueError) as exc:
            raise ServeError(404, "user_id", f"user {user_id} is not a user of run {run.path.name} ({exc})") from None

    def _span(self, run: LoadedRun) -> tuple[int, int]:
        ts = run.prepared.interactions["timestamp"]
        return int(ts.min()) - SPAN_SLACK_SECONDS, int(ts.max()) + SPAN_SLACK_SECONDS

    def _history(self, run: LoadedRun, history: list[Event]) -> tuple[np.ndarray, np.ndarray]:
        if not history:
            raise ServeError(422, "history", "the history is empty: give at least one (movie_id, timestamp)")
        if len(history) > MAX_HISTORY:
            raise ServeError(422, "history", f"the history has {len(history):,} events; at most {MAX_HISTORY:,}")
        raw = np.array([e.movie_id for e in history], dtype=np.int64)
        times = np.array([e.timestamp for e in history], dtype=np.int64)
        lo, hi = self._span(run)
        bad = np.flatnonzero((times < lo) | (times > hi))
        if len(bad):
            raise ServeError(422, f"history[{bad[0]}].timestamp",
                             f"timestamp {times[bad[0]]} is outside the data's span with a year either side "
                             f"({lo}..{hi}, Unix seconds)")
        items = run.prepared.item_map.to_index(raw, unknown="pad")
        unknown = np.flatnonzero(items == 0)
        if len(unknown):
            raise ServeError(404, f"history[{unknown[0]}].movie_id",
                             f"movie {raw[unknown[0]]} is not in run {run.path.name}'s catalogue")
        order = np.argsort(times, kind="stable")  # oldest first; ratings in the same second keep the order given
        return items[order], times[order]

    def _now(self, run: LoadedRun, times: np.ndarray, now: int | None) -> int:
        if now is None:
            return int(times[-1]) + 86400  # a day after the last rating, as Live's default
        lo, hi = self._span(run)
        if not int(times[-1]) <= int(now) <= hi:
            raise ServeError(422, "now", f"now ({now}) must be at or after the history's last timestamp "
                                         f"({int(times[-1])}) and at most {hi} (a year after the data's last rating)")
        return int(now)
