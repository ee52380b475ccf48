"""SS4Rec training cost: our layers against the same architecture built the way the released code builds it.

    python scripts/bench_ss4rec.py [--device auto|cpu|cuda|both] [--batch 1024] [--lengths 50 200]
                                   [--repeats 3] [--threads 0] [--max-gb 16] [--timeout 3600]
    python scripts/bench_ss4rec.py --profile [--batch 1024] [--lengths 50 200] [--threads 2]

Two variants of one architecture (../shared/docs/ss4rec.md: item embedding, 2 blocks of
a = LN(h + Dropout(S5(h, dt))), h = LN(a + Dropout(Mamba(a))), tied full-softmax output, hidden 64):

* ours: `recsys.models.ss4rec.SS4Rec` as training runs it: `TimeAwareS5` (B u projected to [B, L, P] before the
  ZOH scaling, never [B, L, P, H]) and `Mamba`; on the CPU in float32 both run the C kernels of
  `recsys.models.native` (built on first use with the machine's compiler: S5's discretisation + recurrence, and the
  whole Mamba block fused, saving only their inputs and recomputing the rest in the backward); on CUDA the parallel
  S5 scan and mamba_ssm's kernels when installed;
* ours, pure PyTorch: the same model with the C kernels switched off (RECSYS_NATIVE=0): the sequential S5 scan and
  the custom-backward `selective_scan`, i.e. what runs on a machine without a C compiler;
* s5-pytorch layout: every block's S5 is s5-pytorch's `s5.S5(64, 32, dt_min=1e-3, dt_max=0.1)` called as
  `s5(x, step_scale=dt)` (it builds the complex [B, L, P, H] tensor Bbar), and the Mamba scan is the straightforward
  per-step autograd loop (`selective_scan_reference`).

Equal metrics: the reference model is loaded with our model's exact weights (our S5 stores s5-pytorch's parameter
names and layout; the Mamba parameter names are identical), so both must compute the same function. Before timing,
the script prints, for every length (batch `--check-batch`, on the CPU), the max |loss difference| on one batch, the
max relative difference of the final hidden states and of the gradients, and the max |loss difference| after one
Adam step on each (identical dropout masks through identical seeds); all must be within float32 rounding (PASS).
Same weights and same updates give the same validation metrics.

Measurement, per variant and length, each in a FRESH subprocess (so variants cannot inflate each other's peak):
* one training step = forward + backward + Adam step on a realistic batch: B windows of L items from an
  ML-100K-sized catalogue (1,350 ids with padding), uniform random items, MovieLens-like gaps in raw seconds
  (about 30 % exactly 0, seconds-to-minutes within a session, hours-to-years between sessions), every window full;
* s/step: median of `--repeats` timed steps after one warm-up step;
* s/epoch = s/step x ceil(W / B), W = training windows of one epoch of the stated dataset (default ML-1M, 5-core,
  leave-one-out: W = sum over users of ceil((n_u - 3) / L); computed from ../shared/movielens/ml-1m when present,
  otherwise the known values 22,532 at L=50 and 8,617 at L=200). Data loading and evaluation are not included;
* peak memory: CPU - peak RSS of the child over the steps (Linux VmHWM, reset to the current RSS after the model
  and batch are built, so import transients and the parent's high-water mark, which ru_maxrss inherits across
  exec, do not count); it includes the ~0.3 GB of the Python/torch process itself (printed as the baseline, and
  the ratio of the memory above it is printed too); CUDA - torch.cuda.max_memory_allocated over the steps (reset
  after the model and batch are on the device; they are included in the number).
* memory budget: each variant is first probed at `--probe-batch` rows; if the predicted peak at the full batch
  exceeds `--max-gb` (default 16 on CPU, 90 % of the GPU's memory on CUDA), it is measured at the largest power-of-two
  batch that fits and time and (memory - baseline) are scaled linearly to the full batch; such rows are labelled
  "extrapolated from batch b". A child killed for memory is retried at half the batch the same way.

--profile: instead of the comparison, one training step of ours per length under torch.profiler: the seconds spent
in the fused Mamba kernels, the full-softmax loss, dropout masks and the S5 kernels, and the activation memory saved
for the backward (storages counted once).

Target (issue): at least 5x faster per epoch and 10x less peak memory than the s5-pytorch layout, at equal
validation metrics. fp32 on every device (the equality check needs it; s5-pytorch's complex ops have no bf16 path).
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

from recsys.benchmarking import (
    current_rss_bytes,
    fmt_time,
    gb,
    log,
    peak_rss_bytes,
    reset_peak_rss,
    resolve_devices,
)

ROOT = Path(__file__).resolve().parents[1]

N_ITEMS = 1350            # ML-100K after the 5-core filter: 1,349 items + padding
HIDDEN, N_LAYERS = 64, 2
# ML-1M, 5-core (6,040 users, 3,416 items, 999,611 ratings): training windows sum_u ceil((n_u - 3) / L), computed
# from the GroupLens ratings; used only when ../shared/movielens/ml-1m is absent.
ML1M_KNOWN_WINDOWS = {50: 22_532, 200: 8_617}
ML1M_USERS, ML1M_TARGETS = 6_040, 981_491
DEFAULT_ML1M = ROOT.parent / "shared" / "movielens" / "ml-1m"
OURS, PURE, REFERENCE = "ours", "ours, pure PyTorch", "s5-pytorch layout"
VARIANTS = (OURS, PURE, REFERENCE)


# ------------------------------------------------------------------------------------------------------------------
# models and data (imported lazily: the parent only needs torch for the equality check)
# ------------------------------------------------------------------------------------------------------------------
def reference_classes():
    import torch
    from torch import nn

    from recsys.models.mamba import Mamba, selective_scan_reference
    from recsys.models.ss4rec import SS4RecBlock

    class ReferenceMamba(Mamba):
        """Mamba with the straightforward selective scan: a per-step autograd loop over time."""

        def forward(self, hidden_states, return_state: bool = False):
            if return_state:
                raise NotImplementedError("benchmark layer: training forward only")
            x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
            xc = self._causal_conv(x)
            dt, B, C = self._ssm_inputs(xc)
            A = -torch.exp(self.A_log.float())
            y = selective_scan_reference(xc, dt, A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                                         delta_softplus=True)
            self.last_path = "reference"
            return self.out_proj(y.to(hidden_states.dtype))

    class ReferenceBlock(SS4RecBlock):
        """SS4Rec block as released: s5-pytorch's S5 called with step_scale=dt, then Mamba."""

        def __init__(self, block: SS4RecBlock):
            nn.Module.__init__(self)
            import s5

            width, state = block.s5.width, block.s5.state_width
            self.s5 = s5.S5(width, state, dt_min=1e-3, dt_max=0.1)
            m = block.mamba
            self.mamba = ReferenceMamba(d_model=m.d_model, d_state=m.d_state, d_conv=m.d_conv, expand=m.expand)
            self.norm = nn.LayerNorm(width, eps=block.norm.eps)
            self.dropout = nn.Dropout(block.dropout.p)
            self.load_state_dict(block.state_dict())     # identical names: seq.{Lambda,B,C,D,log_step}, mamba.*

        def forward(self, h, dt, return_states: bool = False, readout_dt=None):
            if return_states or readout_dt is not None:
                raise NotImplementedError("benchmark layer: the released training forward only")
            # s5-pytorch returns a non-contiguous [B, L, H]; dropout draws its mask in memory order, so without
            # this (negligible) copy the two variants would get differently placed masks from the same seed
            s = self.s5(h, step_scale=dt).contiguous()
            a = self.norm(h + self.dropout(s.to(h.dtype)))
            return self.norm(a + self.dropout(self.mamba(a)))

    return ReferenceMamba, ReferenceBlock


