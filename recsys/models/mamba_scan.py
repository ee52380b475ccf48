"""Selective scans for the Mamba block: a plain reference, the fast pure-PyTorch scan, and the dispatch to the C one.

Layout is batch-first, time second: u, delta, z [batch, L, d_inner]; B, C [batch, L, d_state]; A [d_inner, d_state]
(mamba_ssm's ``selective_scan_fn`` takes [batch, d_inner, L] / [batch, d_state, L] instead):

    h_t = exp(delta_t * A) * h_{t-1} + (delta_t * u_t) B_t        (h: [batch, d_inner, d_state])
    y_t = <h_t, C_t> + D * u_t ;  y_t *= SiLU(z_t) if z is given

* ``selective_scan_reference``: a plain autograd loop over time (``unbind`` slices), obviously correct; the oracle.
* ``selective_scan``: a custom autograd Function with a hand-written backward that keeps only ~sqrt(L) checkpointed
  states and processes the batch in cache-sized blocks, so memory is O(sqrt(L)) states instead of the O(L) that
  autograd (or mamba_ssm's ``selective_scan_ref``) keeps; on float32 CPU tensors it runs the C kernel of
  ``recsys.models.native`` instead when that could be built. It works on any device (the CUDA fallback when
  mamba_ssm is missing).
* ``_selective_scan_indexed``: mamba_ssm ``selective_scan_ref``'s indexing style, for the benchmark only: indexing
  inside the loop makes autograd's backward quadratic in L.

Timings: ``python -m recsys.models.mamba --bench`` (figures in docs/benchmarks.md).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from recsys.models import native as _native

__all__ = ["selective_scan", "selective_scan_reference"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------------------------
# selective scan: shared pre/post-processing
# ----------------------------------------------------------------------------------------------------------------
def _check_shapes(u, delta, A, B, C):
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be [batch, L, d_inner], got {tuple(u.shape)} and {tuple(delta.shape)}")
    batch, length, d_inner = u.shape
    if A.dim() != 2 or A.shape[0] != d_inner:
        raise ValueError(f"A must be [d_inner={d_inner}, d_state], got {tuple(A.shape)}")
    want = (batch, length, A.shape[1])
    if tuple(B.shape) != want or tuple(C.shape) != want:
        raise ValueError(f"B and C must be [batch, L, d_state]={want}, got {tuple(B.shape)} and {tuple(C.shape)}")


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    _check_shapes(u, delta, A, B, C)
    dtype = torch.float32 if u.dtype in _LOW_PRECISION else u.dtype
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, B, C


def _finish(y, u, D, z, out_dtype):
    if D is not None:
        y = y + u * D.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


# ----------------------------------------------------------------------------------------------------------------
# reference scan (plain autograd loop)
# ----------------------------------------------------------------------------------------------------------------
def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    """Step-by-step selective scan with plain autograd; obviously correct, memory O(L * batch * d_inner * d_state).

    u, delta, z: [batch, L, d_inner]; A: [d_inner, d_state]; B, C: [batch, L, d_state]; D, delta_bias: [d_inner].
    Returns y [batch, L, d_inner] (and the last state [batch, d_inner, d_state] with ``return_last_state``).
    """
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for u_t, d_t, b_t, c_t in zip(u.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1)):
        decay = torch.exp(d_t.unsqueeze(-1) * A)                            # [batch, d_inner, d_state]
        h = decay * h + (d_t * u_t).unsqueeze(-1) * b_t.unsqueeze(1)
        ys.append((h * c_t.unsqueeze(1)).sum(-1))                           # [batch, d_inner]
    y = torch.stack(ys, dim=1) if ys else u.new_zeros(u.shape)
    y = _finish(y, u, D, z, out_dtype)
    return (y, h) if return_last_state else y


def _selective_scan_indexed(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba_ssm ``selective_scan_ref``-style scan (benchmark only): materialises exp(delta A) and delta B u for all
    steps ([batch, L, d_inner, d_state] each) and indexes them inside the loop, so its backward is quadratic in L."""
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    decay = torch.exp(delta.unsqueeze(-1) * A)                                # [batch, L, d_inner, d_state]
    inject = (delta * u).unsqueeze(-1) * B.unsqueeze(2)
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for i in range(u.shape[1]):
        h = decay[:, i] * h + inject[:, i]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, i]))
    return _finish(torch.stack(ys, dim=1), u, D, z, out_dtype)


