"""Work on a finished run's weights: re-evaluate them under other evaluation settings, or refit SS4Rec's rating
head with the encoder frozen. Both rebuild the model exactly as training built it and write a new run directory
that names its source run; the refit trains through the shared loop (`engine.fit`).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from recsys.commands import command_text
from recsys.config import ConfigError, RunConfig
from recsys.evaluation import metrics as M
from recsys.models import Recommender, restore_model
from recsys.models.ss4rec import SS4Rec
from recsys.runs import EVAL_ONLY_KEYS, HISTORY, ID_MAPS, WEIGHTS, RunDirectory, RunError, load_weights, save_weights
from recsys.training.engine import fit, resolve_device
from recsys.training.runner import build_task, finish_run, load_prepared
from recsys.training.tasks import epoch_rng, shard

# tie_order: the same weights on histories whose same-second ratings come in a random order (a check on id-ordered
# files; the test target itself can change where a user's last ratings share a second)


@dataclass
class RebuiltRun:
    source: RunDirectory
    info: dict
    config: RunConfig
    prepared: object
    task: object
    protocol: dict
    model: Recommender


def rebuild_run(source, overrides: dict | None = None, expected_model: str | None = None) -> RebuiltRun:
    """A finished run's weights in its model, with its exact prepared data and task (settings overridden)."""
    src = RunDirectory(source)
    state, info = src.load_weights(expected_model)
    cfg = RunConfig.from_dict({**info["config"], **(overrides or {})})
    data, prepared = load_prepared(cfg.train)
    if data.fingerprint != info["dataset"]["fingerprint"]:
        raise RunError(f"{source}: the dataset here differs from the one the run was trained on (fingerprint)")
    try:
        model = restore_model(cfg, prepared, state)
    except RuntimeError as exc:
        raise RunError(f"{source}: the weights do not fit a {cfg.model} built from its run.json ({exc})") from exc
    task, protocol = build_task(cfg, prepared, model)
    return RebuiltRun(src, info, cfg, prepared, task, protocol, model)


def evaluate_run(source: str | Path, out: str | Path, overrides: dict, command: list[str]) -> dict:
    """Re-evaluate a finished run's weights under changed evaluation settings (e.g. seen items masked) and write
    a new run directory that says where its weights came from. Training settings cannot change here."""
    bad = sorted(set(overrides) - set(EVAL_ONLY_KEYS))
    if bad:
        raise ConfigError(f"only evaluation settings can change when re-evaluating ({', '.join(EVAL_ONLY_KEYS)}); "
                          f"not {bad}")
    r = rebuild_run(source, overrides)
    device = resolve_device(r.config.train.device)
    if r.config.train.cpu_threads:
        torch.set_num_threads(int(r.config.train.cpu_threads))
    run = RunDirectory(out)
    run.path.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS, ID_MAPS, HISTORY):
        if (r.source.path / name).exists():
            shutil.copyfile(r.source.path / name, run.path / name)
    new = {k: v for k, v in r.info.items() if k not in ("metrics", "artefacts", "format")}
    new.update(run_id=Path(out).name, command=command_text(command), protocol=r.protocol, config=r.config.as_dict(),
               evaluated_from={"run_id": r.info["run_id"], "command": r.info["command"], "changed": overrides})
    return finish_run(run, new, r.model, r.task, r.prepared, r.config.train, device)


@dataclass
class _StateBatch:
    """Frozen-encoder states before each target, the target item and its rating."""

    states: torch.Tensor
    targets: torch.Tensor
    ratings: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, rows) -> _StateBatch:
        return _StateBatch(self.states[rows], self.targets[rows], self.ratings[rows])

    def to(self, device, non_blocking: bool = False) -> _StateBatch:
        return _StateBatch(*(t.to(device, non_blocking=non_blocking) for t in (self.states, self.targets,
                                                                               self.ratings)))

    def pin_memory(self) -> _StateBatch:
        return _StateBatch(self.states.pin_memory(), self.targets.pin_memory(), self.ratings.pin_memory())


