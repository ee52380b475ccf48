"""From a configuration to a finished run directory: data, protocol, model, training, evaluation, run.json.

Configuration precedence: command line over config file over these defaults. The resolved configuration, the
exact command line, the data fingerprint and the protocol are all recorded in run.json, so every number the
dashboard shows can be traced to the command that made it.
"""
from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import time
from pathlib import Path

import torch
import yaml

from recsys.data import load_dataset, prepare
from recsys.evaluation.protocols import RankingProtocol, RatingProtocol, leave_one_out, rating_split
from recsys.runs import RunDirectory, RunError, WEIGHTS, load_weights, save_weights
from recsys.training.engine import fit, init_distributed, resolve_device, seed_everything
from recsys.training.tasks import RankingTask, RatingTask, SequenceTask

MODELS = ("ncf", "ss4rec", "global-mean", "bias", "popular")
FLOORS = {"global-mean": "rating", "bias": "rating", "popular": "ranking"}
LITERATURE_SPLITS = ("random", "kfold", "ml100k-folds")

DEFAULTS: dict = {
    # data and protocol
    "dataset": "ml-100k", "data_dir": None, "objective": "ranking", "split": "chronological", "fold": 1, "k": 5,
    "test_frac": 0.1, "valid_frac": 0.1, "user_k": None, "item_k": None, "timestamped_users_only": False,
    "max_len": 50, "mask_seen": False, "ks": [5, 10, 20],
    # optimisation
    "epochs": 30, "batch_size": 1024, "lr": 1e-3, "weight_decay": 0.0, "patience": 5, "grad_clip": 5.0,
    "seed": 0, "device": "auto", "precision": "auto", "eval_batch_size": 1024,
    "cpu_threads": None,  # None: torch's default; 1 avoids OpenMP spin-wait collapse on a shared, busy CPU
    # NCF
    "gmf_dim": 32, "mlp_dims": [64, 32, 16], "dropout": 0.1, "loss": "bce", "num_negatives": 4,
    # floors: regularisation grid for user+item biases, chosen on validation RMSE
    "bias_reg_grid": [1.0, 3.0, 10.0, 25.0],
}


class ConfigError(ValueError):
    """A configuration value is unknown or out of range; the message says which and what is allowed."""


def parse_overrides(items) -> dict:
    """`--set KEY=VALUE` arguments -> {key: value}; values are YAML scalars/lists: 0.001, true, [64, 32], null."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set needs KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_config_file(path: str | Path) -> dict:
    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of option: value")
    return cfg


def resolve_config(model: str, file_cfg: dict, overrides: dict) -> dict:
    """Merge defaults < model defaults < file < command line, then validate and fill derived values."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    cfg = dict(DEFAULTS)
    try:
        from recsys.models import ss4rec as _ss4rec  # optional until SS4Rec lands

        if model == "ss4rec":
            cfg.update(_ss4rec.DEFAULTS)
    except ImportError:
        if model == "ss4rec":
            raise ConfigError("SS4Rec is not available in this build")
    if model in FLOORS:
        cfg["objective"] = FLOORS[model]
    for source in (file_cfg, overrides):
        for key, value in source.items():
            if key not in cfg and key != "model":
                raise ConfigError(f"unknown option {key!r}; known: {', '.join(sorted(cfg))}")
            if value is not None or key in ("data_dir",):
                cfg[key] = value
    cfg["model"] = model
    for key, default in DEFAULTS.items():  # YAML reads "1e-5" as a string; coerce numbers by the default's type
        value = cfg[key]
        if value is None or isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        try:
            cfg[key] = int(value) if isinstance(default, int) and float(value) == int(float(value)) else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, not {value!r}") from None
    if cfg["objective"] not in ("rating", "ranking"):
        raise ConfigError(f"objective must be rating or ranking, not {cfg['objective']!r}")
    if model in FLOORS and cfg["objective"] != FLOORS[model]:
        raise ConfigError(f"the {model} floor is a {FLOORS[model]} model")
    if model == "ss4rec" and cfg["objective"] != "ranking":
        raise ConfigError("SS4Rec trains on next-item ranking; its rating head is evaluated on the chronological "
                          "rating protocol in the same run (rating_head: true)")
    if cfg["objective"] == "ranking" and cfg["split"] != "chronological":
        raise ConfigError("the ranking protocol is leave-one-out by time; --split applies to the rating objective")
    literature = cfg["split"] in LITERATURE_SPLITS
    for key in ("user_k", "item_k"):
        if cfg[key] is None:  # literature RMSE splits use every rating; leave-one-out uses RecBole's 5-core
            cfg[key] = 1 if literature else 5
    for key in ("epochs", "batch_size", "patience", "max_len"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"{key} must be at least 1, not {cfg[key]}")
    if not float(cfg["lr"]) > 0:
        raise ConfigError(f"lr must be positive, not {cfg['lr']}")
    return cfg


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except Exception:
        return None


