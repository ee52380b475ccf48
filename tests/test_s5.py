"""TimeAwareS5: parity with s5-pytorch (weights, outputs, gradients), scan agreement, step API, padding, memory."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from recsys.models import native
from recsys.models.s5 import TimeAwareS5, hippo_legs_diagonal, parallel_scan, sequential_scan

s5 = pytest.importorskip("s5")

H, P = 64, 32          # SS4Rec: S5(64, 32, dt_min=1e-3, dt_max=0.1)
TOL = {torch.float64: (1e-12, 1e-14), torch.float32: (1e-5, 1e-7)}   # (relative to max |ref|, absolute)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def to_precision(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast every parameter: real ones to dtype, complex ones to the matching complex dtype (Module.double() would
    leave complex parameters alone, and Module.to(float64) would drop their imaginary parts)."""
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    for prm in module.parameters():
        prm.data = prm.data.to(cdtype if prm.is_complex() else dtype)
    return module


def pair(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    theirs = s5.S5(H, P, dt_min=1e-3, dt_max=0.1)
    ours = TimeAwareS5(H, P, dt_min=1e-3, dt_max=0.1)
    ours.load_state_dict(theirs.state_dict())
    return to_precision(ours, dtype), to_precision(theirs, dtype)


def close(actual, expected, dtype, what=""):
    rtol, atol = TOL[dtype]
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= atol + rtol * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def close_grads(grads, grads_ref, dtype, what=""):
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        # s5-pytorch casts B to complex64 inside its forward (as_complex), so its B gradient is only float32-exact
        dt_ = torch.float32 if (name == "seq.B" and dtype == torch.float64) else dtype
        rtol, atol = TOL[dt_]
        if dt_ != dtype:
            rtol, atol = 1e-6, 1e-9
        scale = grads_ref[name].abs().max().item()
        err = (grads[name] - grads_ref[name]).abs().max().item()
        assert torch.isfinite(grads[name]).all(), f"{what} grad {name}: non-finite"
        assert err <= atol + rtol * scale, f"{what} grad {name}: max error {err:.3g} vs scale {scale:.3g}"


def forward_backward(module, call, u, weight):
    module.zero_grad()
    u = u.detach().clone().requires_grad_(True)
    y = call(module, u)
    (y * weight).sum().backward()
    grads = {"u": u.grad.detach().clone()}
    grads.update({name: prm.grad.detach().clone() for name, prm in module.named_parameters()})
    return y.detach(), grads


def gaps(kind: str, bsz: int, length: int, gen: torch.Generator, dtype) -> torch.Tensor:
    """Gaps in seconds, as SS4Rec feeds them (raw Unix-second differences)."""
    if kind == "random":       # seconds .. a week, a quarter of them exactly 0 (ties in MovieLens)
        dt = (10 ** (torch.rand(bsz, length, generator=gen, dtype=torch.float64) * 5.8)).floor()
        dt[torch.rand(bsz, length, generator=gen) < 0.25] = 0
    elif kind == "zero":
        dt = torch.zeros(bsz, length, dtype=torch.float64)
    elif kind == "huge":       # 1e6 .. 1e9 seconds: Abar underflows to 0 in both precisions
        dt = (10 ** (6 + 3 * torch.rand(bsz, length, generator=gen, dtype=torch.float64))).floor()
    elif kind == "mixed":      # zero, sub-second, moderate and huge gaps next to each other
        choices = torch.tensor([0.0, 0.5, 1.0, 37.0, 3600.0, 86400.0, 1e8, 1e9], dtype=torch.float64)
        dt = choices[torch.randint(len(choices), (bsz, length), generator=gen)]
    else:
        raise ValueError(kind)
    return dt.to(dtype)


def theirs_call(dt):
    return lambda m, u: m(u, step_scale=dt)       # how SS4Rec's released code calls s5-pytorch


def ours_call(dt, **kw):
    return lambda m, u: m(u, dt, **kw)


# ----------------------------------------------------------------------------------------------------------------
# parameters and initialisation
# ----------------------------------------------------------------------------------------------------------------
def test_state_dict_layout_matches_s5_pytorch_both_ways():
    torch.manual_seed(0)
    theirs = s5.S5(H, P, dt_min=1e-3, dt_max=0.1)
    ours = TimeAwareS5(H, P, dt_min=1e-3, dt_max=0.1)
    layout = lambda m: {k: (tuple(v.shape), v.dtype) for k, v in m.state_dict().items()}
    assert layout(ours) == layout(theirs)
    assert layout(ours) == {"seq.Lambda": ((P,), torch.complex64), "seq.B": ((P, H, 2), torch.float32),
                            "seq.C": ((H, P), torch.complex64), "seq.D": ((H,), torch.float32),
                            "seq.log_step": ((P,), torch.float32)}
    # HiPPO-LegS diagonal init: same eigenvalues, same order as s5-pytorch
    assert torch.allclose(ours.seq.Lambda, theirs.seq.Lambda, rtol=0, atol=1e-4)
    lam, v = hippo_legs_diagonal(P)
    assert torch.allclose(torch.as_tensor(lam).to(torch.complex64), theirs.seq.Lambda.detach(), atol=1e-4)
    assert torch.allclose(torch.as_tensor(v.conj().T @ v), torch.eye(P, dtype=torch.complex128), atol=1e-10)
    # log_step drawn in [log dt_min, log dt_max]
    assert (ours.seq.log_step >= math.log(1e-3)).all() and (ours.seq.log_step <= math.log(0.1)).all()
    # ours -> theirs and theirs -> ours
    ours2 = TimeAwareS5(H, P)
    ours2.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    for key, val in ours.state_dict().items():
        assert torch.equal(theirs.state_dict()[key], val)
    # the initial scales match s5-pytorch's recipe (B: fan-in P, C: fan-in P*H, D ~ U(0,1))
    rms = lambda t: t.detach().abs().pow(2).mean().sqrt().item()
    big_ours, big_theirs = TimeAwareS5(256, 128), s5.S5(256, 128)
    for name in ("B", "C"):
        r = rms(getattr(big_ours.seq, name)) / rms(getattr(big_theirs.seq, name))
        assert 0.9 < r < 1.1, (name, r)


@pytest.mark.parametrize("kwargs", [dict(factor_rank=4), dict(liquid=True), dict(degree=2), dict(bidir=True),
                                    dict(discretization="bilinear"), dict(bcInit="dense_columns")])
def test_unsupported_options_raise(kwargs):
    with pytest.raises(NotImplementedError):
        TimeAwareS5(16, 8, **kwargs)


def test_supported_init_variants_keep_the_layout():
    for kwargs in (dict(bcInit="complex_normal"), dict(block_count=4)):
        torch.manual_seed(0)
        m = TimeAwareS5(16, 8, **kwargs)
        ref = s5.S5(16, 8, **kwargs)
        m.load_state_dict(ref.state_dict())
        u, dt = torch.randn(2, 5, 16), torch.rand(2, 5) * 10
        close(m(u, dt), ref(u, step_scale=dt).detach(), torch.float32, str(kwargs))


# ----------------------------------------------------------------------------------------------------------------
# parity with s5-pytorch: outputs and gradients (input and every parameter)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,scan", [(torch.float64, "sequential"), (torch.float64, "parallel"),
                                        (torch.float32, "sequential"), (torch.float32, "parallel"),
                                        (torch.float32, "native")],      # the native kernel is complex64 only
                         ids=["f64-sequential", "f64-parallel", "f32-sequential", "f32-parallel", "f32-native"])
