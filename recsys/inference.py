"""Loading a trained run for inspection and live scoring: what the State-trajectory and Live pages call.

- `load_run(path)` rebuilds the model from run.json + safetensors and the exact prepared dataset it was trained on
  (same filters, same id maps), refusing corrupted, tampered or foreign runs with a RunError.
- `user_history(run, user_id)` a user's chronological history (as in training: 5-core filtered, ties by file order).
- `trajectory(run, items, times, ...)` per step of a history: the movie, time, gaps, S5 retention implied by the gap,
  hidden states of each layer, top-k next movies with scores and the rank of the movie that really came next.
- `score_history(run, items, times, now, ...)` scores the whole catalogue for a history and a "now"; for NCF (which
  has no notion of history) it scores a known user.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys.catalogue import display_name
from recsys.compare.variants import reads_target_time
from recsys.config import ConfigError, RunConfig
from recsys.data.batch import SequenceBatch, single_history
from recsys.data.history import History, cut_history, gaps_after, gaps_before
from recsys.data.prepare import PreparedData, chronological_order
from recsys.evaluation.metrics import target_ranks
from recsys.explore import format_gap
from recsys.models import Recommender, model_class, restore_model
from recsys.models.ss4rec import SS4Rec
from recsys.runs import RunDirectory, RunError
from recsys.training.runner import load_prepared

human_gap = format_gap  # one wording of gaps across the pages


@dataclass
class LoadedRun:
    path: Path
    info: dict
    model: Recommender
    prepared: PreparedData
    fingerprint_matches: bool

    @property
    def kind(self) -> str:
        return self.info["model"]

    @property
    def ss4rec(self) -> SS4Rec:
        """The model, for what only SS4Rec has (its states, live re-scoring from them, retention)."""
        assert isinstance(self.model, SS4Rec), f"an SS4Rec run is needed; this is a {self.kind} run"
        return self.model

    @property
    def max_len(self) -> int:
        return int(self.config.train.max_len)

    @cached_property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.info["config"])

    @cached_property
    def item_columns(self) -> dict:
        """item, title, genres as arrays indexed by item_idx (row 0 = padding), for O(k) lookups when scoring."""
        items = self.prepared.items
        out = {}
        for col in ("item", "title", "genres"):
            arr = np.empty(self.prepared.n_items + 1, dtype=object if col != "item" else np.int64)
            arr[items["item_idx"].to_numpy()] = items[col].to_numpy()
            arr[0] = -1 if col == "item" else ""
            out[col] = arr
        return out

    def titles(self, item_idx) -> list[str]:
        return self.item_columns["title"][np.asarray(item_idx, dtype=np.int64)].tolist()


def load_run(path: str | Path, data_dir: str | None = None) -> LoadedRun:
    """Rebuild a run's model on CPU with its training data; every failure is a RunError with a clear message."""
    run = RunDirectory(path)
    state, info = run.load_weights()
    try:
        cfg = RunConfig.from_dict(info["config"])
    except ConfigError as exc:
        raise RunError(f"{path}: its run.json configuration is not valid here ({exc})") from exc
    try:
        data, prepared = load_prepared(cfg.train, download=False, data_dir=data_dir)
    except Exception as exc:
        raise RunError(f"{path}: the run's dataset {cfg.train.dataset!r} is not available here ({exc})") from exc
    if not run.id_maps_match(prepared.user_map.raw, prepared.item_map.raw):
        raise RunError(f"{path}: its id maps do not match {data.name} as prepared here (the dataset changed since "
                       f"training, or the run comes from another copy); retrain or point to the original data")
    try:
        model = restore_model(cfg, prepared, state)
    except RuntimeError as exc:
        raise RunError(f"{path}: the weights do not fit a {info['model']} built from its run.json ({exc})") from exc
    return LoadedRun(Path(path), info, model, prepared, data.fingerprint == info["dataset"].get("fingerprint"))


def most_rated(run: LoadedRun, exclude=(), k: int = 10) -> pd.DataFrame:
    """The k most-rated movies of a run's data (what a recommender without a history falls back to), without the
    movie indices in `exclude`: columns rank, title, ratings."""
    counts = run.prepared.interactions["item_idx"].value_counts()
    drop = [i for i in exclude if i in counts.index]
    top = counts.drop(index=drop).head(k)
    return pd.DataFrame({"rank": range(1, len(top) + 1), "title": run.titles(top.index.tolist()),
                         "ratings": top.to_numpy()})