def build_task(cfg: dict, prepared):
    if cfg["objective"] == "ranking":
        proto = RankingProtocol(user_k=cfg["user_k"], item_k=cfg["item_k"], max_len=int(cfg["max_len"]),
                                mask_seen=bool(cfg["mask_seen"]), timestamped_users_only=cfg["timestamped_users_only"],
                                ks=tuple(cfg["ks"]))
        if cfg["model"] == "ss4rec":
            task = SequenceTask(prepared, leave_one_out(prepared), proto.max_len, proto.mask_seen, proto.ks,
                                rating_weight=float(cfg["rating_weight"]) if cfg["rating_head"] else 0.0)
            desc = proto.describe()
            if cfg["rating_head"]:
                desc["rating"] = ("rmse/mae on the same held-out interactions: each user's second-to-last (valid) "
                                  "and last (test) rating by time, predicted from strictly earlier history")
            return task, desc
        task = RankingTask(prepared, leave_one_out(prepared), proto.max_len, proto.mask_seen, proto.ks,
                           loss=cfg["loss"], num_negatives=int(cfg["num_negatives"]))
        return task, proto.describe()
    proto = RatingProtocol(split=cfg["split"], user_k=cfg["user_k"], item_k=cfg["item_k"],
                           test_frac=float(cfg["test_frac"]), valid_frac=float(cfg["valid_frac"]), k=int(cfg["k"]),
                           fold=int(cfg["fold"]), seed=int(cfg["seed"]),
                           timestamped_users_only=cfg["timestamped_users_only"])
    split = rating_split(prepared, proto, cfg["data_dir"])
    desc = proto.describe()
    desc["notes"] = split.notes
    desc["sizes"] = {"train": int(len(split.train)), "valid": int(len(split.valid)), "test": int(len(split.test))}
    return RatingTask(prepared, split), desc


def build_model(cfg: dict, prepared, task):
    n_users, n_items = prepared.n_users + 1, prepared.n_items + 1
    if cfg["model"] == "ncf":
        from recsys.models.ncf import NeuMF

        rating = cfg["objective"] == "rating"
        return NeuMF(n_users, n_items, int(cfg["gmf_dim"]), tuple(cfg["mlp_dims"]), float(cfg["dropout"]),
                     rating_head=rating, global_mean=task.train_mean if rating else 0.0)
    if cfg["model"] == "ss4rec":
        from recsys.models.ss4rec import build_from_config

        return build_from_config(cfg, n_items, task)
    raise ConfigError(f"{cfg['model']} is a floor, fitted in closed form")


