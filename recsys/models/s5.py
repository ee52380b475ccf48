"""Time-aware S5 layer, as SS4Rec uses it, without s5-pytorch's [B, L, P, H] tensor.

SS4Rec (Xiao et al. 2025) runs s5-pytorch's ``S5(64, 32, dt_min=1e-3, dt_max=0.1)`` as ``s5(x, step_scale=dt)`` with
``dt[b, k] = t_{k+1} - t_k`` in raw seconds (0 for padding).  Per step and state dimension p the layer is

    step[b, k, p] = dt[b, k] * exp(log_step[p])
    Abar[b, k, p] = exp(Lambda[p] * step[b, k, p])                     (zero-order hold)
    x[b, k]       = Abar[b, k] * x[b, k-1] + (Abar[b, k] - 1) / Lambda * (B u[b, k])
    y[b, k]       = Re(C x[b, k]) + D * u[b, k]

s5-pytorch builds ``Bbar = (Abar - 1) / Lambda * B`` per step, a complex [B, L, P, H] tensor, and multiplies it with u.
Here ``B u`` is projected first ([B, L, P] complex) and scaled elementwise, so nothing of size B*L*P*H is ever
allocated; the result is the same up to rounding.

Compatibility with s5-pytorch 0.2.1 (``s5.S5``):

* Parameters live in a child module ``seq`` with s5-pytorch's names, shapes and storage: ``seq.Lambda`` complex [P],
  ``seq.B`` real [P, H, 2] (real/imaginary parts of B~ = V^-1 B), ``seq.C`` complex [H, P], ``seq.D`` real [H],
  ``seq.log_step`` real [P].  ``load_state_dict`` works in both directions.
* Supported configuration: ``bcInit`` None/"dense" (the default, what SS4Rec uses) or "complex_normal" (only the
  initialisation of C differs), any ``block_count`` that divides ``state_width`` (initialisation only),
  ZOH discretisation, no liquid term, degree 1, unidirectional.  ``factor_rank`` (different parameters),
  ``liquid``, ``degree != 1``, ``bidir``, bilinear discretisation and ``bcInit="dense_columns"`` (which crashes in
  s5-pytorch 0.2.1 itself) raise ``NotImplementedError``.
* s5-pytorch keeps all P eigenvalues (no conjugate-symmetric halving), so the output is ``Re(C x)`` with no factor 2;
  this layer does the same.
* ``step_scale`` semantics are s5-pytorch's: a float, a [B] tensor (one scale per sequence) or a [B, L] tensor (one
  per step) multiplies ``exp(log_step)``.
* Initialisation follows s5-pytorch's recipe with our own code: Lambda = HiPPO-LegS normal-part eigenvalues
  (-1/2 + i w, w ascending), B~ = V^-1 B with B truncated-LeCun-normal (fan-in P), C~ = C V with C complex
  truncated-LeCun-normal (fan-in P*H), D ~ U(0, 1), log_step ~ U(log dt_min, log dt_max).  Random draws differ from
  s5-pytorch's (different RNG call order); distributions and Lambda are the same.
* ``return_state=True`` returns the whole state sequence x [B, L, P] (complex), not only the last state as
  s5-pytorch does; the last state is ``x[:, -1]``.

Gaps: ``dt`` must be finite and >= 0 (checked).  dt = 0 gives Abar = 1 and Bbar = 0: the state is carried unchanged
and the input reaches the output only through D.  Padding therefore needs dt = 0 and nothing else: the state at a
padded position equals the state at the last real one (trailing padding), or stays 0 (leading padding); the output at
a padded position is ``Re(C x) + D u_pad`` and should be ignored by the caller.  A huge gap (1e8 s) makes Abar
underflow to exactly 0: the state is reset to ``-(B u) / Lambda``; no division by a cumulative product is done
anywhere, so this is exact and NaN-free in values and gradients.  To reset, pass a huge finite gap, never inf.

Scans (``scan=`` argument or the ``scan`` attribute); ``choose_scan`` is the one place "auto" is resolved, so a
device only changes which of these runs, and each can be forced (and is tested) on a CPU:

* ``"sequential"``: the reference, x_k = Abar_k x_{k-1} + b_k over ``unbind(1)`` slices (autograd stays linear in L).
* ``"parallel"``: chunked Hillis-Steele scan: a doubling associative scan on (a, b) pairs inside chunks of
  ``chunk_size`` steps, a second one over the chunk totals, then one fix-up multiply; only products, never divisions.
  Few, wide kernels: what a GPU wants.
* ``"native"``: discretisation and recurrence fused in C (``recsys.models.native``, complex64 on the CPU): the
  backward recomputes Abar and the ZOH factor from the gaps, so only B~u, the gaps and the states stay alive.
* ``"auto"`` (default): "parallel" on CUDA; on the CPU "native" in float32 when the C kernels could be built, else
  "sequential" (on a CPU the loop over small cache-resident slices beats the parallel scan's full-size temporaries;
  timings in docs/benchmarks.md).

The discretisation computes Abar from real exp/cos/sin (cheaper than complex ``torch.exp`` on CPU). Under autocast
the projections may run in low precision; everything complex stays complex64/complex128.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from recsys.models import native as _native

__all__ = ["TimeAwareS5", "choose_scan", "hippo_legs_diagonal", "sequential_scan", "parallel_scan"]

StepScale = float | Tensor | None
_SCANS = ("auto", "sequential", "parallel", "native")


# --------------------------------------------------------------------------------------------------------------------
# Initialisation (our own implementation of the S5 / s5-pytorch recipe)
# --------------------------------------------------------------------------------------------------------------------
def hippo_legs_diagonal(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the normal part of HiPPO-LegS, as S5 initialises Lambda.

    HiPPO-LegS A (A[n, k] = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) on the diagonal) plus the rank-one term
    p p^T with p_n = sqrt(n + 1/2) is S = -1/2 I + (skew-symmetric part).  Returns Lambda = -1/2 + i w with w the
    eigenvalues (ascending) of the Hermitian matrix -i * skew(S), and the unitary eigenvectors V (complex128).
    """
    idx = np.arange(n)
    q = np.sqrt(2 * idx + 1.0)
    a = -np.tril(q[:, None] * q[None, :]) + np.diag(idx)   # HiPPO-LegS
    p = np.sqrt(idx + 0.5)
    s = a + p[:, None] * p[None, :]                         # normal part: diag(-1/2) + skew-symmetric
    skew = s - np.diag(np.diag(s))
    w, v = np.linalg.eigh(-1j * skew)
    lam = np.mean(np.diag(s)) + 1j * w
    return lam, v