@pytest.mark.parametrize("kind", ["random", "zero", "huge", "mixed"])
def test_matches_s5_pytorch(dtype, kind, scan):
    if scan == "native" and not native.available():
        pytest.skip(f"native kernels unavailable: {native.status()}")
    ours, theirs = pair(dtype)
    gen = torch.Generator().manual_seed(1)
    bsz, length = 3, 13
    u = torch.randn(bsz, length, H, generator=gen, dtype=dtype)
    w = torch.randn(bsz, length, H, generator=gen, dtype=dtype)
    dt = gaps(kind, bsz, length, gen, dtype)
    y_ref, g_ref = forward_backward(theirs, theirs_call(dt), u, w)
    y, g = forward_backward(ours, ours_call(dt, scan=scan), u, w)
    close(y, y_ref, dtype, "y")
    close_grads(g, g_ref, dtype)
    if kind == "zero":   # nothing is ever written into the state: y = D u exactly
        close(y, ours.seq.D.detach() * u, dtype, "y = D u")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_matches_s5_pytorch_on_padded_batch_and_length_one(dtype):
    ours, theirs = pair(dtype, seed=3)
    gen = torch.Generator().manual_seed(4)
    lengths = [11, 6, 1, 0]
    bsz, length = len(lengths), max(lengths)
    u = torch.randn(bsz, length, H, generator=gen, dtype=dtype)
    dt = gaps("random", bsz, length, gen, dtype) + 1
    for b, n in enumerate(lengths):          # trailing padding: zero embedding, zero gap
        u[b, n:] = 0
        dt[b, n:] = 0
    w = torch.randn(bsz, length, H, generator=gen, dtype=dtype)
    y_ref, g_ref = forward_backward(theirs, theirs_call(dt), u, w)
    scans = ("sequential", "parallel") + (("native",) if dtype == torch.float32 and native.available() else ())
    for scan in scans:
        y, g = forward_backward(ours, ours_call(dt, scan=scan), u, w)
        close(y, y_ref, dtype, f"{scan} y")
        close_grads(g, g_ref, dtype, scan)
    # length-1 sequences (L = 1)
    u1, dt1, w1 = u[:, :1], dt[:, :1] + 5, w[:, :1]
    y_ref, g_ref = forward_backward(theirs, theirs_call(dt1), u1, w1)
    for scan in scans:
        y, g = forward_backward(ours, ours_call(dt1, scan=scan), u1, w1)
        close(y, y_ref, dtype, f"L=1 {scan} y")
        close_grads(g, g_ref, dtype, f"L=1 {scan}")