def fit_floor(cfg: dict, prepared, task, device: str):
    """Closed-form floors; the bias regularisation is chosen on validation RMSE, never on test."""
    from recsys.models.baselines import BiasBaseline, GlobalMean, MostPopular

    n_users, n_items = prepared.n_users + 1, prepared.n_items + 1
    if cfg["model"] == "popular":
        return MostPopular.fit(task.train_items.numpy(), n_items), {}
    a = task.arrays["train"]
    if cfg["model"] == "global-mean":
        return GlobalMean.fit(a["ratings"].numpy()), {}
    best = None
    for reg in cfg["bias_reg_grid"]:
        m = BiasBaseline.fit(a["users"].numpy(), a["items"].numpy(), a["ratings"].numpy(), n_users, n_items,
                             reg_user=reg, reg_item=reg)
        rmse = task.evaluate(m, "valid", device)[0]["rmse"]
        if best is None or rmse < best[0]:
            best = (rmse, reg, m)
    return best[2], {"chosen_reg": best[1]}


def _cpu_kernels(device: str) -> str:
    """Which CPU code ran the SS4Rec layers: our C kernels or the pure-PyTorch fallback (and why)."""
    if not device.startswith("cpu"):
        return "n/a (not a CPU run)"
    from recsys.models import native

    return "native" if native.available() else f"pure PyTorch ({native.status()})"