def make_variant(variant: str, seed: int, n_items: int = N_ITEMS, rating_head: bool = False):
    """Our SS4Rec, or (variant 's5-pytorch layout') the same model with s5-pytorch S5 and the reference scan.

    Both start from the same seed, so the reference gets exactly our weights."""
    import copy

    import torch

    from recsys.config import resolve_config
    from recsys.models import CatalogueSize, build_model

    torch.manual_seed(seed)
    cfg = resolve_config("ss4rec", {}, {"hidden": HIDDEN, "n_layers": N_LAYERS, "rating_head": rating_head})
    model = build_model(cfg, CatalogueSize(n_users=1, n_items=n_items - 1))  # n_items here counts padding
    if variant in (OURS, PURE):          # PURE: the child runs with RECSYS_NATIVE=0 (see run_child)
        return model
    if variant != REFERENCE:
        raise ValueError(f"unknown variant {variant!r}")
    _, ReferenceBlock = reference_classes()
    ref = copy.deepcopy(model)
    ref.blocks = torch.nn.ModuleList(ReferenceBlock(b) for b in model.blocks)
    ref.load_state_dict(model.state_dict())
    return ref


def make_batch(batch: int, length: int, seed: int, n_items: int = N_ITEMS):
    """B full windows of L items with next-item targets, MovieLens-like raw-second timestamps and 1..5 ratings."""
    import numpy as np
    import torch

    from recsys.data.batch import SequenceBatch

    rng = np.random.default_rng(seed)
    seq = rng.integers(1, n_items, size=(batch, length + 1))
    kind = rng.random((batch, length + 1))
    gaps = np.where(kind < 0.3, 0.0,                                       # same second (ratings in one sitting)
                    np.where(kind < 0.8, np.floor(rng.lognormal(3.5, 1.2, kind.shape)),   # seconds to minutes
                             np.floor(10 ** rng.uniform(3.5, 7.5, kind.shape))))          # hours to years
    gaps[:, 0] = 0
    ts = 880_000_000 + rng.integers(0, 10**8, size=(batch, 1)) + np.cumsum(gaps, axis=1).astype(np.int64)
    return SequenceBatch(
        users=torch.zeros(batch, dtype=torch.long),
        items=torch.from_numpy(seq[:, :-1].copy()),
        timestamps=torch.from_numpy(ts[:, :-1].copy()),
        lengths=torch.full((batch,), length, dtype=torch.long),
        targets=torch.from_numpy(seq[:, 1:].copy()),
        target_times=torch.from_numpy(ts[:, -1].copy()),
        target_ratings=torch.from_numpy(rng.integers(1, 6, size=(batch, length)).astype(np.float32)),
    )