def test_step_scale_forms_and_initial_state_match_s5_pytorch():
    ours, theirs = pair(torch.float64, seed=5)
    gen = torch.Generator().manual_seed(6)
    u = torch.randn(2, 7, H, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        # float and per-sequence [B] scales, as s5-pytorch accepts them
        close(ours(u, 0.7), theirs(u, step_scale=0.7), torch.float64, "float scale")
        per_seq = torch.tensor([0.3, 40.0], dtype=torch.float64)
        close(ours(u, per_seq), theirs(u, step_scale=per_seq), torch.float64, "[B] scale")
        close(ours(u), theirs(u), torch.float64, "default scale 1")
        # step_scale= keyword (SS4Rec's spelling) and int64 seconds
        dt = torch.randint(0, 5000, (2, 7), generator=gen)
        close(ours(u, step_scale=dt), ours(u, dt.double()), torch.float64, "int64 gaps")
        # an injected initial state and the returned state
        state = torch.randn(2, P, generator=gen, dtype=torch.complex128)
        y_ref, last_ref = theirs(u, step_scale=dt.double(), state=state, return_state=True)
        for scan in ("sequential", "parallel"):
            y, xs = ours(u, dt, state=state, return_state=True, scan=scan)
            assert xs.shape == (2, 7, P) and xs.dtype == torch.complex128
            close(y, y_ref, torch.float64, f"{scan} y with state")
            close(xs[:, -1], last_ref, torch.float64, f"{scan} last state")
        # splitting a sequence and carrying the state equals running it whole
        y_full, xs_full = ours(u, dt, return_state=True)
        y_a, xs_a = ours(u[:, :3], dt[:, :3], return_state=True)
        y_b = ours(u[:, 3:], dt[:, 3:], state=xs_a[:, -1])
        close(torch.cat([y_a, y_b], 1), y_full, torch.float64, "split sequence")


# ----------------------------------------------------------------------------------------------------------------
# the two scans
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64])
def test_parallel_scan_equals_sequential_scan(chunk_size):
    torch.manual_seed(7)
    m = to_precision(TimeAwareS5(H, P, chunk_size=chunk_size), torch.float64)
    gen = torch.Generator().manual_seed(8)
    bsz, length = 3, 37                                     # not a multiple of any chunk size
    u = torch.randn(bsz, length, H, generator=gen, dtype=torch.float64)
    w = torch.randn(bsz, length, H, generator=gen, dtype=torch.float64)
    dt = gaps("mixed", bsz, length, gen, torch.float64)
    dt[0] = gaps("random", 1, length, gen, torch.float64)
    dt[1, 5:] = 0                                           # a long run of Abar = 1
    y_s, g_s = forward_backward(m, ours_call(dt, scan="sequential"), u, w)
    y_p, g_p = forward_backward(m, ours_call(dt, scan="parallel"), u, w)
    close(y_p, y_s, torch.float64, "y")
    for name in g_s:
        close(g_p[name], g_s[name], torch.float64, f"grad {name}")
    with torch.no_grad():
        state = torch.randn(bsz, P, generator=gen, dtype=torch.complex128)
        _, xs_s = m(u, dt, state=state, return_state=True, scan="sequential")
        _, xs_p = m(u, dt, state=state, return_state=True, scan="parallel")
        close(xs_p, xs_s, torch.float64, "states with initial state")