def run_training(cfg: dict, out: str | Path, command: list[str], resume: bool = False,
                 progress: bool = True) -> dict:
    """Train (or fit) one model and write its complete run directory; returns run.json's content."""
    t_start = time.time()
    dist_info = init_distributed(cfg["device"] if cfg["device"] != "auto" else
                                 ("cuda" if torch.cuda.is_available() else "cpu"))
    device = resolve_device(cfg["device"], dist_info)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg["cpu_threads"]))
    seed_everything(int(cfg["seed"]))
    run = RunDirectory(out)
    data = load_dataset(cfg["dataset"], cfg["data_dir"])
    prepared = prepare(data, cfg["user_k"], cfg["item_k"], timestamped_only=bool(cfg["timestamped_users_only"]),
                       require_timestamps=cfg["objective"] == "ranking" or cfg["split"] == "chronological")
    task, protocol = build_task(cfg, prepared)
    info = {
        "run_id": Path(out).name, "model": cfg["model"], "objective": cfg["objective"], "status": "running",
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(command),
        "dataset": {"name": data.name, "source": data.source, "fingerprint": data.fingerprint,
                    "filters": prepared.filters, "n_users": prepared.n_users, "n_items": prepared.n_items,
                    "notes": data.notes},
        "protocol": protocol, "config": cfg,
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "device": device,
                        "precision": "bf16" if device.startswith("cuda") and cfg["precision"] != "fp32" else "fp32",
                        "world_size": dist_info.world, "git_commit": _git_commit(),
                        "host": platform.node(), "cpu_kernels": _cpu_kernels(device)},
    }
    if dist_info.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.save_id_maps(prepared.user_map.raw, prepared.item_map.raw)
    monitor = task.monitor
    if cfg["model"] in FLOORS:
        model, extra = fit_floor(cfg, prepared, task, device)
        info["config"] = {**cfg, **extra}
        if dist_info.is_main:
            save_weights(run.path / WEIGHTS, model.state_dict(), {"model": cfg["model"]})
        best_epoch, history, train_seconds = 0, [], time.time() - t_start
    else:
        model = build_model(cfg, prepared, task)
        resume_state = None
        if resume:
            resume_state = run.load_resume()
            previous = run.info()
            if previous["config"] != cfg:
                changed = sorted(k for k in cfg if previous["config"].get(k) != cfg[k])
                raise RunError(f"{run.path}: cannot resume with a different configuration (changed: {changed})")
            info["created_at"] = previous.get("created_at", info["created_at"])
            run.truncate_history(int(resume_state["epoch"]) + 1)
        if dist_info.is_main:
            info["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
            run.write_info(info)
        state = fit(model, task, cfg, run if dist_info.is_main else None, device, dist_info, resume_state,
                    progress, model_meta={"model": cfg["model"]})
        if not dist_info.is_main:  # rank 0 evaluates and writes; the others wait for it, then leave
            import torch.distributed as dist

            dist.barrier()
            return info
        best_state, _ = load_weights(run.path / WEIGHTS)
        model.load_state_dict(best_state)
        best_epoch, history, train_seconds = state.best_epoch + 1, run.history(), state.train_seconds
    info.update(best_epoch=best_epoch, epochs_run=len(history), train_seconds=train_seconds,
                monitor=f"valid {monitor}")
    finish_run(run, info, model, task, prepared, cfg, device)
    info["wall_seconds"] = time.time() - t_start
    run.write_info(info)
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
    return info


def finish_run(run: RunDirectory, info: dict, model, task, prepared, cfg: dict, device: str) -> dict:
    """Evaluate the final model on valid and test, save per-user test results, and complete run.json."""
    model.to(device).eval()
    valid, _ = task.evaluate(model, "valid", device, batch_size=int(cfg["eval_batch_size"]))
    test, per_user = task.evaluate(model, "test", device, batch_size=int(cfg["eval_batch_size"]))
    per_user.insert(0, "user_id", prepared.user_map.to_raw(per_user["user"].to_numpy()))
    run.save_test_results(per_user)
    info.update(status="complete", metrics={"valid": dict(valid), "test": dict(test)})
    info["artefacts"] = run.artefact_hashes()
    run.write_info(info)
    return info


def _rebuild_run(source, overrides: dict, expected_model: str | None = None):
    """A finished run's weights in a fresh model, with its exact prepared data and task (settings overridden)."""
    from recsys.inference import build_model_for_run

    src = RunDirectory(source)
    state, info = src.load_weights(expected_model)
    cfg = {**info["config"], **overrides}
    data = load_dataset(cfg["dataset"], cfg["data_dir"])
    if data.fingerprint != info["dataset"]["fingerprint"]:
        raise RunError(f"{source}: the dataset here differs from the one the run was trained on (fingerprint)")
    prepared = prepare(data, cfg["user_k"], cfg["item_k"], timestamped_only=bool(cfg["timestamped_users_only"]))
    task, protocol = build_task(cfg, prepared)
    model = build_model_for_run(info, prepared.n_users + 1, prepared.n_items + 1)
    model.load_state_dict(state)
    return src, info, cfg, prepared, task, protocol, model


EVAL_ONLY_KEYS = ("mask_seen", "ks", "eval_batch_size", "device", "cpu_threads")


def evaluate_run(source: str | Path, out: str | Path, overrides: dict, command: list[str]) -> dict:
    """Re-evaluate a finished run's weights under changed evaluation settings (e.g. seen items masked) and write
    a new run directory that says where its weights came from. Training settings cannot change here."""
    import shutil

    from recsys.runs import HISTORY, ID_MAPS

    bad = sorted(set(overrides) - set(EVAL_ONLY_KEYS))
    if bad:
        raise ConfigError(f"only evaluation settings can change when re-evaluating ({', '.join(EVAL_ONLY_KEYS)}); "
                          f"not {bad}")
    src, info, cfg, prepared, task, protocol, model = _rebuild_run(source, overrides)
    device = resolve_device(cfg["device"])
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg["cpu_threads"]))
    run = RunDirectory(out)
    run.path.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS, ID_MAPS, HISTORY):
        if (src.path / name).exists():
            shutil.copyfile(src.path / name, run.path / name)
    new = {k: v for k, v in info.items() if k not in ("metrics", "artefacts", "format")}
    new.update(run_id=Path(out).name, command=" ".join(command), protocol=protocol, config=cfg,
               evaluated_from={"run_id": info["run_id"], "command": info["command"], "changed": overrides})
    return finish_run(run, new, model, task, prepared, cfg, device)


def summarise(info: dict) -> str:
    m = info["metrics"]["test"]
    keys = ["rmse", "mae"] if info["objective"] == "rating" else ["hr@10", "ndcg@10", "mrr@10"]
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in keys if k in m)
    return (f"{info['model']} on {info['dataset']['name']} ({info['protocol'].get('split')}): test {shown} "
            f"[n={m.get('n')}]; best epoch {info.get('best_epoch')}")


