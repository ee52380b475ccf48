"""Mamba (selective SSM) block in pure PyTorch, parameter-compatible with ``mamba_ssm.modules.mamba_simple.Mamba``.

SS4Rec uses ``Mamba(d_model=64, d_state=32, d_conv=4, expand=2)`` as its relation-aware SSM. mamba-ssm only imports
where its CUDA extension was built, so this module re-implements the block with the *same parameter names, shapes
and initialisation*; one ``state_dict`` loads into either implementation.

Parameters (d_inner = expand * d_model, dt_rank = ceil(d_model / 16) when "auto"):

    in_proj.weight   [2*d_inner, d_model]        (in_proj.bias [2*d_inner] only if bias=True)
    conv1d.weight    [d_inner, 1, d_conv]        conv1d.bias [d_inner] (conv_bias=True)
    x_proj.weight    [dt_rank + 2*d_state, d_inner]
    dt_proj.weight   [d_inner, dt_rank]          dt_proj.bias [d_inner]
    A_log            [d_inner, d_state]          D [d_inner]
    out_proj.weight  [d_model, d_inner]          (out_proj.bias [d_model] only if bias=True)

Forward, x [B, L, d_model] -> [B, L, d_model]:
in_proj -> split (x, z) -> causal depthwise conv1d (left pad d_conv-1) + SiLU -> x_proj -> (dt, B, C) ->
dt = softplus(dt_proj(dt)) -> selective scan with A = -exp(A_log) and the D skip -> y * SiLU(z) -> out_proj.
The block is causal: output t depends on inputs 0..t only, so right-padding never changes earlier positions.

Selective scan (layout here is batch-first, time second: u, delta, z [batch, L, d_inner]; B, C [batch, L, d_state];
A [d_inner, d_state]; NOTE mamba_ssm's ``selective_scan_fn`` takes [batch, d_inner, L] / [batch, d_state, L]):

    h_t = exp(delta_t * A) * h_{t-1} + (delta_t * u_t) B_t        (h: [batch, d_inner, d_state])
    y_t = <h_t, C_t> + D * u_t ;  y_t *= SiLU(z_t) if z is given

* ``selective_scan_reference``: a plain autograd loop over time (``unbind`` slices), obviously correct; for tests.
* ``selective_scan``: the CPU/pure path. A custom autograd Function with a hand-written backward: the forward never
  builds a graph and keeps only ~sqrt(L) checkpointed states; the backward recomputes the states chunk by chunk and
  runs the reverse recurrence. The batch is processed in blocks (64 rows on CPU by default) so the working states
  stay in cache. Memory is O(sqrt(L) * batch * d_inner * d_state) instead of the O(L * ...) that autograd (or
  mamba_ssm's ``selective_scan_ref``, which materialises exp(delta A) for all steps) needs, and it is the fastest
  pure-PyTorch variant measured (``python -m recsys.models.mamba --bench --threads 1``; at B=1024, L=200,
  d_inner=128, d_state=32 on one shared core: 9-14 s forward+backward and 2.8 GB peak RSS, against 78 s and
  18 GB for the plain autograd loop; at B=256: 3.4 s vs 5.3 s, and 301 s for the index-per-step variant).
  mamba_ssm's ``selective_scan_ref`` also indexes ``deltaA[:, :, i]`` inside its loop; autograd then back-propagates
  a full-size zero-filled gradient for every index, which makes its backward quadratic in L (ss4rec.md).

CPU fast path: on float32 CPU tensors (and ``use_fast_path`` not False) the block runs the C kernels of
``recsys.models.native`` when they could be built with the machine's compiler: in_proj -> conv -> x_proj -> scan ->
gating -> out_proj as one autograd Function that saves only the block's input and recomputes the rest in the
backward (``last_path`` "native"); ``selective_scan`` uses the kernel's scan alone. Everything here stays the
fallback (no compiler, ``RECSYS_NATIVE=0``, float64) and the reference the kernels are tested against.

Fast path: with ``use_fast_path`` "auto"/True, a CUDA input of float32/float16/bfloat16 and an importable
``mamba_ssm`` (imported lazily, never at module import), the whole block runs through ``mamba_inner_fn`` (when
``causal_conv1d`` is installed too) or our conv + ``selective_scan_fn``. ``fast_path_available()`` says whether it can
run here; ``Mamba.last_path`` records which path the last forward took: "mamba_inner_fn", "selective_scan_fn",
"native" or "pure".

Single-token inference: ``allocate_state(batch)`` -> (conv_state [B, d_inner, d_conv], ssm_state
[B, d_inner, d_state]); ``step(x_t, conv_state, ssm_state)`` -> (out_t, conv_state, ssm_state), equal to the full
forward token by token. ``step`` is functional (returns new state tensors, leaves its inputs alone), unlike
mamba_ssm's in-place ``step``. ``forward(x, return_state=True)`` also returns the state after the LAST position
(padding included), so a prefix can be prefilled in one call and continued with ``step``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from recsys.models import native as _native

__all__ = [
    "Mamba",
    "selective_scan",
    "selective_scan_reference",
    "fast_path_available",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 (the SSM parameters and the scan run in at least float32); else unchanged."""
    return t.float() if t.dtype in _LOW_PRECISION else t