def test_scan_functions_are_stable_for_zero_and_unit_decay():
    gen = torch.Generator().manual_seed(9)
    bsz, length = 4, 50
    a = torch.complex(torch.rand(bsz, length, 6, generator=gen), torch.zeros(bsz, length, 6))
    a[:, ::7] = 0                       # full resets (huge gaps)
    a[:, 3::5] = 1                      # carried states (dt = 0)
    a[2] = 0                            # every step a reset
    a[3] = 1                            # never decays
    b = torch.randn(bsz, length, 6, dtype=torch.complex64, generator=gen) * 1e3
    a.requires_grad_(True)
    b.requires_grad_(True)
    xs = sequential_scan(a, b)
    xp = parallel_scan(a, b, chunk_size=8)
    assert torch.isfinite(torch.view_as_real(xp)).all()
    close(torch.view_as_real(xp), torch.view_as_real(xs), torch.float32, "scan")
    assert torch.equal(xs[2], b[2])                                  # reset every step: x_k = b_k
    close(torch.view_as_real(xs[3]), torch.view_as_real(b[3].cumsum(0)), torch.float32, "cumsum")
    g = torch.randn(bsz, length, 6, dtype=torch.complex64, generator=gen)
    ga_s, gb_s = torch.autograd.grad((xs * g.conj()).real.sum(), (a, b))
    ga_p, gb_p = torch.autograd.grad((xp * g.conj()).real.sum(), (a, b))
    for x, y in ((ga_p, ga_s), (gb_p, gb_s)):
        assert torch.isfinite(torch.view_as_real(x)).all()
        close(torch.view_as_real(x), torch.view_as_real(y), torch.float32, "scan grads")


def test_scan_argument_validation():
    m = TimeAwareS5(8, 4)
    u = torch.randn(1, 3, 8)
    with pytest.raises(ValueError):
        m(u, torch.ones(1, 3), scan="blelloch")
    with pytest.raises(ValueError):
        TimeAwareS5(8, 4, scan="nope")
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            m(u, torch.tensor([[1.0, bad, 1.0]]))
    with pytest.raises(ValueError):
        m(u, torch.ones(2, 3))
    assert m._resolve_scan("auto", torch.device("cpu")) == ("native" if native.available() else "sequential")
    assert m.double()._resolve_scan("auto", torch.device("cpu")) == "sequential"     # the kernel is complex64


# ----------------------------------------------------------------------------------------------------------------
# incremental inference, padding, retention
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scan", ["sequential", "parallel"])
def test_step_api_reproduces_forward(scan):
    torch.manual_seed(10)
    m = to_precision(TimeAwareS5(H, P), torch.float64)
    gen = torch.Generator().manual_seed(11)
    bsz, length = 3, 12
    u = torch.randn(bsz, length, H, generator=gen, dtype=torch.float64)
    dt = gaps("mixed", bsz, length, gen, torch.float64)
    with torch.no_grad():
        y, xs = m(u, dt, return_state=True, scan=scan)
        x = None
        for k in range(length):
            y_k, x = m.step(u[:, k], dt[:, k], x)
            close(y_k, y[:, k], torch.float64, f"y step {k}")
            close(torch.view_as_real(x), torch.view_as_real(xs[:, k]), torch.float64, f"x step {k}")
        # starting from initial_state() is the same as starting from None
        y0, x0 = m.step(u[:, 0], dt[:, 0], m.initial_state(bsz))
        close(y0, y[:, 0], torch.float64, "initial_state")
        # a float gap works for the whole batch
        y_f, _ = m.step(u[:, 0], 30.0)
        close(y_f, m(u[:, :1], torch.full((bsz, 1), 30.0, dtype=torch.float64))[:, 0], torch.float64, "float gap")


