"""Autograd Functions over the C kernels: the fused Mamba block, the selective scan, and S5's recurrence.

Each Function saves its inputs (not the intermediates) and recomputes what the backward needs; batch rows are split
over ``torch.get_num_threads()`` Python threads (ctypes releases the GIL), so no second OpenMP runtime is loaded next
to PyTorch's. The kernels are float32 (complex64 for S5) on the CPU only: every pointer handed to C is checked for
that first, and the fused block switches autocast off, so a low-precision tensor raises instead of being misread.
"""
from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor

import torch

from recsys.models.native.build import ConvInputs, S5Inputs, ScanGrads, ScanInputs, load

# ------------------------------------------------------------------------------------------------------------------
# calling it
# ------------------------------------------------------------------------------------------------------------------
_pool: dict = {}


def _library() -> ctypes.CDLL:
    """The compiled library: every caller of this module has checked `usable` first, so it is loaded."""
    lib = load()
    assert lib is not None, "the native kernels are not available here (check recsys.models.native.usable first)"
    return lib


def _executor(n: int) -> ThreadPoolExecutor:
    ex = _pool.get(n)
    if ex is None:
        ex = _pool[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="recsys-scan")
    return ex


def _split(batch: int) -> list:
    if batch <= 0:
        return []
    n = max(1, min(torch.get_num_threads(), batch))
    step = -(-batch // n)
    return [(b, min(batch, b + step)) for b in range(0, batch, step)]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _run(parts, fn):
    """fn(b0, b1, i) on every part, in parallel threads (ctypes releases the GIL)."""
    if not parts:
        return
    if len(parts) == 1:
        codes = [fn(*parts[0], 0)]
    else:
        codes = list(_executor(len(parts)).map(lambda p: fn(*p[1], p[0]), enumerate(parts)))
    if any(codes):
        raise MemoryError("native CPU kernel: could not allocate its scratch buffers")


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A [B, L, C] float32 view with unit stride in the last dimension (copied only when it has none)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _opt(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().contiguous()


def _check(*tensors, dtype: torch.dtype = torch.float32) -> None:
    """Refuse, before C reads them, tensors the kernels would misread: not ``dtype``, not on the CPU, or without unit
    stride in the last dimension (None ignored)."""
    for t in tensors:
        if t is not None and (t.dtype != dtype or t.device.type != "cpu" or (t.stride(-1) != 1 and t.shape[-1] > 1)):
            raise TypeError(f"the native CPU kernels take {dtype} CPU tensors with unit stride in the last "
                            f"dimension, got {t.dtype} on {t.device} with strides {t.stride()}")


def _scan_inputs(u, dt, A, B, C, D, z, bias, softplus, W=None) -> ScanInputs:
    _check(u, dt, A, B, C, D, z, bias, W)
    _, length, d_inner = u.shape
    return ScanInputs(length, d_inner, A.shape[1], W.shape[1] if W is not None else 0,
                       u.data_ptr(), u.stride(0), u.stride(1), dt.data_ptr(), dt.stride(0), dt.stride(1),
                       _ptr(W), A.data_ptr(), B.data_ptr(), B.stride(0), B.stride(1),
                       C.data_ptr(), C.stride(0), C.stride(1), _ptr(D),
                       _ptr(z), z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
                       _ptr(bias), int(bool(softplus)))


def _grad_slot(t: torch.Tensor | None) -> tuple:
    """(pointer, row stride) of a [B, L, C] gradient output (unit stride in C, rows evenly spaced)."""
    return (None, 0) if t is None else (t.data_ptr(), t.stride(1))


def _scan_backward(lib, args, gy, gu, gdt, gz, gB, gC, acc, parts, y=None) -> None:
    """Run ss_backward over the parts (writing the forward's output into y too, when given). acc: (gA [n, D, N],
    gD [n, D] or None, gbias [n, D] or None, gW [n, D, R] or None) partial sums, one row per part, added to."""
    gA, gD, gbias, gW = acc
    _check(gy, gu, gdt, gz, gB, gC, y)
    slots = [_grad_slot(t) for t in (gu, gdt, gz, gB, gC)]

    def call(b0, b1, i):
        grads = ScanGrads(*[v for slot in slots for v in slot], gA[i].data_ptr(),
                           gD[i].data_ptr() if gD is not None else None,
                           gbias[i].data_ptr() if gbias is not None else None,
                           gW[i].data_ptr() if gW is not None else None, _ptr(y))
        return lib.ss_backward(ctypes.byref(args), b0, b1, gy.data_ptr(), ctypes.byref(grads))

    _run(parts, call)


def _partials(ref, n_parts, d_inner, d_state, rank, has_D, has_bias):
    return (ref.new_zeros(n_parts, d_inner, d_state), ref.new_zeros(n_parts, d_inner) if has_D else None,
            ref.new_zeros(n_parts, d_inner) if has_bias else None,
            ref.new_zeros(n_parts, d_inner, rank) if rank else None)


class NativeSelectiveScan(torch.autograd.Function):
    """y = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus), all float32 on the CPU.

    Saves only its inputs (no state history, no intermediate activations): the backward recomputes what it needs.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool):
        lib = _library()
        u, delta, B, C = (_rows(t) for t in (u, delta, B, C))
        z = _rows(z) if z is not None else None
        A, D, delta_bias = A.contiguous(), _opt(D), _opt(delta_bias)
        y = u.new_empty(u.shape)
        args = _scan_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        _run(_split(u.shape[0]), lambda b0, b1, i: lib.ss_forward(ctypes.byref(args), b0, b1, y.data_ptr(), None))
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.softplus = bool(delta_softplus)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        lib = _library()
        u, delta, A, B, C, D, z, bias = ctx.saved_tensors
        gy = gy.contiguous()
        batch, length, d_inner = u.shape
        d_state = A.shape[1]
        gu, gdt = u.new_empty(u.shape), u.new_empty(u.shape)
        gz = u.new_empty(u.shape) if z is not None else None
        gB, gC = u.new_empty(batch, length, d_state), u.new_empty(batch, length, d_state)
        args = _scan_inputs(u, delta, A, B, C, D, z, bias, ctx.softplus)
        parts = _split(batch)
        acc = _partials(u, len(parts), d_inner, d_state, 0, D is not None, bias is not None)
        _scan_backward(lib, args, gy, gu, gdt, gz, gB, gC, acc, parts)
        gA, gD, gbias, _ = (None if t is None else t.sum(0) for t in acc)
        return gu, gdt, gA, gB, gC, gD, gz, gbias, None


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False) -> torch.Tensor:
    """The fused scan (see NativeSelectiveScan); the caller checks ``usable`` first."""
    return NativeSelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def last_state(u, delta, A, B, C, delta_bias=None, delta_softplus=False) -> tuple:
    """Forward only, no autograd: (y without D/z, the state after the last step [batch, d_inner, d_state])."""
    lib = _library()
    u, delta, B, C = (_rows(t.detach()) for t in (u, delta, B, C))
    A, delta_bias = A.detach().contiguous(), _opt(delta_bias)
    y = u.new_empty(u.shape)
    h = u.new_empty(u.shape[0], u.shape[2], A.shape[1])
    args = _scan_inputs(u, delta, A, B, C, None, None, delta_bias, delta_softplus)
    _run(_split(u.shape[0]),
         lambda b0, b1, i: lib.ss_forward(ctypes.byref(args), b0, b1, y.data_ptr(), h.data_ptr()))
    return y, h


# ------------------------------------------------------------------------------------------------------------------
# the fused inner block
# ------------------------------------------------------------------------------------------------------------------
def _conv(lib, x, weight, bias, parts) -> tuple:
    """SiLU(causal depthwise conv(x)) [B, L, D] contiguous, and the ctypes arguments (kept alive by the caller)."""
    _check(x, weight, bias)
    batch, length, d_inner = x.shape
    args = ConvInputs(length, d_inner, weight.shape[-1], x.data_ptr(), x.stride(0), x.stride(1),
                       weight.data_ptr(), _ptr(bias))
    out = x.new_empty(batch, length, d_inner)
    _run(parts, lambda b0, b1, i: lib.conv_forward(ctypes.byref(args), b0, b1, out.data_ptr(), d_inner))
    return out, args


def _linear(x, weight, bias):
    return torch.nn.functional.linear(x, weight, bias)


_CHUNK_POSITIONS = 8192     # batch rows x length per chunk of the fused Mamba block (bounds its working set)


def _row_chunks(batch: int, length: int) -> list:
    rows = max(1, _CHUNK_POSITIONS // max(1, length))
    return [(r, min(batch, r + rows)) for r in range(0, batch, rows)]


class NativeMamba(torch.autograd.Function):
    """The whole Mamba block, fused: hidden [B, L, d_model] -> out [B, L, d_model].

    xz = in_proj(hidden); x, z = halves; xc = SiLU(causal depthwise conv(x)); (dt, B, C) = x_proj(xc);
    delta = softplus(dt_proj(dt)); selective scan with A = -exp(A_log) and the D skip; y *= SiLU(z); out_proj(y).
    Saves the block's input and the parameters only (mamba_ssm's mamba_inner_fn saves xz, xc and more): the
    backward recomputes xz, xc and x_proj(xc) with cheap matmul/conv passes, gets y back from the scan kernel's own
    recompute pass, and writes the gradients of both halves of xz straight into one buffer. Both directions go
    through the batch in chunks of about 8,192 positions, so the intermediates never exist for the whole batch.
    """

    @staticmethod
    @torch.autocast("cpu", enabled=False)            # float32 kernels: the matmuls around them stay float32 too
    def forward(ctx, hidden, w_in, b_in, conv_w, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A_log, D, w_out, b_out):
        lib = _library()
        d_inner = w_in.shape[0] // 2
        rank, d_state = dt_proj_w.shape[1], A_log.shape[1]
        conv_w2, conv_b, x_proj_w, dt_proj_w, dt_proj_b, D = (
            _opt(t) for t in (conv_w.reshape(d_inner, -1), conv_b, x_proj_w, dt_proj_w, dt_proj_b, D))
        A = -torch.exp(A_log.detach())
        batch, length, d_model = hidden.shape
        out = hidden.new_empty(batch, length, w_out.shape[0])
        for r0, r1 in _row_chunks(batch, length):
            xz = _linear(hidden[r0:r1], w_in, b_in)
            parts = _split(r1 - r0)
            xc, _conv_args = _conv(lib, xz[..., :d_inner], conv_w2, conv_b, parts)
            xdbl = (xc.view(-1, d_inner) @ x_proj_w.T).view(*xc.shape[:2], -1)
            y = xz.new_empty(xc.shape)
            args = _scan_inputs(xc, xdbl[..., :rank], A, xdbl[..., rank:rank + d_state], xdbl[..., rank + d_state:],
                                D, xz[..., d_inner:], dt_proj_b, True, W=dt_proj_w)
            _run(parts, lambda b0, b1, i, args=args, y=y: lib.ss_forward(ctypes.byref(args), b0, b1, y.data_ptr(),
                                                                         None))
            del xz, xc, xdbl
            out[r0:r1] = _linear(y, w_out, b_out)
        ctx.save_for_backward(hidden, w_in, b_in, conv_w2, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A, D, w_out,
                              b_out)
        ctx.conv_shape = conv_w.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    @torch.autocast("cpu", enabled=False)
    def backward(ctx, gout):
        lib = _library()
        hidden, w_in, b_in, conv_w, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A, D, w_out, b_out = ctx.saved_tensors
        gout = gout.contiguous()
        batch, length, d_model = hidden.shape
        d_inner, rank, d_state = w_in.shape[0] // 2, dt_proj_w.shape[1], A.shape[1]
        n_parts = len(_split(batch))
        acc = _partials(gout, n_parts, d_inner, d_state, rank, D is not None, True)
        g_conv_w = gout.new_zeros(n_parts, *conv_w.shape)
        g_conv_b = gout.new_zeros(n_parts, d_inner) if conv_b is not None else None
        g_hidden = torch.empty_like(hidden)
        g_w_in, g_x_proj, g_w_out = torch.zeros_like(w_in), torch.zeros_like(x_proj_w), torch.zeros_like(w_out)
        g_b_in = torch.zeros_like(b_in) if b_in is not None else None
        for r0, r1 in _row_chunks(batch, length):
            h = hidden[r0:r1]
            parts = _split(r1 - r0)
            xz = _linear(h, w_in, b_in)                                      # recomputed
            xc, conv_args = _conv(lib, xz[..., :d_inner], conv_w, conv_b, parts)
            xdbl = (xc.view(-1, d_inner) @ x_proj_w.T).view(*xc.shape[:2], -1)
            g2 = gout[r0:r1].view(-1, d_model)
            gy = (g2 @ w_out).view(*xc.shape)
            y, gxz, gxc, gxdbl = (xz.new_empty(t.shape) for t in (xc, xz, xc, xdbl))
            args = _scan_inputs(xc, xdbl[..., :rank], A, xdbl[..., rank:rank + d_state], xdbl[..., rank + d_state:],
                                D, xz[..., d_inner:], dt_proj_b, True, W=dt_proj_w)
            _scan_backward(lib, args, gy, gxc, gxdbl[..., :rank], gxz[..., d_inner:], gxdbl[..., rank:rank + d_state],
                           gxdbl[..., rank + d_state:], acc, parts, y=y)
            del gy, xdbl
            g_w_out.addmm_(g2.T, y.view(-1, d_inner))
            del y
            gxdbl2 = gxdbl.view(-1, gxdbl.shape[-1])
            g_x_proj.addmm_(gxdbl2.T, xc.view(-1, d_inner))
            gxc.view(-1, d_inner).addmm_(gxdbl2, x_proj_w)
            del gxdbl, gxdbl2, xc
            gx = gxz[..., :d_inner]
            _run(parts, lambda b0, b1, i, args=conv_args, g_in=gxc, gx=gx: lib.conv_backward(
                ctypes.byref(args), b0, b1, g_in.data_ptr(), d_inner, gx.data_ptr(), 2 * d_inner,
                g_conv_w[i].data_ptr(), g_conv_b[i].data_ptr() if g_conv_b is not None else None))
            del gxc, xz, conv_args
            gz2 = gxz.view(-1, 2 * d_inner)
            torch.mm(gz2, w_in, out=g_hidden[r0:r1].view(-1, d_model))
            g_w_in.addmm_(gz2.T, h.reshape(-1, d_model))
            if g_b_in is not None:
                g_b_in += gz2.sum(0)
            del gxz, gz2
        gA, gD, gbias, gW = (None if t is None else t.sum(0) for t in acc)
        g_b_out = gout.reshape(-1, d_model).sum(0) if b_out is not None else None
        return (g_hidden, g_w_in, g_b_in, g_conv_w.sum(0).view(ctx.conv_shape),
                g_conv_b.sum(0) if g_conv_b is not None else None, g_x_proj, gW, gbias, gA * A, gD, g_w_out, g_b_out)


def mamba_block(hidden, w_in, b_in, conv_w, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A_log, D, w_out, b_out):
    """See NativeMamba; the caller checks ``usable`` first."""
    return NativeMamba.apply(hidden, w_in, b_in, conv_w, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A_log, D, w_out,
                             b_out)


# ------------------------------------------------------------------------------------------------------------------
# S5's complex recurrence
# ------------------------------------------------------------------------------------------------------------------
def _s5_args(gaps, bu_r, x0_r, lam, es, inv):
    parts = [t.contiguous() for t in (lam.real, lam.imag, es, inv.real, inv.imag)]
    _check(gaps, bu_r, x0_r, *parts)
    args = S5Inputs(bu_r.shape[1], bu_r.shape[2], gaps.data_ptr(), bu_r.data_ptr(), _ptr(x0_r),
                     *[t.data_ptr() for t in parts])
    return args, parts                                   # the caller keeps `parts` alive while args is used


class NativeS5States(torch.autograd.Function):
    """S5's states with per-step ZOH, fused: xs [B, L, P] (complex64) from the gaps [B, L], B~u [B, L, P] (complex64),
    Lambda [P] (complex64), log_step [P] and an optional initial state x0 [B, P].

        Abar = exp(Lambda * gap * exp(log_step)),  x_t = Abar x_{t-1} + (Abar - 1) / Lambda * bu_t

    Saves the gaps, B~u, x0 and its own output; nothing of size [B, L, P] per intermediate: the backward
    recomputes Abar and the ZOH factor from the gaps. No gradient for the gaps (they are data).
    """

    @staticmethod
    def forward(ctx, gaps, bu, lam, log_step, x0):
        lib = _library()
        gaps = gaps.detach().to(torch.float32).contiguous()
        bu = bu.contiguous()
        x0 = x0.contiguous() if x0 is not None else None
        lam, log_step = lam.detach(), log_step.detach()
        es, inv = torch.exp(log_step), 1 / lam
        xs = torch.empty_like(bu)
        bu_r, xs_r = torch.view_as_real(bu), torch.view_as_real(xs)
        x0_r = torch.view_as_real(x0) if x0 is not None else None
        args, keep = _s5_args(gaps, bu_r, x0_r, lam, es, inv)
        _run(_split(bu.shape[0]), lambda b0, b1, i: lib.s5_forward(ctypes.byref(args), b0, b1, xs_r.data_ptr()))
        del keep
        ctx.save_for_backward(gaps, bu, x0, lam, log_step, xs)
        return xs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gxs):
        lib = _library()
        gaps, bu, x0, lam, log_step, xs = ctx.saved_tensors
        gxs = gxs.contiguous()
        _check(gxs, dtype=torch.complex64)
        es, inv = torch.exp(log_step), 1 / lam
        bu_r, xs_r, gxs_r = (torch.view_as_real(t) for t in (bu, xs, gxs))
        x0_r = torch.view_as_real(x0) if x0 is not None else None
        gbu = torch.empty_like(bu)
        gx0 = torch.empty_like(x0) if x0 is not None else None
        gbu_r = torch.view_as_real(gbu)
        gx0_r = torch.view_as_real(gx0) if gx0 is not None else None
        parts = _split(bu.shape[0])
        acc = torch.zeros(len(parts), 5, bu.shape[2], dtype=torch.float32)   # lre, lim, es, Re(1/L), Im(1/L)
        args, keep = _s5_args(gaps, bu_r, x0_r, lam, es, inv)
        _run(parts, lambda b0, b1, i: lib.s5_backward(
            ctypes.byref(args), b0, b1, xs_r.data_ptr(), gxs_r.data_ptr(), gbu_r.data_ptr(), _ptr(gx0_r),
            *[acc[i, k].data_ptr() for k in range(5)]))
        del keep
        g = acc.sum(0)
        # 1/Lambda is holomorphic: its gradient flows back as g_inv * conj(-1 / Lambda^2)
        g_lam = torch.complex(g[0], g[1]) + torch.complex(g[3], g[4]) * torch.conj(-inv * inv)
        return None, gbu, g_lam.to(lam.dtype), g[2] * es, gx0


def s5_states(gaps, bu, lam, log_step, x0=None) -> torch.Tensor:
    """See NativeS5States; the caller checks ``usable_complex(bu, x0)`` first."""
    return NativeS5States.apply(gaps, bu, lam, log_step, x0)