def user_history(run: LoadedRun, user_id: int) -> pd.DataFrame:
    """A user's chronological history with item indices, titles, genres, ratings and gaps; KeyError if unknown."""
    try:
        uidx = int(run.prepared.user_map.to_index([int(user_id)])[0])
    except (KeyError, ValueError):
        raise KeyError(f"user {user_id} is not in {run.info['dataset']['name']} after the run's filters "
                       f"({run.prepared.n_users:,} users, ids {int(run.prepared.user_map.raw[0])}.."
                       f"{int(run.prepared.user_map.raw[-1])})") from None
    inter = run.prepared.interactions
    rows = inter[inter["user_idx"] == uidx]
    rows = rows.iloc[chronological_order(rows["user_idx"].to_numpy(), rows["timestamp"].to_numpy())]
    items = run.prepared.items.set_index("item_idx")
    out = pd.DataFrame({
        "item": rows["item"].to_numpy(), "item_idx": rows["item_idx"].to_numpy(),
        "title": items.loc[rows["item_idx"], "title"].to_numpy(),
        "genres": items.loc[rows["item_idx"], "genres"].to_numpy(),
        "rating": rows["rating"].to_numpy(), "timestamp": rows["timestamp"].to_numpy(dtype=np.int64),
    })
    out["gap_before"] = gaps_before(out["timestamp"].to_numpy())
    return out.reset_index(drop=True)


def _fed_history(run: LoadedRun, items, times, ratings=None, now: int | None = None) -> History:
    """The history as the run's model is fed it (cut like evaluation), after checking the movies are known."""
    h = cut_history(items, times, run.max_len, ratings, now)
    given = np.asarray(items)
    if (given < 1).any() or (given > run.prepared.n_items).any():
        raise ValueError("the history holds movies this run does not know")
    return h


@torch.no_grad()
def trajectory(run: LoadedRun, items, times, ratings=None, k: int = 10, now: int | None = None) -> dict:
    """Step through a history with SS4Rec: per step the movie, gaps, S5 retention, per-layer states and the
    top-k predicted next movies with the rank of the one that came next.

    Like evaluation, only the last max_len movies are fed. Step j's prediction is for the interaction at
    times[j+1] (the model is told when it happens); the last step predicts at `now` (default: +1 day).
    """
    if run.kind != "ss4rec":
        raise ValueError(f"state trajectories need an SS4Rec run; this is a {run.kind} run")
    fed = _fed_history(run, items, times, ratings)
    items, times, ratings, cut = fed.items, fed.times, fed.ratings, fed.cut
    n = len(items)
    now = int(times[-1] + 86400) if now is None else int(now)
    model = run.ss4rec
    batch = single_history(items, times, now)
    assert batch.timestamps is not None and batch.lengths is not None
    h, s5_states, layers = model.encode(batch.items, batch.timestamps, batch.lengths, batch.target_times,
                                        return_states=True)
    logits = h[0] @ model.item_embedding.weight.T  # [n, n_items]
    logits[:, 0] = float("-inf")
    dt_after = gaps_after(times[None], np.array([n]), np.array([now]))[0].astype(np.float64)
    dt_before = gaps_before(times)
    dt_fed = model.gaps(batch.timestamps, batch.lengths, batch.target_times)[0]
    retention = [block.s5.retention(dt_fed).numpy() for block in model.block_list if block.s5 is not None]
    steps = []
    top_scores, top_items = torch.topk(logits, min(k, logits.shape[1] - 1), dim=1)
    # the same pessimistic rank as evaluation: step j's logits against the movie at step j+1
    next_ranks = target_ranks(logits[:-1], torch.from_numpy(items[1:])).tolist() if n > 1 else []
    for j in range(n):
        nxt = int(items[j + 1]) if j + 1 < n else None
        steps.append({
            "step": j + 1, "item_idx": int(items[j]), "title": run.titles([items[j]])[0],
            "timestamp": int(times[j]), "rating": None if ratings is None else float(ratings[j]),
            "gap_before": int(dt_before[j]), "gap_after": float(dt_after[j]),
            "retention": [float(r[j]) for r in retention],
            "top_items": top_items[j].tolist(), "top_titles": run.titles(top_items[j].tolist()),
            "top_scores": top_scores[j].tolist(),
            "next_item": nxt, "next_rank": next_ranks[j] if nxt else None,
        })
    return {
        "steps": steps, "now": now, "cut": cut,
        "hidden": [layer[0].numpy() for layer in layers],                     # per layer [n, d]
        "s5_state": [np.abs(x[0].numpy()) for x in s5_states if x is not None],  # per S5 layer [n, P] magnitudes
    }