class RatingHeadTask:
    """SS4Rec's rating head on states of the frozen encoder, computed once (eval mode): the states before every
    training target (train) and before each user's validation target (valid). Monitored by validation RMSE."""

    monitor, mode = "rmse", "min"

    @torch.no_grad()
    def __init__(self, model, seq_task, chunk: int = 256):
        w = seq_task.windows
        hs, items, ratings = [], [], []
        for s in range(0, len(w), chunk):
            b = w.take(slice(s, s + chunk))
            h = model.encode(b.items, b.timestamps, b.lengths, b.target_times)
            valid = b.targets > 0
            hs.append(h[valid])
            items.append(b.targets[valid])
            ratings.append(b.target_ratings[valid])
        self.train = _StateBatch(torch.cat(hs), torch.cat(items), torch.cat(ratings))
        c = seq_task.cases("valid")
        h = model.gather_last(model.encode(c.items, c.timestamps, c.lengths, c.target_times), c.lengths)
        self.valid = _StateBatch(h, c.targets, c.target_ratings)
        self.rating_scale = seq_task.rating_scale

    def n_train(self) -> int:
        return len(self.train)

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1):
        for idx in shard(self.n_train(), epoch_rng(seed, epoch), rank, world, batch_size):
            yield self.train.take(torch.from_numpy(idx))

    def loss(self, model, batch: _StateBatch) -> torch.Tensor:
        return F.mse_loss(model.rating_from_state(batch.states, batch.targets), batch.ratings)

    @torch.no_grad()
    def evaluate(self, model, stage: str, device, **_) -> tuple[dict, None]:
        if stage != "valid":
            raise ValueError("the rating-head refit selects on validation only; test is evaluated by the run's task")
        v = self.valid.to(device)
        pred = model.rating_from_state(v.states, v.targets).clamp(*self.rating_scale)
        return {"rmse": M.rmse(pred.cpu().numpy(), v.ratings.cpu().numpy()), "n": len(v)}, None


def refit_rating_head(source: str | Path, out: str | Path, command: list[str], epochs: int = 100,
                      lr: float = 1e-3, patience: int = 5, batch_size: int = 4096, seed: int = 0,
                      progress: bool = False) -> dict:
    """Train SS4Rec's rating head AFTER the ranking model, encoder frozen, selected on validation RMSE.

    The joint run stops at the best ranking epoch, which is not the best rating epoch. Only the small rating MLP
    is fitted, through the shared loop, so ranking outputs are untouched. Writes a new run directory (its
    history.jsonl is the head's learning curve) that records its source run.
    """
    r = rebuild_run(source, {}, expected_model="ss4rec")
    model = r.model
    assert isinstance(model, SS4Rec)  # load_weights refuses a run of another model
    if not model.has_rating:
        raise ConfigError(f"{source} was trained without a rating head (rating_head: false)")
    if r.config.train.objective != "ranking" or getattr(model, "rating_side", None) is not None:
        raise ConfigError(f"{source} is a rating run, already trained and selected on validation RMSE; the refit is "
                          f"for the rating head of a ranking run")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.rating_mlp.parameters():
        p.requires_grad_(True)
    head_task = RatingHeadTask(model, r.task)
    start_rmse = head_task.evaluate(model, "valid", "cpu")[0]["rmse"]
    run = RunDirectory(out)
    run.path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(r.source.path / ID_MAPS, run.path / ID_MAPS)
    save_weights(run.path / WEIGHTS, model.state_dict(), {"model": "ss4rec"})  # the weights to beat
    train = replace(r.config.train, epochs=int(epochs), lr=float(lr), patience=int(patience),
                    batch_size=int(batch_size), seed=int(seed), weight_decay=0.0, grad_clip=0.0, device="cpu")
    state = fit(model, head_task, train, run, "cpu", progress=progress, model_meta={"model": "ss4rec"},
                initial_best=start_rmse)
    best, _ = load_weights(run.path / WEIGHTS)
    model.load_state_dict(best)
    new = {k: v for k, v in r.info.items() if k not in ("metrics", "artefacts", "format")}
    new.update(run_id=Path(out).name, command=command_text(command), protocol=r.protocol,
               rating_head_refit={"source_run": r.info["run_id"], "source_command": r.info["command"],
                                  "valid_rmse_before": start_rmse, "valid_rmse_after": state.best,
                                  "best_epoch": state.best_epoch + 1, "epochs": len(state.history),
                                  "lr": lr, "patience": patience, "batch_size": batch_size, "seed": seed})
    new.update(best_epoch=state.best_epoch + 1, epochs_run=len(state.history), monitor="valid rmse")
    return finish_run(run, new, model, r.task, r.prepared, r.config.train, "cpu")


__all__ = ["EVAL_ONLY_KEYS", "RebuiltRun", "evaluate_run", "rebuild_run", "refit_rating_head"]