def _truncated_lecun_normal(shape: tuple[int, ...], fan_in: int, scale: float = 1.0) -> Tensor:
    """Standard normal truncated to +-2, times sqrt(scale / fan_in) * 0.8796..., as s5-pytorch's lecun_normal does.

    (JAX divides by 0.8796 to restore unit variance; s5-pytorch 0.2.1 multiplies, giving std ~0.77 sqrt(1/fan_in).
    We follow s5-pytorch, which is what SS4Rec ran.)
    """
    std = math.sqrt(scale / max(1, fan_in)) * 0.87962566103423978
    t = torch.empty(shape, dtype=torch.float64)
    nn.init.trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0)
    return t * std


class _S5Params(nn.Module):
    """Holds the parameters under s5-pytorch's names (module ``seq`` of ``s5.S5``)."""

    def __init__(self, width: int, state_width: int, dt_min: float, dt_max: float, block_count: int,
                 bc_init: str):
        super().__init__()
        h, p = width, state_width
        block = p // block_count
        lam_b, v_b = hippo_legs_diagonal(block)
        lam = np.tile(lam_b, block_count)
        v = np.kron(np.eye(block_count), v_b)                    # block-diagonal eigenvectors
        v_t = torch.tensor(v, dtype=torch.complex128)
        vinv = v_t.conj().T
        b = _truncated_lecun_normal((p, h), fan_in=p).to(torch.complex128)
        b_tilde = vinv @ b                                         # [P, H]
        if bc_init == "complex_normal":
            c_tilde = torch.complex(torch.randn(h, p, dtype=torch.float64), torch.randn(h, p, dtype=torch.float64))
            c_tilde = c_tilde * 0.5                                # complex normal, variance 1/2
        else:                                                      # "dense"
            c_raw = _truncated_lecun_normal((h, p, 2), fan_in=p * h)
            c_tilde = torch.complex(c_raw[..., 0], c_raw[..., 1]) @ v_t
        self.Lambda = nn.Parameter(torch.tensor(lam, dtype=torch.complex64))
        self.B = nn.Parameter(torch.view_as_real(b_tilde).to(torch.float32).contiguous())   # [P, H, 2]
        self.C = nn.Parameter(c_tilde.to(torch.complex64))                                   # [H, P]
        self.D = nn.Parameter(torch.rand(h))
        lo, hi = math.log(dt_min), math.log(dt_max)
        self.log_step = nn.Parameter(torch.rand(p) * (hi - lo) + lo)