# ----------------------------------------------------------------------------------------------------------------
# optional mamba_ssm kernels (lazy)
# ----------------------------------------------------------------------------------------------------------------
_MAMBA_SSM_CACHE: dict = {}


def _load_mamba_ssm() -> Optional[dict]:
    """Import mamba_ssm's fused kernels once, lazily. None when unavailable (no CUDA build, no package, ...)."""
    if "ops" in _MAMBA_SSM_CACHE:
        return _MAMBA_SSM_CACHE["ops"]
    ops = None
    try:
        from mamba_ssm.ops import selective_scan_interface as ssi  # noqa: WPS433 (lazy on purpose)

        ops = {"selective_scan_fn": ssi.selective_scan_fn, "mamba_inner_fn": None}
        try:
            import causal_conv1d  # noqa: F401  (mamba_inner_fn needs its CUDA extension)

            if getattr(ssi, "causal_conv1d_cuda", True) is not None:
                ops["mamba_inner_fn"] = ssi.mamba_inner_fn
        except (ImportError, OSError, RuntimeError, AttributeError):
            pass
    except (ImportError, OSError, RuntimeError, AttributeError):
        ops = None
    _MAMBA_SSM_CACHE["ops"] = ops
    return ops


def fast_path_available() -> bool:
    """True when CUDA is available and mamba_ssm's fused selective scan imports."""
    return torch.cuda.is_available() and _load_mamba_ssm() is not None


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
    state stays in cache on CPU (at B=1024 about 20-35% faster than one 16 MB whole-batch state). The forward builds
    no graph and keeps only the states entering every ``chunk``-th step; the backward recomputes a chunk's states and
    decays from its checkpoint, then runs the reverse recurrence
        g_t = C_t gy_t + exp(delta_{t+1} A) g_{t+1}      (g = dLoss/dh_t, seeded with dLoss/dh_last).
    exp(x) is computed as exp2(x * log2 e), which measured cheaper than exp on CPU.
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
                if keep and t and t % chunk == 0:
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
                   return_last_state=False, chunk_size: Optional[int] = None, block_size: Optional[int] = None,
                   native: Optional[bool] = None):
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
# the block
# ----------------------------------------------------------------------------------------------------------------
class Mamba(nn.Module):
    """Mamba block with mamba_ssm's parameter layout and init; pure PyTorch, optional mamba_ssm fast path on CUDA."""

    def __init__(self, d_model: int = 64, d_state: int = 32, d_conv: int = 4, expand: int = 2, dt_rank="auto",
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random", dt_scale: float = 1.0,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False, use_fast_path="auto",
                 layer_idx: Optional[int] = None, device=None, dtype=None):
        super().__init__()
        if use_fast_path not in ("auto", True, False):
            raise ValueError(f"use_fast_path must be 'auto', True or False, got {use_fast_path!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        self.last_path: Optional[str] = None

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        self.activation = "silu"
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        # dt_proj: weight uniform(+-dt_rank^-0.5 * dt_scale) (or constant); bias = softplus^-1(dt),
        # dt log-uniform in [dt_min, dt_max], floored at dt_init_floor.
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise NotImplementedError(f"dt_init={dt_init!r}")
        log_lo, log_hi = math.log(dt_min), math.log(dt_max)
        dt = torch.exp(torch.rand(self.d_inner, **factory) * (log_hi - log_lo) + log_lo).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))      # inverse of softplus
        self.dt_proj.bias._no_reinit = True

        # S4D-real: A = -(1, 2, ..., d_state) for every channel, stored as log.
        a = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a).contiguous())
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _fast_ops(self, x: torch.Tensor) -> Optional[dict]:
        if self.use_fast_path is False or not x.is_cuda or x.dtype not in (torch.float32, *_LOW_PRECISION):
            return None
        return _load_mamba_ssm()

    def _causal_conv(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, d_inner] -> SiLU(causal depthwise conv) [B, L, d_inner]."""
        length = x.shape[1]
        return F.silu(self.conv1d(x.transpose(1, 2))[..., :length].transpose(1, 2))

    def _conv_state_from(self, x: torch.Tensor) -> torch.Tensor:
        """Last d_conv pre-conv inputs [B, d_inner, d_conv] (oldest first, zero-filled for short sequences)."""
        xt = x.transpose(1, 2)
        pad = self.d_conv - xt.shape[-1]
        return F.pad(xt, (pad, 0)) if pad > 0 else xt[..., -self.d_conv:].contiguous()

    def _ssm_inputs(self, xc: torch.Tensor):
        dt, B, C = torch.split(self.x_proj(xc), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C                      # dt_proj bias goes to the scan

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, hidden_states: torch.Tensor, return_state: bool = False):
        """[B, L, d_model] -> [B, L, d_model]; with ``return_state`` also (conv_state, ssm_state) after position L-1."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"expected [batch, L, {self.d_model}], got {tuple(hidden_states.shape)}")
        if hidden_states.shape[1] == 0:                                    # an empty sequence: nothing to scan
            self.last_path = "empty"
            out = self.out_proj(hidden_states.new_zeros(*hidden_states.shape[:2], self.d_inner))
            return (out, self.allocate_state(hidden_states.shape[0], hidden_states.device,
                                             hidden_states.dtype)) if return_state else out
        ops = self._fast_ops(hidden_states)
        A = -torch.exp(self.A_log.float() if ops is not None else _upcast(self.A_log))
        if ops is not None and ops["mamba_inner_fn"] is not None and not return_state:
            xz = self.in_proj(hidden_states).transpose(1, 2)                 # [B, 2*d_inner, L]
            out = ops["mamba_inner_fn"](
                xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                self.out_proj.weight, self.out_proj.bias, A, None, None, self.D.float(),
                delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
            self.last_path = "mamba_inner_fn"
            return out

        if (ops is None and not return_state and self.use_fast_path is not False and hidden_states.numel()
                and _native.usable(hidden_states, *self.parameters())):
            self.last_path = "native"
            return _native.mamba_block(hidden_states, self.in_proj.weight, self.in_proj.bias, self.conv1d.weight,
                                       self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias,
                                       self.A_log, self.D, self.out_proj.weight, self.out_proj.bias)

        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)                 # [B, L, d_inner] each
        xc = self._causal_conv(x)
        dt, B, C = self._ssm_inputs(xc)
        if ops is not None:
            res = ops["selective_scan_fn"](
                xc.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A,
                B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), self.D.float(),
                z=z.transpose(1, 2).contiguous(), delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                return_last_state=return_state)
            y, h = res if return_state else (res, None)
            y = y.transpose(1, 2)
            self.last_path = "selective_scan_fn"
        else:
            D, bias = _upcast(self.D), _upcast(self.dt_proj.bias)
            native = self.use_fast_path is not False and _native.usable(xc, dt, A, B, C, D, z, bias)
            res = selective_scan(xc, dt, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True,
                                 return_last_state=return_state, native=native)
            y, h = res if return_state else (res, None)
            self.last_path = "native" if native else "pure"
        out = self.out_proj(y.to(hidden_states.dtype))
        if return_state:
            return out, (self._conv_state_from(x), h)
        return out

    # -- single-token inference -------------------------------------------------------------------------------
    def allocate_state(self, batch: int, device=None, dtype=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Zero (conv_state [batch, d_inner, d_conv], ssm_state [batch, d_inner, d_state]) for ``step``."""
        device = device if device is not None else self.in_proj.weight.device
        dtype = dtype if dtype is not None else self.in_proj.weight.dtype
        conv_state = torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch, self.d_inner, self.d_state, device=device,
                                dtype=torch.float32 if dtype in _LOW_PRECISION else dtype)
        return conv_state, ssm_state

    def step(self, x_t: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
        """One token: x_t [B, d_model] or [B, 1, d_model] -> (out_t of the same shape, new conv_state, new ssm_state).

        Functional: the given states are not modified. Feeding x[:, 0], x[:, 1], ... from ``allocate_state``
        reproduces ``forward(x)`` position by position.
        """
        squeeze = x_t.dim() == 3
        if squeeze:
            if x_t.shape[1] != 1:
                raise ValueError(f"step takes one token, got {tuple(x_t.shape)}")
            x_t = x_t[:, 0]
        x, z = self.in_proj(x_t).chunk(2, dim=-1)                           # [B, d_inner]
        conv_state = torch.cat([conv_state[..., 1:], x.unsqueeze(-1).to(conv_state.dtype)], dim=-1)
        xc = (conv_state * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            xc = xc + self.conv1d.bias
        xc = F.silu(xc).to(x.dtype)
        dt, B, C = self._ssm_inputs(xc)
        sdt = ssm_state.dtype
        dt = F.softplus(dt.to(sdt) + self.dt_proj.bias.to(sdt))
        A = -torch.exp(self.A_log.to(sdt))
        decay = torch.exp(dt.unsqueeze(-1) * A)
        ssm_state = decay * ssm_state + (dt * xc.to(sdt)).unsqueeze(-1) * B.to(sdt).unsqueeze(1)
        y = torch.bmm(ssm_state, C.to(sdt).unsqueeze(-1)).squeeze(-1) + self.D.to(sdt) * xc.to(sdt)
        y = (y * F.silu(z.to(sdt))).to(x_t.dtype)
        out = self.out_proj(y)
        return (out.unsqueeze(1) if squeeze else out), conv_state, ssm_state

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
                f"dt_rank={self.dt_rank}, use_fast_path={self.use_fast_path!r}")


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
    fns = {"native": lambda *a, **k: selective_scan(*a, native=True, **k),
           "fast": lambda *a, **k: selective_scan(*a, native=False, **k),
           "reference": selective_scan_reference, "indexed": _selective_scan_indexed}
    results = {}
    for name in variants:
        best = None
        for _ in range(repeats):
            leaves = [t.clone().requires_grad_(True) for t in (u, dt, A, B, C, D, z)]
            t0 = time.perf_counter()
            y = fns[name](*leaves[:5], D=leaves[5], z=leaves[6], delta_softplus=True)
            t1 = time.perf_counter()
            y.square().mean().backward()
            t2 = time.perf_counter()
            if best is None or t2 - t0 < best[0] + best[1]:
                best = (t1 - t0, t2 - t1)
        results[name] = {"forward_s": round(best[0], 2), "backward_s": round(best[1], 2),
                         "total_s": round(best[0] + best[1], 2)}
        print(f"B={batch} L={length} d_inner={d_inner} d_state={d_state} {name:9s} "
              f"fwd {best[0]:7.2f} s  bwd {best[1]:7.2f} s  total {best[0] + best[1]:7.2f} s", flush=True)
    return results


if __name__ == "__main__":  # pragma: no cover
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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    _benchmark(args.batch, args.length, args.d_inner, args.d_state, args.variants.split(","), args.repeats)
