"""Training cost of every sequence model side by side (SS4Rec, SASRec, TiSASRec, BERT4Rec, Mamba4Rec, GRU4Rec,
NARM: the catalogue's learned models that read a history): seconds per step and per epoch, and peak memory.

    python scripts/bench_models.py [--models ss4rec sasrec ...] [--lengths 50 200] [--batch 128]
                                   [--device auto|cpu|cuda|both] [--repeats 3] [--threads 0] [--n-items 3416]
                                   [--windows N] [--ml1m-dir DIR] [--fp32] [--timeout 3600] [--quick]

Every model is built exactly as training builds it: `resolve_config(model, configs/<model>.yaml, {max_len: L})`
then `build_model(cfg, CatalogueSize(6,040 users, --n-items items))` (the recipe's hidden sizes, dropout, ...; ML-1M
after the 5-core filter has 3,416 items). Per model, length and device, in a FRESH subprocess (so no measurement
inherits another's peak or warm caches):

* the batch is bench_ss4rec's: `--batch` full windows of L uniform random items with MovieLens-like gaps in raw
  seconds (about 30 % exactly 0, seconds-to-minutes within a session, hours-to-years between sessions), a target at
  every position (the all-positions loss of training);
* one training step is the engine's: forward `loss = model(batch)` (under bf16 autocast on CUDA when the config's
  precision allows it, as training does; `--fp32` turns that off), backward, gradient clipping at the config's
  grad_clip, Adam step (the config's lr and weight decay); s/step is the median of `--repeats` timed steps after one
  warm-up step (CUDA synchronised around each);
* s/epoch = s/step x ceil(W / B), W = training windows of one epoch: `--windows N` (the same N at every length), else
  ML-1M 5-core leave-one-out, W = sum over users of ceil((n_u - 3) / L), computed from `--ml1m-dir` when present,
  else bench_ss4rec's known values (22,532 at L=50, 8,617 at L=200). Data loading and evaluation are not included;
* peak memory as bench_ss4rec measures it: CPU - peak RSS of the child over the steps (Linux VmHWM, reset to the
  current RSS once model and batch are built; it includes the ~0.3 GB of the Python/torch process, so the ratio of
  the memory above that pre-step baseline is printed too); CUDA - torch.cuda.max_memory_allocated over the steps
  (reset once model and batch are on the device, which are included).

SS4Rec runs our C kernels (`recsys.models.native`) on the CPU when they are available; the paths its layers took
are printed. --quick: batch 4, length 8, one repeat, 50 items (a smoke test, not a measurement).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_ss4rec import DEFAULT_ML1M, ML1M_USERS, epoch_windows, make_batch  # scripts/ is on sys.path

from recsys import catalogue
from recsys.benchmarking import current_rss_bytes, fmt_time, gb, log, peak_rss_bytes, reset_peak_rss, resolve_devices

ROOT = Path(__file__).resolve().parents[1]
# every learned sequence model with a recipe in configs/ (the catalogue's order; a new model is measured unasked)
NAMES = {k: c.name for k, c in catalogue.cards().items()
         if c.reads_history and not c.floor and (ROOT / "configs" / f"{k}.yaml").is_file()}


def measure(spec: dict) -> dict:
    """Child: build one model at one length on one device and time its training steps."""
    import gc

    import torch

    from recsys.config import load_config_file, resolve_config
    from recsys.models import CatalogueSize, build_model

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    cfg = resolve_config(spec["model"], load_config_file(ROOT / "configs" / f"{spec['model']}.yaml"),
                         {"max_len": spec["length"], "window_stride": None})  # windows: data only
    torch.manual_seed(spec["seed"])
    model = build_model(cfg, CatalogueSize(n_users=ML1M_USERS, n_items=spec["n_items"])).to(device).train()
    t = cfg.train
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    bf16 = cuda and not spec["fp32"] and t.precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    # make_batch's n_items counts the padding id: items are drawn from 1..n_items
    data = make_batch(spec["batch"], spec["length"], spec["seed"] + 1, spec["n_items"] + 1).to(device)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    else:
        gc.collect()
        reset_peak_rss()                      # import/setup transients are not part of a training step
        baseline = current_rss_bytes()
    times, losses = [], []
    for i in range(spec["repeats"] + 1):      # step 0 is the warm-up (and builds the C kernels if first)
        sync()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(t.grad_clip))
        opt.step()
        sync()
        if i:
            times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    peak = torch.cuda.max_memory_allocated(device) if cuda else peak_rss_bytes()
    paths = ""
    if spec["model"] == "ss4rec":
        mamba = sorted({b.mamba.last_path or "?" for b in model.blocks})
        s5 = sorted({b.s5._resolve_scan(None, device) for b in model.blocks})
        paths = f"Mamba path {','.join(mamba)}, S5 scan {','.join(s5)}"
    return {"step_s": statistics.median(times), "all_steps_s": times, "peak_bytes": int(peak),
            "baseline_bytes": int(baseline), "losses": losses, "params": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(), "precision": "bf16 autocast" if bf16 else "fp32", "paths": paths}


def run_child(spec: dict, timeout: float) -> dict:
    """Measure in a fresh interpreter; {'error': ...} on a timeout, a crash or running out of memory."""
    env = dict(os.environ)
    if spec["threads"]:
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    try:
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if out.returncode != 0:
        err = out.stderr
        oom = any(m in err for m in ("out of memory", "OutOfMemory", "DefaultCPUAllocator"))
        if oom or out.returncode in (-9, 137):
            return {"error": "out of memory"}
        tail = err.strip().splitlines()[-1] if err.strip() else ""
        return {"error": f"exit {out.returncode}: {tail[-300:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(NAMES), choices=sorted(NAMES))
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--batch", type=int, default=128, help="windows per step (the recipes' batch_size)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "both"),
                        help="auto: cuda when available, else cpu; both: cpu and cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads in the children (0: default)")
    parser.add_argument("--n-items", type=int, default=3416, help="catalogue size (ML-1M after 5-core: 3,416)")
    parser.add_argument("--windows", type=int, default=None, help="training windows of one epoch (default: ML-1M's)")
    parser.add_argument("--ml1m-dir", type=Path, default=DEFAULT_ML1M, help="ML-1M copy to count the windows from")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA (training uses it)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes for tests (overrides): batch 4, length 8, 1 repeat, 50 items")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0
    if args.quick:
        args.batch, args.lengths, args.repeats, args.n_items = 4, [8], 1, 50

    import torch

    from recsys.models import native

    devices = resolve_devices(parser, args)
    cmd = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    print(f"$ python scripts/bench_models.py {cmd}".rstrip())
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} threads"
          + (f"; GPU: {torch.cuda.get_device_name(0)}" if "cuda" in devices else ""))
    print(f"SS4Rec's CPU kernels (recsys.models.native): {native.status()}")
    print(f"models built from configs/<model>.yaml with max_len = L; batch {args.batch} full windows, "
          f"{args.n_items:,} items, {args.repeats} timed steps after one warm-up")

    rows = []
    for device in devices:
        for length in args.lengths:
            windows, how = (args.windows, "--windows") if args.windows else epoch_windows(length, args.ml1m_dir)
            steps = math.ceil(windows / args.batch)
            for model in args.models:
                log(f"measuring {model} on {device}, batch {args.batch}, length {length} ...")
                spec = {"model": model, "device": device, "length": length, "batch": args.batch,
                        "repeats": args.repeats, "threads": args.threads, "n_items": args.n_items,
                        "seed": args.seed, "fp32": args.fp32}
                t = time.perf_counter()
                res = run_child(spec, args.timeout)
                done = res.get("error") or f"{res['step_s']:.3g} s/step"
                log(f"  done in {time.perf_counter() - t:.0f} s: {done}")
                rows.append({"model": model, "device": device, "length": length, "windows": windows,
                             "windows_how": how, "steps": steps, **res})

    print()
    print("| model | length | device | parameters | s/step | s/epoch | peak memory |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        name = NAMES[r["model"]]
        if "error" in r:
            print(f"| {name} | {r['length']} | {r['device']} | - | {r['error']} | - | - |")
            continue
        kind = "max allocated" if r["device"] == "cuda" else "peak RSS"
        print(f"| {name} | {r['length']} | {r['device']} | {r['params']:,} | {fmt_time(r['step_s'])} | "
              f"{fmt_time(r['step_s'] * r['steps'])} ({r['steps']} steps) | {gb(r['peak_bytes']):.2f} GB {kind} |")
    print()
    ok = {(r["model"], r["device"], r["length"]): r for r in rows if "error" not in r}
    for device in devices:
        for length in args.lengths:
            ss = ok.get(("ss4rec", device, length))
            for other in (m for m in args.models if m != "ss4rec"):
                o = ok.get((other, device, length))
                if ss is None or o is None:
                    continue
                above = (ss["peak_bytes"] - ss["baseline_bytes"]) / max(o["peak_bytes"] - o["baseline_bytes"], 1)
                print(f"SS4Rec / {NAMES[other]} at L={length} ({device}): epoch time "
                      f"{ss['step_s'] / o['step_s']:.2f}x, peak memory {ss['peak_bytes'] / o['peak_bytes']:.2f}x "
                      f"({above:.2f}x above the pre-step baseline)")
    seen = set()
    for r in rows:
        if r["length"] not in seen:
            seen.add(r["length"])
            print(f"epoch at L={r['length']}: ceil(W / {args.batch}) = {r['steps']} steps, W = {r['windows']:,} "
                  f"windows ({r['windows_how']})")
    for r in rows:
        if "error" not in r:
            base = "CUDA memory before the first step" if r["device"] == "cuda" else "RSS before the first step"
            print(f"{NAMES[r['model']]} ({r['device']}, L={r['length']}): {r['precision']}, {r['threads']} threads, "
                  f"{base} {gb(r['baseline_bytes']):.2f} GB, steps {', '.join(f'{s:.3g}' for s in r['all_steps_s'])}"
                  f" s" + (f"; {r['paths']}" if r["paths"] else ""))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