def batch_loss(model, batch):
    return model(batch)  # the training loss (CE, plus the rating MSE with a rating head)


# ------------------------------------------------------------------------------------------------------------------
# equality check (parent process, small batch)
# ------------------------------------------------------------------------------------------------------------------
def equality_check(length: int, batch: int, seed: int, n_items: int = N_ITEMS, rating_head: bool = False) -> dict:
    import torch

    ours, ref = make_variant(OURS, seed, n_items, rating_head), make_variant(REFERENCE, seed, n_items, rating_head)
    data = make_batch(batch, length, seed + 1, n_items)
    with torch.no_grad():
        ours.eval(), ref.eval()
        l0_ours, l0_ref = float(batch_loss(ours, data)), float(batch_loss(ref, data))
        args = (data.items, data.timestamps, data.lengths, data.target_times)
        h_ours, h_ref = ours.encode(*args), ref.encode(*args)
        h_rel = float((h_ours - h_ref).abs().max() / h_ref.abs().max())
    grads, losses = [], []
    for model in (ours, ref):
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        torch.manual_seed(seed + 2)                       # identical dropout masks in both models
        loss = batch_loss(model, data)
        loss.backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        losses.append(float(loss.detach()))
        opt.step()
        model.eval()
        with torch.no_grad():
            losses.append(float(batch_loss(model, data)))
    g_ours, g_ref = grads
    rel = max(float((g_ours[n] - g_ref[n]).abs().max()) / max(float(g_ref[n].abs().max()), 1e-30) for n in g_ref)
    return {"length": length, "batch": batch, "loss": l0_ours, "loss_diff": abs(l0_ours - l0_ref),
            "hidden_rel_diff": h_rel, "train_loss_diff": abs(losses[0] - losses[2]), "grad_rel_diff": rel,
            "loss_after_step_diff": abs(losses[1] - losses[3]), "same_params": sorted(g_ours) == sorted(g_ref)}