@torch.no_grad()
def occlusion(model, items, times, target_time: int, targets) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """Leave-one-out contributions of each movie of a history to a sequence model's scores (logits) of `targets`
    at `target_time`: score(full history) - score(the history without that movie and its time), the later
    movies and their gaps unchanged. One batched forward pass of len(items) histories (`model.score`, the
    Recommender interface, so any model that reads histories). Returns ({target: [n] contributions},
    {target: full-history score}); with one movie there is nothing to remove from, and its contribution is NaN.

    Why not gradients: SS4Rec normalises after a layer that is linear in its input, so its output does not change
    when every item embedding is scaled alike; gradient x input sums to ~0 and integrated gradients from a zero
    history are degenerate. Removing a movie asks the question a person has ("without it, would this still be
    recommended?") and has an exact meaning.
    """
    items, times = np.asarray(items, dtype=np.int64), np.asarray(times, dtype=np.int64)
    n = len(items)
    if n < 1:
        raise ValueError("an empty history has nothing to attribute")
    targets = [int(t) for t in targets]
    full = model.score(single_history(items, times, int(target_time)))[0, targets]
    values = {t: np.full(n, np.nan) for t in targets}
    if n > 1:
        keep = ~np.eye(n, dtype=bool)
        reduced = SequenceBatch(users=torch.zeros(n, dtype=torch.long),
                                items=torch.from_numpy(np.stack([items[k] for k in keep])),
                                timestamps=torch.from_numpy(np.stack([times[k] for k in keep])),
                                lengths=torch.full((n,), n - 1, dtype=torch.long),
                                target_times=torch.full((n,), int(target_time), dtype=torch.long))
        without = model.score(reduced)[:, targets]                                  # [n, T]
        for k, t in enumerate(targets):
            values[t] = (full[k] - without[:, k]).double().numpy()
    return values, {t: float(full[k]) for k, t in enumerate(targets)}


def contributions(run: LoadedRun, items, times, step: int, targets, now: int | None = None) -> dict:
    """Per movie of the history fed at `step` (counted like `trajectory`: 1 = after the first fed movie), how much
    it raised or lowered the run's score of each movie in `targets` for the next interaction (`occlusion`). The
    prediction is for the time of the next movie, or `now` (default +1 day) after the last one.

    Returns {"positions": 1..step, "titles", "items", "values": {target: [step]}, "logit": {target: score}, "cut"}.
    """
    if not model_class(run.kind).reads_history:
        raise ValueError(f"a {run.kind} run does not read histories: there is nothing to attribute")
    fed = _fed_history(run, items, times)
    items, times = fed.items, fed.times
    n = len(items)
    if not 1 <= int(step) <= n:
        raise ValueError(f"step must be between 1 and {n}, not {step}")
    j = int(step)
    target_time = int(times[j]) if j < n else (int(times[-1] + 86400) if now is None else int(now))
    values, logit = occlusion(run.model, items[:j], times[:j], target_time, targets)
    return {"positions": list(range(1, j + 1)), "titles": run.titles(items[:j]), "items": [int(i) for i in items[:j]],
            "values": values, "logit": logit, "cut": fed.cut}


def state_projection(hidden: np.ndarray) -> np.ndarray:
    """2-D PCA of one layer's hidden states over the steps ([n, d] -> [n, 2]); zeros for fewer than 2 steps.

    Plain SVD of the centred states (what sklearn's PCA does), signs fixed so the picture does not flip between
    reruns."""
    hidden = np.asarray(hidden, dtype=np.float64)
    out = np.zeros((len(hidden), 2))
    if len(hidden) < 2:
        return out
    centred = hidden - hidden.mean(0)
    u, sv, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, len(sv))
    proj = u[:, :k] * sv[:k]
    signs = np.sign(proj[np.abs(proj).argmax(0), np.arange(k)])
    out[:, :k] = proj * np.where(signs == 0, 1, signs)
    return out


def genre_affinity(run: LoadedRun, step_item_lists: list[list[int]], genres: list[str]) -> pd.DataFrame:
    """Share of each genre among each step's top-k predicted movies: what the model expects, step by step."""
    g = run.prepared.items["genres"].to_numpy()
    rows = []
    for j, top in enumerate(step_item_lists):
        tg = [g[i - 1].split("|") for i in top]
        for genre in genres:
            rows.append({"step": j + 1, "genre": genre, "share": float(np.mean([genre in t for t in tg]))})
    return pd.DataFrame(rows)


@torch.no_grad()
def prefill(run: LoadedRun, items, times) -> dict:
    """SS4Rec's recurrent states after a history (fed like evaluation: its last max_len movies), for what-if
    re-scoring of the next interaction's time with `score_history(..., cache=...)`."""
    fed = _fed_history(run, items, times)
    return run.ss4rec.prefill(torch.from_numpy(fed.items)[None], torch.from_numpy(fed.times)[None])


@dataclass
class Scored:
    table: pd.DataFrame
    millis: float
    note: str = ""