# ----------------------------------------------------------------------------------------------------------------
# fast pure-PyTorch scan: custom autograd, batch blocks x checkpointed time chunks
# ----------------------------------------------------------------------------------------------------------------
_LOG2E = 1.4426950408889634
_CPU_BLOCK_BYTES = 1024 * 1024         # one CPU batch block's state [bb, d_inner, d_state]: 64 rows at 128 x 32 fp32


def _default_block(batch: int, d_inner: int, d_state: int, elem: int, device: torch.device) -> int:
    if device.type != "cpu":
        return batch                   # accelerators want the widest ops
    return max(1, min(batch, _CPU_BLOCK_BYTES // max(1, d_inner * d_state * elem)))


class _BlockedScan(torch.autograd.Function):
    """Core recurrence on time-major contiguous tensors: u, delta [L, b, d]; B, C [L, b, n]; A [d, n].

    Returns (y [L, b, d], last state [b, d, n]). The batch is processed in blocks of ``block`` rows so that a block's
    state stays in cache on CPU. The forward builds no graph and keeps only the states entering every ``chunk``-th
    step; the backward recomputes a chunk's states and decays from its checkpoint, then runs the reverse recurrence
        g_t = C_t gy_t + exp(delta_{t+1} A) g_{t+1}      (g = dLoss/dh_t, seeded with dLoss/dh_last).
    exp(x) is computed as exp2(x * log2 e), cheaper than exp on CPU.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, block: int, chunk: int, keep: bool):
        length, batch, d_inner = u.shape
        d_state = A.shape[1]
        n_chunks = (length + chunk - 1) // chunk
        A2 = A * _LOG2E
        y = u.new_empty(length, batch, d_inner)
        h_last = u.new_empty(batch, d_inner, d_state)
        checkpoints = u.new_empty(n_chunks - 1, batch, d_inner, d_state) if keep else None
        for b0 in range(0, batch, block):
            rows = slice(b0, min(batch, b0 + block))
            us, ds, Bs, Cs = u[:, rows], delta[:, rows], B[:, rows], C[:, rows]
            du = ds * us
            h = u.new_zeros(us.shape[1], d_inner, d_state)
            dec = torch.empty_like(h)
            tmp = torch.empty_like(h)
            for t in range(length):
                if checkpoints is not None and t and t % chunk == 0:  # kept (keep)
                    checkpoints[t // chunk - 1, rows] = h
                torch.mul(ds[t].unsqueeze(-1), A2, out=dec).exp2_()
                h.mul_(dec).addcmul_(du[t].unsqueeze(-1), Bs[t].unsqueeze(1))
                torch.sum(torch.mul(h, Cs[t].unsqueeze(1), out=tmp), -1, out=y[t, rows])
            h_last[rows] = h
        if keep:
            ctx.block, ctx.chunk = block, chunk
            ctx.save_for_backward(u, delta, A, B, C, checkpoints)
        return y, h_last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gh_last):
        u, delta, A, B, C, checkpoints = ctx.saved_tensors
        block, chunk = ctx.block, ctx.chunk
        length, batch, d_inner = u.shape
        d_state = A.shape[1]
        n_chunks = (length + chunk - 1) // chunk
        A2 = A * _LOG2E
        if gy is None:
            gy = torch.zeros_like(u)
        g_u, g_delta = torch.empty_like(u), torch.empty_like(delta)
        g_B, g_C = torch.empty_like(B), torch.empty_like(C)
        g_A = torch.zeros_like(A)
        for b0 in range(0, batch, block):
            rows = slice(b0, min(batch, b0 + block))
            bb = rows.stop - rows.start
            us, ds, Bs, Cs, gys = u[:, rows], delta[:, rows], B[:, rows], C[:, rows], gy[:, rows]
            du = ds * us
            g = gh_last[rows].clone() if gh_last is not None else u.new_zeros(bb, d_inner, d_state)
            g_A_acc = torch.zeros_like(g)                                   # sum_t q_t * delta_t
            q = torch.empty_like(g)
            tmp = torch.empty_like(g)
            states = u.new_empty(min(chunk, length) + 1, bb, d_inner, d_state)   # states[k] = h_{t0 + k - 1}
            decays = u.new_empty(min(chunk, length), bb, d_inner, d_state)
            for c in reversed(range(n_chunks)):
                t0, t1 = c * chunk, min(length, (c + 1) * chunk)
                if c == 0:
                    states[0].zero_()
                else:
                    states[0].copy_(checkpoints[c - 1, rows])
                for t in range(t0, t1):
                    k = t - t0
                    torch.mul(ds[t].unsqueeze(-1), A2, out=decays[k]).exp2_()
                    torch.mul(states[k], decays[k], out=states[k + 1]).addcmul_(du[t].unsqueeze(-1),
                                                                              Bs[t].unsqueeze(1))
                for t in reversed(range(t0, t1)):
                    k = t - t0
                    gy_t, dec = gys[t], decays[k]
                    g_C[t, rows] = torch.bmm(gy_t.unsqueeze(1), states[k + 1]).squeeze(1)
                    g.addcmul_(gy_t.unsqueeze(-1), Cs[t].unsqueeze(1))
                    g_du = torch.mul(g, Bs[t].unsqueeze(1), out=tmp).sum(-1)       # [bb, d]
                    g_B[t, rows] = torch.bmm(du[t].unsqueeze(1), g).squeeze(1)     # [bb, n]
                    g.mul_(dec)                                                    # now dLoss/dh_{t-1} part
                    torch.mul(g, states[k], out=q)                                 # dLoss / d(delta_t * A)
                    g_A_acc.addcmul_(q, ds[t].unsqueeze(-1))
                    g_delta[t, rows] = torch.mul(q, A, out=tmp).sum(-1) + g_du * us[t]
                    g_u[t, rows] = g_du * ds[t]
            g_A += g_A_acc.sum(0)
        return g_u, g_delta, g_A, g_B, g_C, None, None, None


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, chunk_size: int | None = None, block_size: int | None = None,
                   native: bool | None = None):
    """Fast, memory-conscious selective scan (same maths and layout as ``selective_scan_reference``).

    ``native``: None (default) uses the fused C kernel of ``recsys.models.native`` when every tensor is float32 on
    the CPU and the kernel could be built, and the pure-PyTorch scan below otherwise; False forces the pure path;
    True requires the kernel (RuntimeError when it cannot run). The kernel saves only the inputs for the backward
    and recomputes the states there, so it needs neither ``chunk_size`` nor ``block_size`` (both ignored by it); it
    does not propagate a gradient into the returned last state (such calls take the pure path).

    Pure path:

    ``block_size``: batch rows processed together (default: a 1 MiB state on CPU, the whole batch elsewhere).
    ``chunk_size``: steps between checkpointed states (default ceil(sqrt(L))). Besides its inputs and outputs the
    scan keeps (L / chunk_size) states of [batch, d_inner, d_state] for the backward, and works on about
    (2 * chunk_size + 4) states of [block_size, d_inner, d_state] at a time. Works on any device. The gradient of
    the returned last state is propagated too. Not twice differentiable.
    """
    _check_shapes(u, delta, A, B, C)
    if native is not False and u.shape[0] and u.shape[1]:
        tensors = (u, delta, A, B, C, D, z, delta_bias)
        ok = _native.usable(*tensors)
        if native and not ok:
            raise RuntimeError(f"native selective scan cannot run here: {_native.status()} "
                               "(it needs float32 CPU tensors and a C compiler)")
        if ok and not return_last_state:
            return _native.selective_scan(*tensors, delta_softplus)
        if ok and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)):
            y, h = _native.last_state(u, delta, A, B, C, delta_bias, delta_softplus)
            return _finish(y, u, D, z, u.dtype), h
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, length, d_inner = u.shape
    if length == 0 or batch == 0:
        y = u.new_zeros(u.shape)
        h = u.new_zeros(batch, d_inner, A.shape[1])
    else:
        chunk = int(chunk_size) if chunk_size else max(1, math.ceil(math.sqrt(length)))
        block = int(block_size) if block_size else _default_block(batch, d_inner, A.shape[1], u.element_size(),
                                                                  u.device)
        keep = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
        tm = [t.transpose(0, 1).contiguous() for t in (u, delta, B, C)]       # time-major
        y, h = _BlockedScan.apply(tm[0], tm[1], A.contiguous(), tm[2], tm[3], block, min(chunk, length), keep)
        y = y.transpose(0, 1)
    y = _finish(y, u, D, z, out_dtype)
    return (y, h) if return_last_state else y


# ----------------------------------------------------------------------------------------------------------------
# benchmark: python -m recsys.models.mamba --bench [--batch 1024 --length 200 ...]
# ----------------------------------------------------------------------------------------------------------------
def _benchmark(batch: int, length: int, d_inner: int, d_state: int, variants, repeats: int = 1) -> dict:
    import time

    gen = torch.Generator().manual_seed(0)
    u = torch.randn(batch, length, d_inner, generator=gen)
    dt = torch.randn(batch, length, d_inner, generator=gen) * 0.5 - 1.0
    z = torch.randn(batch, length, d_inner, generator=gen)
    A = -torch.exp(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
    B = torch.randn(batch, length, d_state, generator=gen)
    C = torch.randn(batch, length, d_state, generator=gen)
    D = torch.ones(d_inner)
    fns: dict[str, Callable[..., Any]] = {
        "native": functools.partial(selective_scan, native=True),
        "fast": functools.partial(selective_scan, native=False),
        "reference": selective_scan_reference, "indexed": _selective_scan_indexed}
    results = {}
    for name in variants:
        best: tuple[float, float] | None = None
        for _ in range(repeats):
            leaves = [t.clone().requires_grad_(True) for t in (u, dt, A, B, C, D, z)]
            t0 = time.perf_counter()
            y = fns[name](*leaves[:5], D=leaves[5], z=leaves[6], delta_softplus=True)
            t1 = time.perf_counter()
            y.square().mean().backward()
            t2 = time.perf_counter()
            if best is None or t2 - t0 < best[0] + best[1]:
                best = (t1 - t0, t2 - t1)
        assert best is not None  # repeats >= 1
        results[name] = {"forward_s": round(best[0], 2), "backward_s": round(best[1], 2),
                         "total_s": round(best[0] + best[1], 2)}
        print(f"B={batch} L={length} d_inner={d_inner} d_state={d_state} {name:9s} "
              f"fwd {best[0]:7.2f} s  bwd {best[1]:7.2f} s  total {best[0] + best[1]:7.2f} s", flush=True)
    return results


def main(argv=None) -> None:  # pragma: no cover - a command-line benchmark
    import argparse

    parser = argparse.ArgumentParser(description="CPU timing of the pure-PyTorch selective scans (fwd+bwd).")
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--d-inner", type=int, default=128)
    parser.add_argument("--d-state", type=int, default=32)
    parser.add_argument("--variants", default="native,fast,reference,indexed",
                        help="native: the C kernel; fast: the pure-PyTorch custom-backward scan")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    _benchmark(args.batch, args.length, args.d_inner, args.d_state, args.variants.split(","), args.repeats)


if __name__ == "__main__":  # pragma: no cover
    main()