# --------------------------------------------------------------------------------------------------------------------
# Scans: x_k = a_k * x_{k-1} + b_k along dim 1 of [B, L, P] complex tensors
# --------------------------------------------------------------------------------------------------------------------
def sequential_scan(a: Tensor, b: Tensor, x0: Tensor | None = None) -> Tensor:
    """Reference scan: a Python loop over ``unbind(1)`` slices (no per-step indexing, so backward is linear in L)."""
    x = x0
    out = []
    for a_k, b_k in zip(a.unbind(1), b.unbind(1)):
        x = b_k if x is None else torch.addcmul(b_k, a_k, x)
        out.append(x)
    return torch.stack(out, dim=1)


def _doubling_scan(a: Tensor, b: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Inclusive Hillis-Steele scan of the pairs (a, b) under (a1, b1) . (a2, b2) = (a2 a1, a2 b1 + b2) along dim.

    Returns (cumulative product of a, scanned b).  log2(n) levels, each a full out-of-place combine.
    """
    n = a.shape[dim]
    shift = 1
    while shift < n:
        a_hi, a_lo = a.narrow(dim, shift, n - shift), a.narrow(dim, 0, n - shift)
        b_hi, b_lo = b.narrow(dim, shift, n - shift), b.narrow(dim, 0, n - shift)
        b = torch.cat([b.narrow(dim, 0, shift), torch.addcmul(b_hi, a_hi, b_lo)], dim=dim)
        a = torch.cat([a.narrow(dim, 0, shift), a_hi * a_lo], dim=dim)
        shift *= 2
    return a, b


def parallel_scan(a: Tensor, b: Tensor, x0: Tensor | None = None, chunk_size: int = 8) -> Tensor:
    """Chunked parallel scan: doubling scan inside chunks, doubling scan over chunk totals, one fix-up multiply.

    Stable for any |a| in [0, 1]: only products of a's are formed (an underflow to 0 is the correct answer), there is
    no division and no logarithm.
    """
    bsz, length, p = a.shape
    t = max(1, min(int(chunk_size), length))
    n_chunks = -(-length // t)
    pad = n_chunks * t - length
    if pad:   # identity elements (a = 1, b = 0) at the end
        a = torch.cat([a, a.new_ones(bsz, pad, p)], dim=1)
        b = torch.cat([b, b.new_zeros(bsz, pad, p)], dim=1)
    a = a.reshape(bsz, n_chunks, t, p)
    b = b.reshape(bsz, n_chunks, t, p)
    acum, xloc = _doubling_scan(a, b, dim=2)            # within-chunk prefixes, zero initial state
    if n_chunks > 1 or x0 is not None:
        a_tot, x_tot = _doubling_scan(acum[:, :, -1], xloc[:, :, -1], dim=1)   # end-of-chunk states from 0
        if x0 is not None:
            x_tot = torch.addcmul(x_tot, a_tot, x0.unsqueeze(1))
            first = x0.unsqueeze(1)
        else:
            first = x_tot.new_zeros(bsz, 1, p)
        carry = torch.cat([first, x_tot[:, :-1]], dim=1)                       # state entering each chunk
        xloc = torch.addcmul(xloc, acum, carry.unsqueeze(2))
    return xloc.reshape(bsz, n_chunks * t, p)[:, :length]


def choose_scan(device, complex_dtype: torch.dtype, native_ok: bool = False) -> str:
    """The scan "auto" means, from facts alone: "parallel" on CUDA, "native" where the C kernel can take the tensors
    (``native_ok``: complex64 on the CPU and the kernels built), else "sequential"."""
    if torch.device(device).type == "cuda":
        return "parallel"
    return "native" if native_ok and complex_dtype == torch.complex64 else "sequential"


# --------------------------------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------------------------------
class TimeAwareS5(nn.Module):
    """S5 with a per-step ZOH step size ``dt[b, k] * exp(log_step)``; parameters compatible with ``s5.S5``.

    Args:
        width: H, input/output features.
        state_width: P, complex state size (s5-pytorch default: ``width``).
        dt_min, dt_max: range of the initial step sizes exp(log_step).
        scan: "auto" | "sequential" | "parallel" | "native" (see module docstring); overridable per call.
        chunk_size: chunk length of the parallel scan.
        block_count, bcInit: initialisation variants of s5-pytorch (see module docstring).
        factor_rank, liquid, degree, bidir, discretization: accepted for signature compatibility; anything but the
            defaults raises NotImplementedError.
        check_dt: reject negative or non-finite gaps (one reduction over dt per call).

    Shapes: u [B, L, H] real, dt [B, L] (or [B], or a float), state [B, P] complex.
    """

    def __init__(self, width: int = 64, state_width: int | None = 32, dt_min: float = 1e-3, dt_max: float = 0.1,
                 *, scan: str = "auto", chunk_size: int = 8, block_count: int = 1, bcInit: str | None = None,
                 factor_rank: int | None = None, liquid: bool = False, degree: int = 1, bidir: bool = False,
                 discretization: str = "zoh", check_dt: bool = True):
        super().__init__()
        state_width = state_width or width
        if factor_rank is not None:
            raise NotImplementedError("factor_rank (low-rank B/C with parameters BH, BP, CH, CP) is not supported")
        if liquid:
            raise NotImplementedError("liquid S5 is not supported")
        if degree != 1:
            raise NotImplementedError("degree != 1 is not supported")
        if bidir:
            raise NotImplementedError("bidirectional S5 is not supported (SS4Rec is causal)")
        if discretization != "zoh":
            raise NotImplementedError(f"discretization {discretization!r} is not supported; only 'zoh'")
        bc_init = bcInit or "dense"
        if bc_init not in ("dense", "complex_normal"):
            raise NotImplementedError(f"bcInit {bcInit!r} is not supported; use None/'dense' or 'complex_normal'")
        if state_width % block_count:
            raise ValueError("block_count must divide state_width")
        if scan not in _SCANS:
            raise ValueError(f"scan must be one of {_SCANS}, got {scan!r}")
        self.width = width
        self.state_width = state_width
        self.scan = scan
        self.chunk_size = chunk_size
        self.check_dt = check_dt
        self.seq = _S5Params(width, state_width, dt_min, dt_max, block_count, bc_init)

    # ----- helpers ----------------------------------------------------------------------------------------------
    @property
    def real_dtype(self) -> torch.dtype:
        return self.seq.log_step.dtype

    @property
    def complex_dtype(self) -> torch.dtype:
        return torch.complex128 if self.real_dtype == torch.float64 else torch.complex64

    def extra_repr(self) -> str:
        return f"width={self.width}, state_width={self.state_width}, scan={self.scan!r}"

    def initial_state(self, batch_size: int) -> Tensor:
        return torch.zeros(batch_size, self.state_width, dtype=self.complex_dtype, device=self.seq.D.device)

    def _gaps(self, dt: StepScale, shape: tuple[int, ...], device) -> Tensor:
        """Broadcast s5-pytorch style step scales (float, [B], or full shape) to ``shape`` in the real dtype."""
        if dt is None:
            dt = 1.0
        if not torch.is_tensor(dt):
            dt = torch.tensor(float(dt))
        dt = dt.to(device=device, dtype=self.real_dtype)
        if dt.ndim == 1 and len(shape) == 2:
            if dt.shape[0] != shape[0]:
                raise ValueError(f"dt of shape {tuple(dt.shape)} does not match batch {shape[0]}")
            dt = dt[:, None]
        if dt.ndim > len(shape) or any(d not in (1, s) for d, s in zip(dt.shape[::-1], shape[::-1])):
            raise ValueError(f"dt of shape {tuple(dt.shape)} does not broadcast to {shape}")
        dt = dt.expand(shape)
        if self.check_dt and not bool(((dt >= 0) & torch.isfinite(dt)).all()):
            raise ValueError("dt must be finite and >= 0 (use a huge finite gap, not inf, to reset the state)")
        return dt

    def _discretize(self, dt: Tensor) -> tuple[Tensor, Tensor]:
        """Abar and the ZOH input factor (Abar - 1) / Lambda, both complex [*dt.shape, P]."""
        lam = self.seq.Lambda.to(self.complex_dtype)
        step = dt.unsqueeze(-1) * torch.exp(self.seq.log_step)
        mag = torch.exp(step * lam.real)
        ang = step * lam.imag
        abar = torch.complex(mag * torch.cos(ang), mag * torch.sin(ang))
        coef = (abar - 1) * (1 / lam)
        return abar, coef

    def _project_in(self, u: Tensor) -> Tensor:
        """B~ u as complex [..., P] from one real matmul against the [H, 2P] view of B (real/imag interleaved)."""
        w = self.seq.B.to(self.real_dtype).permute(1, 0, 2).reshape(self.width, 2 * self.state_width)
        bu = (u @ w).to(self.real_dtype)          # autocast may have run the matmul in bf16: no complex bf16 exists
        return torch.view_as_complex(bu.reshape(*u.shape[:-1], self.state_width, 2))

    def _project_out(self, x: Tensor, u: Tensor) -> Tensor:
        """Re(C~ x) + D u from one real matmul against the [2P, H] view of (Re C, -Im C)."""
        c = torch.view_as_real(self.seq.C.to(self.complex_dtype))                       # [H, P, 2]
        w = (c * c.new_tensor([1.0, -1.0])).reshape(self.width, 2 * self.state_width).T   # [2P, H]
        xr = torch.view_as_real(x).reshape(*x.shape[:-1], 2 * self.state_width)
        return xr @ w + self.seq.D.to(self.real_dtype) * u

    def _resolve_scan(self, scan: str | None, device: torch.device) -> str:
        """The scan a forward on ``device`` runs: ``scan`` (default: the ``scan`` attribute), "auto" resolved."""
        scan = scan or self.scan
        if scan not in _SCANS:
            raise ValueError(f"scan must be one of {_SCANS}, got {scan!r}")
        if scan == "auto":
            device = torch.device(device)
            scan = choose_scan(device, self.complex_dtype, native_ok=device.type == "cpu" and _native.available())
        return scan

    # ----- API ---------------------------------------------------------------------------------------------------
    def forward(self, u: Tensor, dt: StepScale = None, state: Tensor | None = None, return_state: bool = False,
                *, step_scale: StepScale = None, scan: str | None = None, readout_dt: StepScale = None):
        """y [B, L, H]; with ``return_state`` also the states x [B, L, P] (complex).

        ``dt`` (alias ``step_scale``, as SS4Rec passes it) is the gap after each step, [B, L]; None means 1.0.
        ``state`` [B, P] complex is the state before the first step (default 0).

        ``readout_dt`` (our addition, for a model that must not know when the next interaction comes): the output
        at step k is read from ``Abar(r) x_{k-1} + Bbar(r) B u_k`` with the gap ``r`` instead of ``dt_k``, while the
        state carried on to step k+1 still integrates the real ``dt_k``. So y_k depends on dt_0..dt_{k-1} only.
        The returned states are the carried ones.
        """
        if dt is not None and step_scale is not None:
            raise TypeError("pass dt or step_scale, not both")
        dt = step_scale if dt is None else dt
        if u.ndim != 3 or u.shape[-1] != self.width:
            raise ValueError(f"u must be [B, L, {self.width}], got {tuple(u.shape)}")
        u = u.to(self.real_dtype)
        bsz, length, _ = u.shape
        gaps = self._gaps(dt, (bsz, length), u.device)
        x0 = None if state is None else state.to(self.complex_dtype)
        mode = self._resolve_scan(scan, u.device)
        bu = self._project_in(u)                              # B~ u, [B, L, P]: never [B, L, P, H]
        if mode == "native":
            if not _native.usable_complex(bu, x0):
                raise RuntimeError(f"the native S5 scan cannot run here: {_native.status()} "
                                   "(it needs float32 CPU tensors and a C compiler)")
            if length == 0:
                xs = bu.new_zeros(bu.shape)
            else:                                             # discretisation fused, recomputed in the backward
                xs = _native.s5_states(gaps, bu, self.seq.Lambda, self.seq.log_step, x0)
        else:
            abar, coef = self._discretize(gaps)               # [B, L, P]
            if mode == "sequential":
                xs = sequential_scan(abar, coef * bu, x0)
            else:
                xs = parallel_scan(abar, coef * bu, x0, self.chunk_size)
        if readout_dt is None:
            y = self._project_out(xs, u)
        else:
            prev = torch.cat([(x0 if x0 is not None else xs.new_zeros(bsz, self.state_width))[:, None],
                              xs[:, :-1]], dim=1)
            abar_r, coef_r = self._discretize(self._gaps(readout_dt, (bsz, length), u.device))
            y = self._project_out(abar_r * prev + coef_r * bu, u)
        return (y, xs) if return_state else y

    def step(self, u_k: Tensor, dt_k: StepScale, x_prev: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One recurrence step for incremental inference: u_k [B, H], dt_k [B] (or float) -> (y_k [B, H], x_k [B, P]).

        ``dt_k`` is the gap after this item (for live scoring: time of the prediction minus time of this item).
        Feeding a sequence through ``step`` reproduces ``forward`` position by position.
        """
        if u_k.ndim != 2 or u_k.shape[-1] != self.width:
            raise ValueError(f"u_k must be [B, {self.width}], got {tuple(u_k.shape)}")
        u_k = u_k.to(self.real_dtype)
        gaps = self._gaps(dt_k, (u_k.shape[0],), u_k.device)
        abar, coef = self._discretize(gaps)                   # [B, P]
        x = coef * self._project_in(u_k)
        if x_prev is not None:
            x = torch.addcmul(x, abar, x_prev.to(self.complex_dtype))
        return self._project_out(x, u_k), x

    @torch.no_grad()
    def retention(self, dt: float | Tensor) -> Tensor:
        """|Abar| averaged over the P state dimensions: the share of the previous state that survives a gap dt.

        Any shape of dt (seconds); returns a real tensor of the same shape (1 for dt = 0, ~0 for gaps of days).
        """
        dt = torch.as_tensor(dt, dtype=self.real_dtype, device=self.seq.D.device)
        step = dt.unsqueeze(-1) * torch.exp(self.seq.log_step)
        return torch.exp(step * self.seq.Lambda.real.to(self.real_dtype)).mean(-1)