# ------------------------------------------------------------------------------------------------------------------
# child: one variant at one size
# ------------------------------------------------------------------------------------------------------------------
def measure(spec: dict) -> dict:
    import s5  # noqa: F401  (both variants import the same modules, so their baselines match)
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    model = make_variant(spec["variant"], spec["seed"], spec["n_items"], spec["rating_head"]).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = make_batch(spec["batch"], spec["length"], spec["seed"] + 1, spec["n_items"]).to(device)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    else:
        import gc

        gc.collect()
        reset_peak_rss()                      # import/setup transients are not part of a training step
        baseline = current_rss_bytes()
    times, losses = [], []
    for i in range(spec["repeats"] + 1):                  # step 0 is the warm-up
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = batch_loss(model, data)
        loss.backward()
        opt.step()
        sync()
        if i:
            times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    peak = torch.cuda.max_memory_allocated(device) if cuda else peak_rss_bytes()
    paths = sorted({getattr(b.mamba, "last_path", None) or "?" for b in model.blocks})
    s5_paths = sorted({b.s5._resolve_scan(None, device) if hasattr(b.s5, "_resolve_scan") else "s5-pytorch"
                       for b in model.blocks})
    return {"step_s": statistics.median(times), "all_steps_s": times, "peak_bytes": int(peak),
            "baseline_bytes": int(baseline), "losses": losses, "mamba_path": ",".join(paths),
            "s5_path": ",".join(s5_paths),
            "threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()}


# rows of torch.profiler's table that make up the named parts of a step (self CPU time of the main thread; the
# native kernels' worker threads are waited on inside their own op, so their wall time lands in that op)
PROFILE_PARTS = {
    "Mamba block, fused kernels: forward": ["NativeMamba"],
    "Mamba block, fused kernels: backward": ["NativeMambaBackward"],
    "full-softmax loss (with its matmuls)": ["_FullSoftmaxCE", "_FullSoftmaxCEBackward"],
    "dropout masks (bernoulli_)": ["aten::bernoulli_"],
    "S5, fused kernels: forward + backward": ["NativeS5States", "NativeS5StatesBackward"],
}


def profile_step(length: int, batch: int, seed: int, n_items: int, rating_head: bool) -> None:
    """One training step of our model under torch.profiler: where the time goes, and the activations it saves."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = make_variant(OURS, seed, n_items, rating_head)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = make_batch(batch, length, seed + 1, n_items)

    def step():
        opt.zero_grad(set_to_none=True)
        batch_loss(model, data).backward()
        opt.step()

    step()                                                  # warm-up (and the kernels' build, if first)
    storages = {}

    def pack(t):
        storages.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        batch_loss(model, data)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        wall = time.perf_counter() - t0
    rows = {e.key: e for e in prof.key_averages()}

    def total(keys):
        return sum(rows[k].cpu_time_total if k.startswith("_FullSoftmax") else rows[k].self_cpu_time_total
                   for k in keys if k in rows) / 1e6

    print(f"profile: ours, batch {batch}, length {length}, {torch.get_num_threads()} threads: one step "
          f"{wall:.2f} s under the profiler; activations saved for the backward "
          f"{sum(storages.values()) / 2**20:.0f} MB")
    print("\n| part of the step | seconds |\n| --- | --- |")
    named = 0.0
    for label, keys in PROFILE_PARTS.items():
        sec = total(keys)
        named += sec
        print(f"| {label} | {sec:.3f} |")
    print(f"| everything else (other matmuls, LayerNorm, embedding, Adam, ...) | {max(wall - named, 0):.3f} |\n")


def run_child(spec: dict, timeout: float) -> dict:
    """Measure in a fresh interpreter; {'error': ...} on a timeout, a crash or running out of memory."""
    env = dict(os.environ)
    if spec["variant"] == PURE:
        env["RECSYS_NATIVE"] = "0"
    if spec["threads"]:
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    try:
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
        oom = out.returncode in (-9, 137) or "OutOfMemory" in out.stderr or "out of memory" in out.stderr \
            or "DefaultCPUAllocator" in out.stderr
        return {"error": "out of memory" if oom else f"exit {out.returncode}: {tail[-300:]}", "oom": oom}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_variant(variant: str, device: str, length: int, args, budget: float, log) -> dict:
    """Measure at the full batch if the probe says it fits the budget, else at a smaller batch, scaled up."""
    spec = {"variant": variant, "device": device, "length": length, "seed": args.seed, "threads": args.threads,
            "n_items": args.n_items, "rating_head": args.rating_head, "repeats": args.repeats, "batch": args.batch}
    target = args.batch
    run_batch = target
    if variant == REFERENCE and args.reference_batch and args.reference_batch < target:
        run_batch = args.reference_batch
    elif target > args.probe_batch and not args.no_probe:
        probe = run_child({**spec, "batch": args.probe_batch, "repeats": 1}, args.timeout)
        if "error" in probe:
            return {"error": f"probe at batch {args.probe_batch}: {probe['error']}"}
        per_row = max(probe["peak_bytes"] - probe["baseline_bytes"], 0) / args.probe_batch
        predicted = probe["baseline_bytes"] + per_row * target
        log(f"  probe {variant} L={length} batch {args.probe_batch}: {probe['step_s']:.2f} s/step, "
            f"peak {gb(probe['peak_bytes']):.2f} GB -> predicted {gb(predicted):.1f} GB at batch {target}")
        if predicted > budget:
            run_batch = args.probe_batch
            while run_batch * 2 < target and probe["baseline_bytes"] + per_row * run_batch * 2 <= 0.85 * budget:
                run_batch *= 2
    while True:
        res = run_child({**spec, "batch": run_batch}, args.timeout)
        if "error" not in res or not res.get("oom") or run_batch <= 1:
            break
        log(f"  {variant} L={length} batch {run_batch}: out of memory, retrying at batch {run_batch // 2}")
        run_batch //= 2
    if "error" in res:
        return res
    res["measured_batch"] = run_batch
    if run_batch != target:                                # linear in the batch: time and memory above baseline
        f = target / run_batch
        res["step_s"] *= f
        res["peak_bytes"] = int(res["baseline_bytes"] + (res["peak_bytes"] - res["baseline_bytes"]) * f)
    return res


# ------------------------------------------------------------------------------------------------------------------
# epoch size
# ------------------------------------------------------------------------------------------------------------------
def epoch_windows(length: int, ml1m_dir: Path | None) -> tuple[int, str]:
    """Training windows of one ML-1M epoch at max_len L: sum over 5-core users of ceil((n_u - 3) / L)."""
    path = ml1m_dir / "ratings.parquet" if ml1m_dir else None
    if path is not None and path.exists():
        import numpy as np
        import pandas as pd

        from recsys.data.prepare import kcore_filter

        df = pd.read_parquet(path, columns=["user_id", "movie_id"]).rename(columns={"user_id": "user",
                                                                                   "movie_id": "item"})
        n = kcore_filter(df, 5, 5).groupby("user").size().to_numpy()
        shown = os.path.relpath(path, ROOT) if path.is_absolute() else str(path)  # no machine path in the docs
        return int(np.ceil(np.maximum(n - 3, 0) / length).sum()), f"computed from {shown}"
    if length in ML1M_KNOWN_WINDOWS:
        return ML1M_KNOWN_WINDOWS[length], "known ML-1M value"
    return ML1M_USERS + math.ceil(ML1M_TARGETS / length), "upper bound users + targets/L (no ML-1M copy)"


# ------------------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "both"),
                        help="auto: cuda when available, else cpu; both: cpu and cuda")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads in the children (0: default)")
    parser.add_argument("--max-gb", type=float, default=None,
                        help="memory budget per variant (default 16 on CPU, 90%% of the GPU on CUDA)")
    parser.add_argument("--probe-batch", type=int, default=32, help="batch of the memory probe")
    parser.add_argument("--no-probe", action="store_true", help="measure at the full batch without probing")
    parser.add_argument("--skip-reference", action="store_true", help="do not time the s5-pytorch layout")
    parser.add_argument("--skip-pure", action="store_true", help="do not time our model without the C kernels")
    parser.add_argument("--reference-batch", type=int, default=0,
                        help="measure the s5-pytorch layout at this batch and extrapolate (0: decided by the probe)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    parser.add_argument("--check-batch", type=int, default=16, help="batch of the equality check")
    parser.add_argument("--n-items", type=int, default=N_ITEMS)
    parser.add_argument("--rating-head", action="store_true",
                        help="add our rating head to both variants (default: the released architecture, none)")
    parser.add_argument("--ml1m-dir", type=Path, default=DEFAULT_ML1M,
                        help="ML-1M copy used to count the windows of an epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="instead: profile one training step of ours per length (torch.profiler) and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0

    import torch

    devices = resolve_devices(parser, args)
    if args.profile:
        print(f"$ python scripts/bench_ss4rec.py {' '.join(sys.argv[1:]) if argv is None else ' '.join(argv)}")
        for length in args.lengths:
            profile_step(length, args.batch, args.seed, args.n_items, args.rating_head)
        return 0
    cmd = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    print(f"$ python scripts/bench_ss4rec.py {cmd}".rstrip())
    cpu_line = (f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                f"{torch.__version__}, {args.threads or torch.get_num_threads()} threads")
    print(cpu_line + (f"; GPU: {torch.cuda.get_device_name(0)}" if "cuda" in devices else ""))
    print(f"model: SS4Rec hidden {HIDDEN}, {N_LAYERS} blocks, S5 state 32, Mamba d_state 32, "
          f"{args.n_items:,} items (ML-100K-sized), rating head {'on' if args.rating_head else 'off'}, fp32, "
          f"Adam lr 1e-3")

    # --- equality of the two variants (same weights -> same function and same updates)
    checks_ok = True
    if not args.skip_reference:
        for length in args.lengths:
            c = equality_check(length, args.check_batch, args.seed, args.n_items, args.rating_head)
            ok = c["same_params"] and c["loss_diff"] < 1e-4 and c["train_loss_diff"] < 1e-4 \
                and c["hidden_rel_diff"] < 1e-4 and c["grad_rel_diff"] < 1e-3 and c["loss_after_step_diff"] < 1e-3
            checks_ok &= ok
            print(f"equality check L={length} batch {c['batch']} (cpu, fp32, identical weights): "
                  f"loss {c['loss']:.6f}, max |loss diff| {c['loss_diff']:.2e} (eval) / {c['train_loss_diff']:.2e} "
                  f"(train, same dropout), max rel diff of the hidden states {c['hidden_rel_diff']:.2e}, "
                  f"max rel grad diff {c['grad_rel_diff']:.2e}, "
                  f"|loss diff| after one Adam step {c['loss_after_step_diff']:.2e} -> {'PASS' if ok else 'FAIL'}")

    rows = []
    for device in devices:
        if args.max_gb is not None:
            budget = args.max_gb * 1024**3
        elif device == "cuda":
            budget = 0.9 * torch.cuda.get_device_properties(0).total_memory
        else:
            budget = 16 * 1024**3
        for length in args.lengths:
            windows, how = epoch_windows(length, args.ml1m_dir)
            steps = math.ceil(windows / args.batch)
            variants = [v for v in VARIANTS if not (v == REFERENCE and args.skip_reference)
                        and not (v == PURE and (args.skip_pure or device != "cpu"))]
            for variant in variants:
                log(f"measuring {variant} on {device}, batch {args.batch}, length {length} ...")
                t = time.perf_counter()
                res = measure_variant(variant, device, length, args, budget, log)
                done = res.get("error") or f"{res['step_s']:.3f} s/step"
                log(f"  done in {time.perf_counter() - t:.0f} s: {done}")
                rows.append({"variant": variant, "device": device, "length": length, "windows": windows,
                             "windows_how": how, "steps": steps, **res})

    # --- table
    print()
    print("| variant | device | batch | length | s/step | s/epoch (ML-1M) | peak memory | speed-up | memory ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    verdicts = []
    for r in rows:
        ref = next((x for x in rows if x["variant"] == REFERENCE and x["device"] == r["device"]
                    and x["length"] == r["length"] and "error" not in x), None)
        if "error" in r:
            print(f"| {r['variant']} | {r['device']} | {args.batch} | {r['length']} | {r['error']} | - | - | - | - |")
            continue
        note = "" if r["measured_batch"] == args.batch else f" (extrapolated from batch {r['measured_batch']})"
        epoch = r["step_s"] * r["steps"]
        speed = mem = "-"
        if ref is not None:
            sp = ref["step_s"] / r["step_s"]
            mr = ref["peak_bytes"] / r["peak_bytes"]
            speed, mem = f"{sp:.1f}x", f"{mr:.1f}x"
            if r["variant"] == OURS:
                verdicts.append((r["device"], r["length"], sp, mr))
                mine, theirs = r["peak_bytes"] - r["baseline_bytes"], ref["peak_bytes"] - ref["baseline_bytes"]
                r["above_note"] = (f"memory above the pre-step baseline: {gb(mine):.2f} GB vs {gb(theirs):.2f} GB for "
                                   f"the s5-pytorch layout ({theirs / max(mine, 1):.1f}x less)")
        kind = "max allocated" if r["device"] == "cuda" else "peak RSS"
        print(f"| {r['variant']} | {r['device']} | {args.batch} | {r['length']} | {fmt_time(r['step_s'])}{note} | "
              f"{fmt_time(epoch)} ({r['steps']} steps) | {gb(r['peak_bytes']):.2f} GB {kind} | {speed} | {mem} |")
    print()
    seen = set()
    for r in rows:
        if r["length"] in seen or "error" in r:
            continue
        seen.add(r["length"])
        print(f"epoch at L={r['length']}: ceil(W / {args.batch}) = {r['steps']} steps, W = sum over ML-1M's 6,040 "
              f"5-core users of ceil((n_u - 3) / {r['length']}) = {r['windows']:,} windows ({r['windows_how']})")
    for r in rows:
        if "error" not in r:
            base = "CUDA memory before the first step" if r["device"] == "cuda" else "RSS before the first step"
            print(f"{r['variant']} ({r['device']}, L={r['length']}): {base} {gb(r['baseline_bytes']):.2f} GB, "
                  f"Mamba path {r['mamba_path']}, S5 scan {r['s5_path']}, {r['threads']} threads, "
                  f"steps measured at batch "
                  f"{r['measured_batch']}: {', '.join(f'{s:.3g}' for s in r['all_steps_s'])} s"
                  + (f"; {r['above_note']}" if "above_note" in r else ""))
    if verdicts:
        parts = [f"{d} L={length}: {sp:.1f}x faster, {mr:.1f}x less memory"
                 + (" (met)" if sp >= 5 and mr >= 10 else " (NOT met)") for d, length, sp, mr in verdicts]
        met = all(sp >= 5 and mr >= 10 for *_, sp, mr in verdicts) and checks_ok
        print(f"\ntarget (>= 5x faster per epoch, >= 10x less peak memory, equal metrics): "
              f"{'met' if met else 'NOT met'} - " + "; ".join(parts)
              + f"; equality check {'passed' if checks_ok else 'FAILED'}")
    elif not args.skip_reference:
        print("\ntarget: not evaluated (a reference measurement failed)")
    return 0 if checks_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
