"""The shared training loop: early stopping on a validation metric, gradient clipping, bf16 autocast on CUDA,
per-epoch seeding, tqdm progress, an atomic checkpoint every epoch, exact resume, and DistributedDataParallel.

Determinism: every epoch reseeds torch and the task's sampler from (seed, epoch), so a run killed after epoch k
and resumed from its checkpoint draws the same batches, negatives and dropout masks as an unbroken run.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from recsys.config import TrainConfig
from recsys.runs import WEIGHTS, RunDirectory, save_weights
from recsys.training.tasks import is_better, n_batches


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a no-op for plain `python`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, dist_info: DistInfo | None = None) -> str:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but this torch build sees no CUDA GPU "
                               f"(torch {torch.__version__}); use --device cpu or auto")
        if dist_info and dist_info.enabled:
            name = f"cuda:{dist_info.local_rank}"
            torch.cuda.set_device(name)
    return name


def benchmark_devices(choice: str) -> list[str]:
    """Devices a benchmark should measure for --device auto|cpu|cuda|both; ValueError when CUDA is asked but absent."""
    devices = {"auto": ["cuda"] if torch.cuda.is_available() else ["cpu"], "both": ["cpu", "cuda"]}.get(choice,
                                                                                                       [choice])
    if "cuda" in devices and not torch.cuda.is_available():
        raise ValueError(f"--device {choice}: this torch build ({torch.__version__}) sees no CUDA GPU")
    return devices


DIVERGED = 1e4  # a batch loss this many times the first batch's (or 1) is divergence, stopped like a NaN


def seed_everything(seed: int, epoch: int = 0) -> None:
    torch.manual_seed(seed * 1_000_003 + epoch)


@dataclass
class FitState:
    epoch: int = -1  # last finished epoch
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)
    stopped: bool = False  # early stopping (or a NaN validation value) ended training: a resume trains no more


def _train_epoch(train_model, model, task, opt, cfg: TrainConfig, epoch: int, device: str, dist_info: DistInfo,
                 use_bf16: bool, progress: bool, first_loss: float | None) -> tuple[float, int, float | None]:
    """One epoch of optimiser steps: (mean train loss, samples seen, the run's first batch loss). A loss that is not
    finite, or that grew past DIVERGED times the first batch's, stops the run with a FloatingPointError."""
    train_model.train()
    total, count, n_samples = 0.0, 0, 0
    # batches are built as they are used (a list of them was a second copy of the training windows in memory);
    # the order of every random draw is the same, so runs resume and reproduce exactly as before
    batches = task.batches(epoch, int(cfg.seed), int(cfg.batch_size), dist_info.rank, dist_info.world)
    bar = tqdm(batches, total=n_batches(task.n_train(), dist_info.world, int(cfg.batch_size)),
               desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not (progress and dist_info.is_main))
    for batch in bar:
        if device.startswith("cuda"):  # pinned host memory lets the copy overlap the previous step's kernels
            batch = batch.pin_memory().to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = task.loss(train_model, batch)
        batch_loss = loss.item()
        first_loss = batch_loss if first_loss is None else first_loss
        if not math.isfinite(batch_loss) or abs(batch_loss) > DIVERGED * max(abs(first_loss), 1.0):
            what = "became" if not math.isfinite(batch_loss) else "diverged to"
            raise FloatingPointError(f"epoch {epoch + 1}: the training loss {what} {batch_loss:.4g} (first batch "
                                     f"{first_loss:.4g}); lower --lr or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.grad_clip))
        opt.step()
        total += batch_loss
        count += 1
        n_samples += len(batch)
        if count % 20 == 0:
            bar.set_postfix(loss=f"{total / count:.4f}")
    train_loss = total / max(count, 1)
    if dist_info.enabled:
        t = torch.tensor([train_loss, n_samples], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        train_loss, n_samples = float(t[0]) / dist_info.world, int(t[1])
    return train_loss, n_samples, first_loss


def fit(model, task, cfg: TrainConfig, run: RunDirectory | None, device: str, dist_info: DistInfo | None = None,
        resume: dict | None = None, progress: bool = True, model_meta: dict | None = None,
        initial_best: float | None = None) -> FitState:
    """Train until cfg.epochs or early stopping; keep the best weights in run/model.safetensors.

    `initial_best`: the validation value of the starting weights, when they must be beaten to count (a refit);
    the caller has saved them as the best so far."""
    dist_info = dist_info or DistInfo()
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = FitState(best=initial_best)
    if resume:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        state = FitState(int(resume["epoch"]), resume["best"], int(resume["best_epoch"]), int(resume["bad_epochs"]),
                         float(resume["train_seconds"]), stopped=bool(resume.get("stopped", False)))
        # a run checkpointed at the epoch where early stopping fired ends there, as the unbroken run did
        state.stopped = state.stopped or state.bad_epochs >= int(cfg.patience)
    train_model = model
    if dist_info.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist_info.local_rank] if device.startswith("cuda") else None)
    use_bf16 = device.startswith("cuda") and cfg.precision in ("auto", "bf16") \
        and torch.cuda.is_bf16_supported()
    seed, patience = int(cfg.seed), int(cfg.patience)
    monitor, mode = task.monitor, task.mode
    first_loss = None
    for epoch in range(state.epoch + 1 if not state.stopped else int(cfg.epochs), int(cfg.epochs)):
        seed_everything(seed, epoch)
        t0 = time.perf_counter()
        train_loss, n_samples, first_loss = _train_epoch(train_model, model, task, opt, cfg, epoch, device, dist_info,
                                                         use_bf16, progress, first_loss)
        seconds = time.perf_counter() - t0
        stop = torch.zeros(1, device=device)
        if dist_info.is_main:
            model.eval()
            valid, _ = task.evaluate(model, "valid", device, batch_size=int(cfg.eval_batch_size))
            value = valid[monitor]
            state.train_seconds += seconds
            improved = is_better(value, state.best, mode)
            if improved:
                state.best, state.best_epoch, state.bad_epochs = value, epoch, 0
                if run:
                    save_weights(run.path / WEIGHTS, model.state_dict(), model_meta)
            else:
                state.bad_epochs += 1
            row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"],
                   "seconds": seconds, "samples_per_second": n_samples / max(seconds, 1e-9),
                   **{f"valid_{k}": v for k, v in valid.items() if k != "n"}}
            state.history.append(row)
            state.epoch = epoch
            if run:
                run.append_history(row)
                stopping = state.bad_epochs >= patience or (isinstance(value, float) and math.isnan(value))
                run.save_resume({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                 "best": state.best, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
                                 "train_seconds": state.train_seconds, "stopped": stopping})
            if os.environ.get("RECSYS_CRASH_AFTER_EPOCH") == str(epoch + 1):
                os._exit(137)  # test hook: die like `kill -9` right after this epoch's checkpoint
            if progress:
                tqdm.write(f"epoch {epoch + 1}: train loss {train_loss:.4f}, valid {monitor} {value:.4f}"
                           f"{' *' if improved else ''} ({seconds:.1f}s)")
            if state.bad_epochs >= patience or (isinstance(value, float) and math.isnan(value)):
                stop[0] = 1
                state.stopped = True
        else:
            state.epoch = epoch
        if dist_info.enabled:
            dist.broadcast(stop, 0)
        if stop.item():
            break
    return state
