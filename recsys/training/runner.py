"""From a configuration to a finished run directory: data, protocol, task, model, training, evaluation, run.json.

The resolved configuration, the exact command line, the data fingerprint and the protocol are all recorded in
run.json, so every number the dashboard shows can be traced to the command that made it.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import torch

from recsys.commands import command_text
from recsys.config import ConfigError, RunConfig, TrainConfig
from recsys.data.loader import EMBEDDED
from recsys.data.prepare import load_prepared
from recsys.data.readers import guess_name
from recsys.evaluation.protocols import RankingProtocol, RatingProtocol, leave_one_out, rating_split
from recsys.models import build_model, model_class
from recsys.redistribution import WITHHELD_COLUMNS, restricted
from recsys.runs import RUN_FILE, WEIGHTS, RunDirectory, RunError, host_id, load_weights, save_weights, weights_binding
from recsys.training.engine import fit, init_distributed, resolve_device, seed_everything
from recsys.training.tasks import RankingTask, RatingTask, SequenceRatingTask, SequenceTask


def build_task(cfg: RunConfig, prepared, model):
    """The task (batches, loss, evaluation) of a configuration's protocol for `model`, and the protocol as run.json
    records it."""
    t, cls = cfg.train, model_class(cfg.model)
    assert t.user_k is not None and t.item_k is not None  # resolve_config fills the k-cores in
    proto: RankingProtocol | RatingProtocol
    task: RankingTask | SequenceRatingTask | RatingTask
    if t.objective == "ranking":
        proto = RankingProtocol.from_config(t)
        desc = proto.describe()
        if t.tie_order == "shuffled":
            desc["history_order"] = "timestamp, then a seeded random order among ratings in the same second"
        if cls.reads_history:
            task = SequenceTask(prepared, leave_one_out(prepared), proto.max_len, proto.mask_seen, proto.ks,
                               window_stride=t.window_stride)
            if model.has_rating:
                desc["rating"] = ("rmse/mae on the same held-out interactions: each user's second-to-last (valid) "
                                  "and last (test) rating by time, predicted from strictly earlier history")
            return task, desc
        task = RankingTask(prepared, leave_one_out(prepared), proto.max_len, proto.mask_seen, proto.ks,
                           num_negatives=cls.sampled_negatives(cfg.params))
        return task, desc
    proto = RatingProtocol.from_config(t)
    split = rating_split(prepared, proto, t.data_dir)
    desc = proto.describe()
    if cls.reads_history:  # a rating-aware sequence model or the recent-residual floor: the rule for its history
        desc["max_len"] = int(t.max_len)
        desc["history"] = (
            "each held-out rating is predicted from the same user's earlier ratings by time (ties in file order; "
            "the test history holds the validation rating), the last max_len of them"
            if proto.split == "chronological" else
            "each held-out rating is predicted from the same user's training-part ratings (fit and validation rows) "
            "with a strictly earlier timestamp (ratings in the same second are not history), the last max_len")
        task = SequenceRatingTask(prepared, split, int(t.max_len), t.window_stride)
    else:
        task = RatingTask(prepared, split)
    if t.tie_order == "shuffled":
        desc["tie_order"] = "shuffled: a seeded random order among a user's ratings in the same second"
    desc["notes"] = split.notes
    desc["sizes"] = {"train": int(len(split.train)), "valid": int(len(split.valid)), "test": int(len(split.test))}
    return task, desc


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else None
    except Exception:
        return None


def git_state() -> dict:
    """The commit the code came from and whether the working tree had uncommitted changes to tracked files outside
    checkpoints/ (run outputs are not code: `make checkpoints` replaces the shipped runs while it trains them)."""
    commit = _git("rev-parse", "HEAD") or None
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)checkpoints") \
        if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def dataset_name(train: TrainConfig) -> str:
    """The release a configuration trains on: --dataset, else the release detected from --data-dir, else the
    embedded ML-100K."""
    if train.dataset:
        return str(train.dataset).lower()
    return guess_name(Path(train.data_dir)) if train.data_dir else EMBEDDED


def _cpu_kernels(device: str) -> str:
    """Which CPU code ran the SS4Rec layers: our C kernels or the pure-PyTorch fallback (and why)."""
    if not device.startswith("cpu"):
        return "n/a (not a CPU run)"
    from recsys.models import native

    return "native" if native.available() else f"pure PyTorch ({native.status()})"


def run_training(cfg: RunConfig, out: str | Path, command: list[str], resume: bool = False,
                 progress: bool = True) -> dict:
    """Train (or fit) one model and write its complete run directory; returns run.json's content."""
    t_start = time.time()
    t = cfg.train
    dist_info = init_distributed(t.device if t.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    device = resolve_device(t.device, dist_info)
    if t.cpu_threads:
        torch.set_num_threads(int(t.cpu_threads))
    seed_everything(int(t.seed))
    run = RunDirectory(out)
    if t.dataset is None:  # recorded as the release actually read
        cfg = RunConfig(cfg.model, replace(t, dataset=dataset_name(t)), cfg.params)
        t = cfg.train
    data, prepared = load_prepared(t)
    model = build_model(cfg, prepared)
    task, protocol = build_task(cfg, prepared, model)
    info = {
        "run_id": Path(out).name, "model": cfg.model, "objective": t.objective, "status": "running",
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command_text(command),
        "dataset": {"name": data.name, "source": data.source, "fingerprint": data.fingerprint,
                    "filters": prepared.filters, "n_users": prepared.n_users, "n_items": prepared.n_items,
                    "notes": data.notes},
        "protocol": protocol, "config": cfg.as_dict(),
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "device": device,
                        "precision": "bf16" if device.startswith("cuda") and t.precision != "fp32" else "fp32",
                        "world_size": dist_info.world, **git_state(),
                        "host": platform.node(), "cpu_kernels": _cpu_kernels(device)},
        "pid": os.getpid(), "host_id": host_id(),  # while running: lets the dashboard tell a killed run
    }
    if dist_info.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.save_id_maps(prepared.user_map.raw, prepared.item_map.raw, licence_safe=restricted(data.name))
    try:
        return _train_and_finish(cfg, run, info, model, task, prepared, device, dist_info, resume, progress,
                                 t_start)
    except BaseException as exc:
        if dist_info.is_main and (run.path / RUN_FILE).exists():
            if isinstance(exc, KeyboardInterrupt):  # Ctrl-C or SIGTERM: stopped, not broken; resumable as is
                info.update(status="interrupted")
            else:
                info.update(status="failed", failure=f"{type(exc).__name__}: {exc}".strip())
            try:  # best effort: the disk may be what failed; the last checkpoint stays resumable either way
                run.write_info(info)
            except Exception:
                pass
        raise