def test_padding_carries_the_state_and_does_not_leak_into_real_positions():
    torch.manual_seed(12)
    m = to_precision(TimeAwareS5(H, P), torch.float64)
    gen = torch.Generator().manual_seed(13)
    n, pad = 6, 5
    u = torch.randn(1, n, H, generator=gen, dtype=torch.float64)
    dt = gaps("random", 1, n, gen, torch.float64) + 1
    u_pad = torch.cat([u, torch.zeros(1, pad, H, dtype=torch.float64)], 1)
    dt_pad = torch.cat([dt, torch.zeros(1, pad, dtype=torch.float64)], 1)
    with torch.no_grad():
        for scan in ("sequential", "parallel"):
            y, xs = m(u, dt, return_state=True, scan=scan)
            y_p, xs_p = m(u_pad, dt_pad, return_state=True, scan=scan)
            close(y_p[:, :n], y, torch.float64, "real positions")
            for k in range(n, n + pad):              # padded positions: the last real state, carried exactly
                close(torch.view_as_real(xs_p[:, k]), torch.view_as_real(xs[:, -1]), torch.float64, f"pad {k}")
            # leading padding keeps the zero state
            _, xs_l = m(torch.cat([torch.zeros(1, pad, H, dtype=torch.float64), u], 1),
                        torch.cat([torch.zeros(1, pad, dtype=torch.float64), dt], 1), return_state=True, scan=scan)
            assert torch.equal(xs_l[:, :pad], torch.zeros_like(xs_l[:, :pad]))
            close(torch.view_as_real(xs_l[:, pad:]), torch.view_as_real(xs), torch.float64, "after leading pad")


def test_retention():
    torch.manual_seed(14)
    m = TimeAwareS5(H, P)
    dt = torch.tensor([0.0, 1.0, 60.0, 3600.0, 86400.0, 1e9])
    r = m.retention(dt)
    assert r.shape == dt.shape
    assert r[0].item() == pytest.approx(1.0)
    assert r[-1].item() == 0.0
    assert (r[1:] <= r[:-1]).all()                     # longer gaps keep less
    expected = torch.exp(m.seq.Lambda.real.detach() * dt[:, None] * torch.exp(m.seq.log_step.detach())).mean(-1)
    assert torch.allclose(r, expected)
    assert m.retention(dt.view(2, 3)).shape == (2, 3)
    assert m.retention(3600.0).shape == ()
    # retention is |Abar| of the actual recurrence: with zero input the state shrinks by exactly that factor
    with torch.no_grad():
        x0 = torch.ones(1, P, dtype=torch.complex64)
        _, x1 = m.step(torch.zeros(1, H), torch.tensor([3600.0]), x0)
        assert x1.abs().mean().item() == pytest.approx(m.retention(3600.0).item(), rel=1e-5)


def test_module_double_uses_float64_everywhere():
    torch.manual_seed(15)
    m = TimeAwareS5(16, 8).double()                   # leaves complex parameters in complex64
    u = torch.randn(2, 4, 16, dtype=torch.float64)
    y, xs = m(u, torch.rand(2, 4, dtype=torch.float64), return_state=True)
    assert y.dtype == torch.float64 and xs.dtype == torch.complex128


# ----------------------------------------------------------------------------------------------------------------
# memory: no [B, L, P, H] tensor (counted by elements, not wall-clock)
# ----------------------------------------------------------------------------------------------------------------
class _LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any aten op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _largest_saved_and_allocated(module, call, u):
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        call(module, u)
    mode = _LargestTensor()
    with mode:
        call(module, u).sum().backward()
    return max(saved), mode.largest


def test_no_b_l_p_h_tensor_unlike_s5_pytorch():
    ours, theirs = pair(torch.float32, seed=16)
    bsz, length = 4, 16
    blph = bsz * length * P * H                           # 131072; the largest legitimate tensor has 4096
    u = torch.randn(bsz, length, H, requires_grad=True)
    dt = torch.rand(bsz, length) * 100
    saved_theirs, alloc_theirs = _largest_saved_and_allocated(theirs, theirs_call(dt), u)
    assert saved_theirs >= blph and alloc_theirs >= blph   # the check does see s5-pytorch's Bbar
    for scan in ("sequential", "parallel"):
        saved, alloc = _largest_saved_and_allocated(ours, ours_call(dt, scan=scan), u)
        assert saved <= bsz * length * max(H, 2 * P), (scan, saved)
        assert alloc <= bsz * length * max(H, 2 * P), (scan, alloc)