def _top_table(run: LoadedRun, scores: torch.Tensor, k: int, exclude: np.ndarray | None, kind: str) -> pd.DataFrame:
    s = scores.clone().float()
    s[0] = float("-inf")
    if exclude is not None and len(exclude):
        s[torch.tensor(np.asarray(exclude), dtype=torch.long)] = float("-inf")
    val, idx = torch.topk(s, min(k, int(torch.isfinite(s).sum())))
    cols = run.item_columns
    idx_np = idx.numpy()
    return pd.DataFrame({"rank": np.arange(1, len(idx_np) + 1), "item": cols["item"][idx_np],
                         "title": cols["title"][idx_np], "genres": cols["genres"][idx_np], kind: val.numpy()})


@torch.no_grad()
def score_history(run: LoadedRun, items=None, times=None, now: int | None = None, k: int = 10,
                  hide_seen: bool = True, user_id: int | None = None, cache: dict | None = None) -> Scored:
    """Top-k of the whole catalogue. SS4Rec: for a history of (movie index, time) and "now". SASRec, GRU4Rec and
    the Markov floor: for the history's movies (they ignore time). NCF and the other floors: for a known user (they
    cannot read a history). With hide_seen, movies in the history are left out."""
    t0 = time.perf_counter()
    if run.kind == "ss4rec":
        seen = np.asarray(items, dtype=np.int64)  # all of the history is "seen", fed or not
        fed = _fed_history(run, items, times)
        now = int(fed.times[-1] + 86400) if now is None else int(now)
        if cache is None:
            cache = run.ss4rec.prefill(torch.from_numpy(fed.items)[None], torch.from_numpy(fed.times)[None])
        scores = run.ss4rec.score_next(cache, torch.tensor([now]))[0]
        table = _top_table(run, scores, k, seen if hide_seen else None, "score")
        return Scored(table, (time.perf_counter() - t0) * 1000)
    if model_class(run.kind).reads_history and items is not None:  # SASRec, GRU4Rec, Markov: the history
        seen = np.asarray(items, dtype=np.int64)
        fed = _fed_history(run, items, times)
        now = int(fed.times[-1] + 86400) if now is None else int(now)
        scores = run.model.score(single_history(fed.items, fed.times, now))[0].float()
        table = _top_table(run, scores, k, seen if hide_seen else None, "score")
        timed = reads_target_time(run.info)
        return Scored(table, (time.perf_counter() - t0) * 1000,
                      f"scores for this history (its last {len(fed.items)} movies); "
                      + (f"{display_name(run.kind)} reads the gap to the next rating (this variant)"
                         if timed else f"{display_name(run.kind)} ignores time"))
    if user_id is None:
        raise ValueError(f"{run.kind} scores known users only: it has no way to read a custom history")
    hist = user_history(run, user_id)
    uidx = torch.as_tensor(run.prepared.user_map.to_index([int(user_id)]))
    exclude = hist["item_idx"].to_numpy() if hide_seen else None
    scores = run.model.score(SequenceBatch(users=uidx))[0].float()
    if run.info["objective"] == "rating":
        kind, note = "predicted rating", "predicted rating of every movie for this user, highest first"
    else:
        kind, note = "score", ""
    table = _top_table(run, scores, k, exclude, kind)
    return Scored(table, (time.perf_counter() - t0) * 1000, note)


def gap_sweep(run: LoadedRun, items, times, gaps: dict[str, int], k: int = 10, hide_seen: bool = True,
              cache: dict | None = None) -> pd.DataFrame:
    """SS4Rec's top-k for the next rating after each what-if gap (label -> seconds after the last movie), and how
    many of its k movies it shares with the list at the first gap. Re-scores from one prefilled state."""
    fed = _fed_history(run, items, times)
    if cache is None:
        cache = run.ss4rec.prefill(torch.from_numpy(fed.items)[None], torch.from_numpy(fed.times)[None])
    rows, first = [], None
    for label, gap in gaps.items():
        res = score_history(run, items, times, now=int(fed.times[-1]) + int(gap), k=k, hide_seen=hide_seen,
                            cache=cache)
        top = set(res.table["item"])
        first = top if first is None else first
        rows.append({"gap": label, "seconds": int(gap), "shared with the first": len(top & first),
                     "top": list(res.table["title"])})
    return pd.DataFrame(rows)


@torch.no_grad()
def retention_curve(run: LoadedRun, seconds) -> pd.DataFrame:
    """S5 retention (mean |Abar| over the state) of each layer after each gap in `seconds`, as the run feeds gaps
    (its time unit, transform and normalisation). Empty for a run without S5 layers."""
    dt = torch.as_tensor(np.asarray(seconds, dtype=np.float64))
    rows = []
    model = run.ss4rec
    for i, block in enumerate(b for b in model.block_list if b.s5 is not None):
        ret = block.s5.retention(model.scale_gaps(dt)).numpy()
        rows += [{"seconds": float(g), "layer": f"layer {i + 1}", "retention": float(r)} for g, r in zip(seconds, ret)]
    return pd.DataFrame(rows, columns=["seconds", "layer", "retention"])