__all__ = ["DEFAULTS", "MODELS", "resolve_config", "load_config_file", "parse_overrides", "run_training", "summarise",
           "ConfigError"]


def refit_rating_head(source: str | Path, out: str | Path, command: list[str], epochs: int = 100,
                      lr: float = 1e-3, patience: int = 5, batch_size: int = 4096, seed: int = 0) -> dict:
    """Train SS4Rec's rating head AFTER the ranking model, with the encoder frozen, selected on validation RMSE.

    The joint run stops at the best ranking epoch, which is not the best rating epoch. Here the encoder's states
    before every training interaction are computed once (eval mode), then only the small rating MLP is fitted to
    them; ranking outputs are untouched. Writes a new run directory that records its source run.
    """
    import shutil

    from recsys.runs import HISTORY, ID_MAPS

    torch.manual_seed(seed)
    src, info, cfg, prepared, task, protocol, model = _rebuild_run(source, {}, expected_model="ss4rec")
    if not cfg.get("rating_head"):
        raise ConfigError(f"{source} was trained without a rating head (rating_head: false)")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.rating_mlp
    for p in head.parameters():
        p.requires_grad_(True)

    @torch.no_grad()
    def train_features():
        w = task.windows
        hs, items, ratings = [], [], []
        for s in range(0, len(w["lengths"]), 256):
            sl = slice(s, s + 256)
            h = model.encode(w["items"][sl], w["timestamps"][sl], w["lengths"][sl], w["target_times"][sl])
            valid = w["targets"][sl] > 0
            hs.append(h[valid])
            items.append(w["targets"][sl][valid])
            ratings.append(w["target_ratings"][sl][valid])
        return torch.cat(hs), torch.cat(items), torch.cat(ratings)

    @torch.no_grad()
    def case_features(stage):
        c = task.cases(stage)
        b = {k: torch.as_tensor(c[k]) for k in ("items", "timestamps", "lengths", "target_times")}
        h = model.gather_last(model.encode(**b), b["lengths"])
        return h, torch.as_tensor(c["targets"]), torch.as_tensor(c["target_ratings"])

    h_tr, i_tr, r_tr = train_features()
    h_va, i_va, r_va = case_features("valid")
    lo, hi = task.rating_scale
    opt = torch.optim.Adam(head.parameters(), lr=lr)

    def valid_rmse():
        with torch.no_grad():
            pred = model.rating_from_state(h_va, i_va).clamp(lo, hi)
            return float(((pred - r_va) ** 2).mean().sqrt())

    best, best_state, bad, history = valid_rmse(), copy_state(head), 0, []
    start_rmse = best
    for epoch in range(epochs):
        perm = torch.randperm(len(r_tr))
        total = 0.0
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            loss = torch.nn.functional.mse_loss(model.rating_from_state(h_tr[idx], i_tr[idx]), r_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        v = valid_rmse()
        history.append({"epoch": epoch + 1, "train_mse": total / len(perm), "valid_rmse": v})
        if v < best:
            best, best_state, bad = v, copy_state(head), 0
        else:
            bad += 1
            if bad >= patience:
                break
    head.load_state_dict(best_state)
    run = RunDirectory(out)
    run.path.mkdir(parents=True, exist_ok=True)
    for name in (ID_MAPS, HISTORY):
        shutil.copyfile(src.path / name, run.path / name)
    save_weights(run.path / WEIGHTS, model.state_dict(), {"model": "ss4rec"})
    new = {k: v for k, v in info.items() if k not in ("metrics", "artefacts", "format")}
    new.update(run_id=Path(out).name, command=" ".join(command), protocol=protocol,
               rating_head_refit={"source_run": info["run_id"], "source_command": info["command"],
                                  "valid_rmse_before": start_rmse, "valid_rmse_after": best,
                                  "epochs": len(history), "history": history, "lr": lr, "patience": patience})
    return finish_run(run, new, model, task, prepared, cfg, "cpu")


def copy_state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