def _train_and_finish(cfg, run, info, model, task, prepared, device, dist_info, resume, progress, t_start) -> dict:
    t = cfg.train
    if not model.trainable:
        info["fitted"] = model.fit(task, device)
        if dist_info.is_main:
            save_weights(run.path / WEIGHTS, model.state_dict(), weights_binding(cfg.model, info["config"]))
        best_epoch, history, train_seconds = 0, [], time.time() - t_start
    else:
        model.init_from_data(task)
        resume_state = None
        if resume and not run.has_resume():  # killed before its first checkpoint: nothing to continue from
            print(f"{run.path}: no finished epoch to resume from; training again from the start with the recorded "
                  f"configuration", flush=True)
            resume = False
            run.truncate_history(0)
        if resume:
            resume_state = run.load_resume()
            previous = run.info()
            old = RunConfig.from_dict(previous["config"]).as_dict()
            if old != cfg.as_dict():
                changed = sorted(k for k in cfg.as_dict() if old.get(k) != cfg.as_dict()[k])
                raise RunError(f"{run.path}: cannot resume with a different configuration (changed: {changed})")
            info["created_at"] = previous.get("created_at", info["created_at"])
            run.truncate_history(int(resume_state["epoch"]) + 1)
        if dist_info.is_main:
            info["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
            run.write_info(info)
        state = fit(model, task, t, run if dist_info.is_main else None, device, dist_info, resume_state,
                    progress, model_meta=weights_binding(cfg.model, info["config"]))
        if not dist_info.is_main:  # rank 0 evaluates and writes; the others wait for it, then leave
            import torch.distributed as dist

            dist.barrier()
            return info
        best_state, _ = load_weights(run.path / WEIGHTS)
        model.load_state_dict(best_state)
        best_epoch, history, train_seconds = state.best_epoch + 1, run.history(), state.train_seconds
    info.update(best_epoch=best_epoch, epochs_run=len(history), train_seconds=train_seconds,
                monitor=f"valid {task.monitor}")
    info.pop("pid", None)
    info.pop("host_id", None)
    finish_run(run, info, model, task, prepared, t, device)
    info["wall_seconds"] = time.time() - t_start
    run.write_info(info)
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
    return info


def finish_run(run: RunDirectory, info: dict, model, task, prepared, train: TrainConfig, device: str) -> dict:
    """Evaluate the final model on valid and test, save per-user test results, and complete run.json."""
    model.to(device).eval()
    valid, _ = task.evaluate(model, "valid", device, batch_size=int(train.eval_batch_size))
    test, per_user = task.evaluate(model, "test", device, batch_size=int(train.eval_batch_size))
    if restricted(info["dataset"]["name"]):  # keyed by the contiguous index only: no (user, movie) pair leaves
        per_user = per_user.drop(columns=[c for c in WITHHELD_COLUMNS if c in per_user])
        info["licence_safe"] = (f"{info['dataset']['name']} may not be redistributed: id_maps.npz holds digests, "
                                f"not raw ids, and the per-user results have no raw user id or held-out movie")
    else:
        per_user.insert(0, "user_id", prepared.user_map.to_raw(per_user["user"].to_numpy()))
    run.save_test_results(per_user)
    info.update(status="complete", metrics={"valid": dict(valid), "test": dict(test)})
    info["artefacts"] = run.artefact_hashes()
    run.write_info(info)
    return info


def summarise(info: dict) -> str:
    m = info["metrics"]["test"]
    keys = ["rmse", "mae"] if info["objective"] == "rating" else ["hr@10", "ndcg@10", "mrr@10"]
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in keys if k in m)
    return (f"{info['model']} on {info['dataset']['name']} ({info['protocol'].get('split')}): test {shown} "
            f"[n={m.get('n')}]; best epoch {info.get('best_epoch')}")


__all__ = ["ConfigError", "build_task", "finish_run", "load_prepared", "run_training", "summarise"]
