"""Helpers several test files share: run records and run folders as training writes them (Compare, the answer page,
seed pooling), a SequenceBatch from plain lists, and SS4Rec's training batch and loss for the kernel tests. Only
helpers live here; every test lives in a test_*.py file."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from streamlit.testing.v1 import AppTest

from recsys import compare as C
from recsys.data.batch import SequenceBatch
from recsys.runs import WEIGHTS, RunDirectory, recomputed_test_metrics, save_weights
from tests.conftest import ROOT

# ------------------------------------------------------------------------------------------ run records and folders
FP = "a" * 64
FILTERS = {"user_k": 5, "item_k": 5, "timestamped_users_only": False, "ratings_before_filter": 100,
           "ratings_after_filter": 90}
RANKING_PROTO = {"user_k": 5, "item_k": 5, "max_len": 50, "mask_seen": False, "timestamped_users_only": False,
                 "ks": [5, 10, 20], "name": "ranking", "split": "leave_one_out_by_time",
                 "candidates": "all items (full ranking)",
                 "ties": "pessimistic: rank = 1 + #other items scoring >= the target",
                 "history_order": "timestamp, then source-file order"}
RATING_PROTO = {"split": "chronological", "user_k": 5, "item_k": 5, "test_frac": 0.1, "valid_frac": 0.1, "k": 5,
                "fold": 1, "seed": 0, "timestamped_users_only": False, "name": "rating"}


def info_for(model="ncf", objective="ranking", *, name="ml-100k", fingerprint=FP, filters=None, status="complete",
             metrics=None, rating_head=False, data_dir=None, run_id=None, best_epoch=3, **proto) -> dict:
    """A run.json as scripts/train.py writes it; **proto overrides protocol fields."""
    base = dict(RANKING_PROTO if objective == "ranking" else RATING_PROTO)
    base.update(proto)
    if rating_head:
        base["rating"] = "rmse/mae on the same held-out interactions"
    if metrics is None:
        metrics = ({"hr@10": 0.1, "ndcg@10": 0.05, "mrr@10": 0.03, "n": 4} if objective == "ranking"
                   else {"rmse": 1.0, "mae": 0.8, "n": 4})
        if rating_head:
            metrics.update(rmse=0.95, mae=0.75)
    info = {"run_id": run_id or f"{model}-{objective}", "model": model, "objective": objective, "status": status,
            "dataset": {"name": name, "source": "/x/recbole/dataset_example/ml-100k", "fingerprint": fingerprint,
                        "filters": dict(filters or FILTERS), "n_users": 4, "n_items": 10, "notes": []},
            "protocol": base, "config": {"dataset": name, "data_dir": data_dir, "model": model},
            "best_epoch": best_epoch if model not in C.FLOOR_MODELS else 0}
    if status == "complete":
        info["metrics"] = {"valid": dict(metrics), "test": dict(metrics)}
    return info


def ranking_results(users=(1, 2, 3, 4), targets=(10, 20, 30, 40), ndcg=(0.5, 0.0, 1.0, 0.25),
                    hist=(4, 25, 120, 300), gaps=(0, 90, 7200, 40 * 86400)) -> pd.DataFrame:
    ndcg = np.asarray(ndcg, float)
    return pd.DataFrame({"user_id": list(users), "user": list(users), "target": list(targets),
                         "history_length": list(hist), "gap_before_target": list(gaps),
                         "rank": np.where(ndcg > 0, 1, 99), "hr@10": (ndcg > 0).astype(float), "ndcg@10": ndcg,
                         "mrr@10": ndcg})


def rating_results(users=(1, 2, 3, 4), items=(10, 20, 30, 40), ratings=(4.0, 3.0, 5.0, 1.0),
                   preds=(3.0, 3.0, 4.0, 3.0)) -> pd.DataFrame:
    p, t = np.asarray(preds, float), np.asarray(ratings, float)
    return pd.DataFrame({"user_id": list(users), "user": list(users), "item": list(items), "pred": p, "target": t,
                         "sq_error": (p - t) ** 2, "abs_error": np.abs(p - t)})


def write_run(root, folder, info, history=None, results=None):
    """A run folder as training writes it: a complete run gets weights of its model, id maps, per-user results,
    test metrics that are what those results give, and the sha256 of each artefact (what the scan checks)."""
    run = RunDirectory(root / folder)
    run.path.mkdir(parents=True, exist_ok=True)
    for row in history or []:
        run.append_history(row)
    if results is not None:
        run.save_test_results(results)
        if info.get("status") == "complete":
            save_weights(run.path / WEIGHTS, {"w": torch.zeros(1)}, {"model": info["model"]})
            run.save_id_maps(np.asarray(results["user_id"]), np.arange(1, 11))
            test = recomputed_test_metrics(results, [k for k in info["metrics"]["test"] if k != "n"])
            info = {**info, "metrics": {**info["metrics"], "test": test}}
        info = {**info, "artefacts": run.artefact_hashes()}
    run.write_info(info)
    return run


def compare_page():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()  # a first run registers streamlit_app.py's pages and draws its sidebar (where the runs folder is typed)
    at.switch_page("app_pages/compare.py")
    return at.run()


# ------------------------------------------------------------------------------------------ answer-page runs
USERS = tuple(range(1, 41))
TARGETS = tuple(100 + u for u in USERS)


def ranking_run(model, seed=0, valid=0.05, test=0.05, variant=None, **proto):
    info = info_for(model, metrics={"hr@10": 2 * test, "ndcg@10": test, "mrr@10": test / 2, "n": len(USERS)},
                    run_id=f"{model}-{variant or 'default'}-{'m' if proto.get('mask_seen') else 'u'}-seed{seed}",
                    **proto)
    info["metrics"]["valid"] = {"hr@10": 2 * valid, "ndcg@10": valid, "mrr@10": valid / 2, "n": len(USERS)}
    info["config"].update({"seed": seed, "max_len": 50})
    if variant:
        info["config"]["variant"] = variant
    return info


def pattern(level, swing=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(level + swing * rng.standard_normal(len(USERS)), 0, 1)


# ------------------------------------------------------------------------------------------ batches
def case(items, timestamps, lengths, target_times=None, **kw) -> SequenceBatch:
    t = lambda x: None if x is None else torch.as_tensor(x)  # noqa: E731
    return SequenceBatch(users=torch.zeros(len(t(lengths)), dtype=torch.long), items=t(items),
                         timestamps=t(timestamps), lengths=t(lengths), target_times=t(target_times),
                         **{k: t(v) for k, v in kw.items()})


def _batch(n_items=40, batch=6, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items, (batch, length + 1), generator=g)
    ts = 880_000_000 + torch.cumsum(torch.randint(0, 10_000, (batch, length + 1), generator=g), 1)
    lengths = torch.randint(3, length + 1, (batch,), generator=g)
    pos = torch.arange(length)[None]
    inp = torch.where(pos < lengths[:, None], items[:, :-1], 0)
    tgt = torch.where(pos < lengths[:, None], items[:, 1:], 0)
    return {"items": inp, "timestamps": torch.where(pos < lengths[:, None], ts[:, :-1], 0), "lengths": lengths,
            "targets": tgt, "target_times": ts[torch.arange(batch), lengths],
            "target_ratings": torch.randint(1, 6, (batch, length), generator=g).float()}


def ss4rec_loss(model, batch: dict) -> torch.Tensor:
    """SS4Rec's whole training loss (ranking CE + rating MSE) on a batch given as a dict of its fields."""
    return model(SequenceBatch(users=torch.zeros(len(batch["lengths"]), dtype=torch.long), **batch))


def assert_learns_upward_walks(model, steps: int = 40, lr: float = 1e-2) -> None:
    """Train `model` (a sequence model, dropout off) on users who each walk items upward (after i comes i + 1, a
    pattern only a sequence model can find): the loss must halve, and after 5, 6, 7 it must rank 8 first."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(1, 20, (32,), generator=g)
    seq = starts[:, None] + torch.arange(11)[None, :]
    times = torch.cumsum(torch.randint(1, 1000, (32, 11), generator=g), 1)
    b = SequenceBatch(users=torch.zeros(32, dtype=torch.long), items=seq[:, :-1], timestamps=times[:, :-1],
                      lengths=torch.full((32,), 10), targets=seq[:, 1:])
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(b)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    probe = SequenceBatch(users=torch.zeros(1, dtype=torch.long), items=torch.tensor([[5, 6, 7]]),
                          timestamps=torch.tensor([[10, 20, 30]]), lengths=torch.tensor([3]))
    with torch.no_grad():
        assert int(model.score(probe)[0, 1:].argmax()) + 1 == 8


def grads_of(loss, leaves):
    """d loss / d each leaf (None for a leaf the loss does not reach)."""
    return torch.autograd.grad(loss, leaves, allow_unused=True)
