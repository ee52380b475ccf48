"""Training throughput of NCF and SS4Rec on the synthetic ML-25M-shaped data set, on the CPU and/or a GPU.

    python scripts/bench_throughput.py [--scale 1.0] [--device auto|cpu|cuda|both] [--models ncf ss4rec]
                                       [--ncf-batch 65536] [--ss4rec-batch 128] [--steps N] [--warmup N]

What it does, in one process:
1. data (timed separately, not part of any epoch): `generate_ml25m_like(scale)`, 5-core filter + indexing,
   leave-one-out by time, and the real training tasks with the configurations in configs/: `RankingTask` (BCE with
   4 sampled negatives, configs/ncf-ranking.yaml) for NCF and `SequenceTask` (windows of max_len 200, all-positions
   next-item training with the rating head, configs/ss4rec.yaml: hidden 64, 2 blocks, ...) for SS4Rec;
2. per model and device: the batch list of epoch 0 is built exactly as the training engine builds it (timed: it is
   part of an epoch), `--warmup` steps are run, then `--steps` timed steps, each = host-to-device copy (pinned
   memory, non_blocking, on CUDA), forward + loss under bf16 autocast (CUDA; fp32 on CPU), backward, gradient
   clipping at the config's 5.0, Adam step, and `loss.item()` (as the engine does); CUDA is synchronised before and
   after the timed steps;
3. samples/s: NCF - positive training interactions per second (each with its 4 negatives); SS4Rec - next-item
   targets per second (non-padding positions of the windows). est. s/epoch = time to build the epoch's batch list
   + (training samples of one epoch) / (samples/s); on the CPU this is an extrapolation from a few steps;
4. peak memory: CUDA - torch.cuda.max_memory_allocated during the model's steps (reset before its warm-up);
   CPU - peak RSS of the process during the model's steps (Linux VmHWM, reset before the warm-up), which includes the
   resident data set; the peak RSS of the data preparation is printed separately.

Target (issue): an SS4Rec epoch over ML-25M-size data within 10 minutes on one H100 with peak memory under 40 GB.
It is judged only for SS4Rec on CUDA at --scale 1; other rows say n/a. Below --scale 1 the epoch time is also
printed scaled linearly to full size (samples grow linearly with the scale), as a rough indication only.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path

from recsys.benchmarking import current_rss_bytes, gb, log, peak_rss_bytes, reset_peak_rss, resolve_devices

ROOT = Path(__file__).resolve().parents[1]

TARGET_SECONDS, TARGET_GB = 600.0, 40.0


def prepare_data(scale: float, seed: int, models=("ncf", "ss4rec")) -> dict:
    from recsys.config import load_config_file, resolve_config
    from recsys.data.prepare import prepare
    from recsys.data.synthetic import generate_ml25m_like
    from recsys.evaluation.protocols import leave_one_out
    from recsys.models import model_class
    from recsys.training.tasks import RankingTask, SequenceTask

    out = {"times": {}}
    t = time.perf_counter()
    data = generate_ml25m_like(scale, seed)
    out["times"]["generate"] = time.perf_counter() - t
    out["ratings"] = len(data.interactions)
    t = time.perf_counter()
    prepared = prepare(data, 5, 5, require_timestamps=True)
    del data
    gc.collect()
    loo = leave_one_out(prepared)
    out["times"]["5-core + index + leave-one-out"] = time.perf_counter() - t
    cfgs = {m: resolve_config(m, load_config_file(ROOT / "configs" / f), {})
            for m, f in (("ncf", "ncf-ranking.yaml"), ("ss4rec", "ss4rec.yaml"))}
    tasks = {}
    if "ncf" in models:
        t = time.perf_counter()
        c = cfgs["ncf"]
        tasks["ncf"] = RankingTask(prepared, loo, c.train.max_len, c.train.mask_seen, tuple(c.train.ks),
                                   num_negatives=model_class("ncf").sampled_negatives(c.params))
        out["times"]["NCF task (RankingTask)"] = time.perf_counter() - t
    if "ss4rec" in models:
        t = time.perf_counter()
        c = cfgs["ss4rec"]
        tasks["ss4rec"] = SequenceTask(prepared, loo, c.train.max_len, c.train.mask_seen, tuple(c.train.ks))
        out["times"]["SS4Rec task (SequenceTask windows)"] = time.perf_counter() - t
    out.update(prepared=prepared, cfgs=cfgs, tasks=tasks)
    return out


def n_samples(name: str, batch) -> int:
    if name == "ss4rec":
        return int((batch.targets > 0).sum())
    return len(batch)


def epoch_samples(name: str, task) -> int:
    if name == "ss4rec":
        return int(task.windows.lengths.sum())
    return task.n_train()


def bench_model(name: str, device: str, batch_size: int, d: dict, args) -> dict:
    import torch

    from recsys.models import build_model

    cfg, task = d["cfgs"][name], d["tasks"][name]
    cuda = device == "cuda"
    steps = args.steps if args.steps is not None else (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    torch.manual_seed(args.seed)
    model = build_model(cfg, d["prepared"])
    model.init_from_data(task)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg.train.lr), weight_decay=float(cfg.train.weight_decay))
    use_bf16 = cuda and torch.cuda.is_bf16_supported() and not args.fp32
    t = time.perf_counter()
    batches = list(task.batches(0, args.seed, batch_size))          # what the engine does at each epoch start
    batching_s = time.perf_counter() - t
    n_batches = len(batches)
    need = warmup + steps
    if need > n_batches:                                            # tiny data: cycle through the epoch
        batches = [batches[i % n_batches] for i in range(need)]
    batches = batches[:need]
    if cuda:
        batches = [b.pin_memory() for b in batches]   # as a pinning loader would
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        gc.collect()
        reset_peak_rss()
    base = torch.cuda.memory_allocated() if cuda else current_rss_bytes()
    clip = float(cfg.train.grad_clip or 0)

    def step(b, model=model, opt=opt):
        b = b.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = task.loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        value = loss.item()
        if value != value:
            raise FloatingPointError(f"{name}: the training loss became NaN")
        return value

    for b in batches[:warmup]:
        step(b)
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    samples = 0
    for b in batches[warmup:]:
        step(b)
        samples += n_samples(name, b)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
    throughput = samples / seconds
    total = epoch_samples(name, task)
    res = {"model": name, "device": device, "batch": batch_size, "steps": steps, "warmup": warmup,
           "samples_per_s": throughput, "step_s": seconds / steps, "epoch_samples": total, "n_batches": n_batches,
           "batching_s": batching_s, "epoch_s": batching_s + total / throughput, "peak_bytes": peak,
           "baseline_bytes": base, "precision": "bf16 autocast" if use_bf16 else "fp32",
           "n_params": sum(p.numel() for p in model.parameters())}
    if name == "ss4rec":
        res["mamba_path"] = ",".join(sorted({blk.mamba.last_path or "?" for blk in model.blocks}))
    del model, opt, batches
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return res


def fmt_s(s: float) -> str:
    return f"{s:,.0f}" if s >= 100 else f"{s:.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of ML-25M (1.0: 25M ratings)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "both"),
                        help="auto: cuda when available, else cpu; both: cpu then cuda")
    parser.add_argument("--models", nargs="+", default=["ncf", "ss4rec"], choices=("ncf", "ss4rec"))
    parser.add_argument("--ncf-batch", type=int, nargs="+", default=[65536],
                        help="NCF batch sizes, positive interactions (the config trains with 1024)")
    parser.add_argument("--ss4rec-batch", type=int, nargs="+", default=[128],
                        help="SS4Rec batch sizes, windows of up to 200 items (the config's 128)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 on CUDA, 1 on CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    devices = resolve_devices(parser, args)

    cmd = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    log(f"preparing synthetic ML-25M-shaped data at scale {args.scale:g} ...")
    t = time.perf_counter()
    reset_peak_rss()
    d = prepare_data(args.scale, args.seed, args.models)
    prep_s, prep_peak = time.perf_counter() - t, peak_rss_bytes()
    prepared = d["prepared"]

    rows = []
    for device in devices:
        for name in args.models:
            for bs in (args.ncf_batch if name == "ncf" else args.ss4rec_batch):
                log(f"measuring {name} on {device}, batch {bs} ...")
                t = time.perf_counter()
                rows.append(bench_model(name, device, bs, d, args))
                log(f"  done in {time.perf_counter() - t:.0f} s: {rows[-1]['samples_per_s']:,.0f} samples/s")

    print(f"$ python scripts/bench_throughput.py {cmd}".rstrip())
    line = (f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
    if "cuda" in devices:
        p = torch.cuda.get_device_properties(0)
        line += f"; GPU: {p.name}, {p.total_memory / 1024**3:.0f} GiB"
    print(line)
    print(f"data: synthetic ML-25M shape, scale {args.scale:g}: {d['ratings']:,} ratings -> 5-core "
          f"{len(prepared.interactions):,} ratings, {prepared.n_users:,} users, {prepared.n_items:,} items"
          + (f"; SS4Rec: {d['tasks']['ss4rec'].n_train():,} windows of <= {d['cfgs']['ss4rec'].train.max_len}"
             if "ss4rec" in d["tasks"] else ""))
    print(f"data preparation {prep_s:.1f} s (not in any epoch), peak RSS {gb(prep_peak):.2f} GB: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in d["times"].items()))
    print()
    print("| model | device | batch | samples/s | est. s/epoch | peak mem | target met? |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        unit = "interactions" if r["model"] == "ncf" else "targets"
        mem = f"{gb(r['peak_bytes']):.2f} GB " + ("max allocated" if r["device"] == "cuda" else "peak RSS")
        if r["model"] != "ss4rec":
            verdict = "- (target is for SS4Rec)"
        elif r["device"] != "cuda":
            verdict = "n/a (target is for one H100)"
        elif args.scale != 1.0:
            verdict = f"n/a (scale {args.scale:g}, target is for full size)"
        else:
            ok = r["epoch_s"] <= TARGET_SECONDS and gb(r["peak_bytes"]) < TARGET_GB
            verdict = ("yes" if ok else "NO") + f" (<= {TARGET_SECONDS:.0f} s, < {TARGET_GB:.0f} GB)"
        extrap = " (extrapolated)" if r["device"] == "cpu" else ""
        print(f"| {r['model']} | {r['device']} | {r['batch']:,} | {r['samples_per_s']:,.0f} {unit}/s | "
              f"{fmt_s(r['epoch_s'])}{extrap} | {mem} | {verdict} |")
    print()
    for r in rows:
        unit = "interactions" if r["model"] == "ncf" else "next-item targets"
        note = (f"{r['model']} ({r['device']}, batch {r['batch']:,}, {r['precision']}, {r['n_params']:,} parameters"
                + (f", Mamba path {r['mamba_path']}" if "mamba_path" in r else "") + "): "
                f"{r['steps']} timed steps after {r['warmup']} warm-up, {r['step_s']:.3g} s/step; epoch = "
                f"{r['epoch_samples']:,} {unit} in {r['n_batches']:,} batches: batch list {r['batching_s']:.1f} s + "
                f"{r['epoch_samples']:,} / {r['samples_per_s']:,.0f} per s")
        if args.scale != 1.0:
            note += (f"; linearly scaled to full size: ~{fmt_s(r['epoch_s'] / args.scale)} s/epoch (rough: ignores the "
                         f"larger catalogue's softmax cost)")
        base = "CUDA memory before the warm-up" if r["device"] == "cuda" else "RSS before the warm-up"
        note += f"; {base} {gb(r['baseline_bytes']):.2f} GB"
        print(note)
    if any(r["device"] == "cpu" for r in rows):
        print("CPU epoch times are extrapolated from the timed steps (samples of one epoch / samples per second).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
