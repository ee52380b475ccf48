"""Pure-PyTorch Mamba block: scan correctness (values and gradients), module maths, causality/padding, mamba_ssm
parameter compatibility, the single-token step API, and (when a GPU is present) the CUDA paths. The GPU branches
run on the CPU with stand-in kernels in tests/test_gpu_mamba_ssm.py."""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from recsys.models import native
from recsys.models.mamba import (
    Mamba,
    _selective_scan_indexed,
    fast_path_available,
    selective_scan,
    selective_scan_reference,
)

F64 = torch.float64


def _scan_inputs(batch=3, length=13, d_inner=6, d_state=5, dtype=F64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=dtype) * scale).to(device)

    u = r(batch, length, d_inner)
    delta = r(batch, length, d_inner, scale=0.7)
    A = -torch.exp(r(d_inner, d_state, scale=0.5))
    B = r(batch, length, d_state)
    C = r(batch, length, d_state)
    D = r(d_inner)
    z = r(batch, length, d_inner)
    delta_bias = r(d_inner, scale=0.3)
    return [u, delta, A, B, C, D, z, delta_bias]


def _run(fn, leaves, **kw):
    u, delta, A, B, C, D, z, delta_bias = leaves
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True, **kw)


# ---------------------------------------------------------------------------------------------------------------
# scans
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size,block_size", [(None, None), (1, 1), (4, 2), (13, 3), (50, None), (5, 100)])
def test_fast_scan_matches_reference_values_and_all_gradients(chunk_size, block_size):
    base = _scan_inputs()
    a = [t.clone().requires_grad_(True) for t in base]
    b = [t.clone().requires_grad_(True) for t in base]
    y1, h1 = _run(selective_scan, a, return_last_state=True, chunk_size=chunk_size, block_size=block_size)
    y2, h2 = _run(selective_scan_reference, b, return_last_state=True)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h1, h2, rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(1)
    wy = torch.randn(y1.shape, generator=gen, dtype=F64)
    wh = torch.randn(h1.shape, generator=gen, dtype=F64)
    g1 = torch.autograd.grad((y1 * wy).sum() + (h1 * wh).sum(), a)
    g2 = torch.autograd.grad((y2 * wy).sum() + (h2 * wh).sum(), b)
    for name, x1, x2 in zip(["u", "delta", "A", "B", "C", "D", "z", "delta_bias"], g1, g2):
        torch.testing.assert_close(x1, x2, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"grad {n}: {m}")


def test_fast_scan_gradcheck_without_optional_inputs():
    u, delta, A, B, C, *_ = _scan_inputs(batch=2, length=6, d_inner=3, d_state=2)
    leaves = [t.clone().requires_grad_(True) for t in (u, delta, A, B, C)]
    assert torch.autograd.gradcheck(lambda *t: selective_scan(*t, chunk_size=4, block_size=1), leaves)
    assert torch.autograd.gradcheck(
        lambda *t: selective_scan(*t, return_last_state=True, chunk_size=2)[1], leaves)


def test_reference_scan_matches_explicit_recurrence_and_indexed_variant():
    u, delta, A, B, C, D, z, db = _scan_inputs(batch=2, length=5, d_inner=3, d_state=2)
    dt = F.softplus(delta + db)
    y = torch.zeros_like(u)
    for b in range(2):
        for d in range(3):
            for n in range(2):
                h = 0.0
                for t in range(5):
                    h = math.exp(dt[b, t, d] * A[d, n]) * h + dt[b, t, d] * B[b, t, n] * u[b, t, d]
                    y[b, t, d] += h * C[b, t, n]
    y = (y + D * u) * F.silu(z)
    torch.testing.assert_close(selective_scan_reference(u, delta, A, B, C, D, z, db, True), y, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(_selective_scan_indexed(u, delta, A, B, C, D, z, db, True), y, rtol=1e-12,
                               atol=1e-12)


def test_scan_float32_and_no_grad():
    leaves = _scan_inputs(dtype=torch.float32)
    with torch.no_grad():
        y1 = _run(selective_scan, leaves)
    y2 = _run(selective_scan_reference, leaves)
    assert y1.dtype == torch.float32 and not y1.requires_grad
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)


def test_scan_shape_errors():
    u, delta, A, B, C, *_ = _scan_inputs()
    with pytest.raises(ValueError):
        selective_scan(u, delta, A, B.transpose(1, 2), C)
    with pytest.raises(ValueError):
        selective_scan(u, delta[:, :-1], A, B, C)


# ---------------------------------------------------------------------------------------------------------------
# module
# ---------------------------------------------------------------------------------------------------------------
def _slow_module_forward(m: Mamba, x: torch.Tensor) -> torch.Tensor:
    """The block written out op by op (explicit conv taps, reference scan), independent of the module's code path."""
    length = x.shape[1]
    xz = x @ m.in_proj.weight.T
    xi, z = xz[..., : m.d_inner], xz[..., m.d_inner:]
    w = m.conv1d.weight[:, 0, :]                                         # [d_inner, d_conv]
    xc = m.conv1d.bias.expand_as(xi)
    for k in range(m.d_conv):                                           # tap k looks back d_conv-1-k steps
        back = m.d_conv - 1 - k
        if back < length:
            xc = xc + F.pad(w[:, k] * xi[:, : length - back], (0, 0, back, 0))
    xc = F.silu(xc)
    x_dbl = xc @ m.x_proj.weight.T
    dt = x_dbl[..., : m.dt_rank] @ m.dt_proj.weight.T + m.dt_proj.bias
    B = x_dbl[..., m.dt_rank: m.dt_rank + m.d_state]
    C = x_dbl[..., m.dt_rank + m.d_state:]
    y = selective_scan_reference(xc, F.softplus(dt), -torch.exp(m.A_log), B, C, m.D, z)
    return y @ m.out_proj.weight.T


def _module(seed=0, dtype=F64, **kw):
    torch.manual_seed(seed)
    m = Mamba(**kw).to(dtype)
    with torch.no_grad():                                               # make every parameter matter
        m.conv1d.bias.normal_(0, 0.5)
        m.D.normal_(1, 0.5)
    return m


def test_module_matches_slow_reference_forward_and_backward():
    m = _module()
    x = torch.randn(3, 9, 64, dtype=F64)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    out = m(x1)
    assert out.shape == (3, 9, 64) and m.last_path == "pure"
    ref = _slow_module_forward(m, x2)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(out)
    params = list(m.parameters())
    g1 = torch.autograd.grad((out * w).sum(), [x1] + params)
    g2 = torch.autograd.grad((ref * w).sum(), [x2] + params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_module_float32_runs_and_trains():
    torch.manual_seed(0)
    m = Mamba()
    x = torch.randn(4, 20, 64)
    out = m(x)
    out.square().mean().backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_causality_and_right_padding():
    m = _module()
    x = torch.randn(2, 12, 64, dtype=F64)
    full = m(x)
    changed = x.clone()
    changed[:, 7:] = torch.randn(2, 5, 64, dtype=F64) * 3
    torch.testing.assert_close(m(changed)[:, :7], full[:, :7], rtol=0, atol=0)
    padded = x.clone()
    padded[:, 7:] = 0.0                                                  # SS4Rec right-pads with zeros
    torch.testing.assert_close(m(padded)[:, :7], full[:, :7], rtol=0, atol=0)
    torch.testing.assert_close(m(x[:, :7]), full[:, :7], rtol=1e-12, atol=1e-12)  # == the unpadded prefix
    # gradients never flow from later outputs into earlier inputs
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m(xg)[:, :5].sum(), xg)
    assert g[:, 5:].abs().max() == 0 and g[:, :5].abs().max() > 0


def test_length_one_and_short_sequences():
    m = _module()
    x = torch.randn(4, 1, 64, dtype=F64, requires_grad=True)
    out = m(x)
    assert out.shape == (4, 1, 64)
    torch.testing.assert_close(out, _slow_module_forward(m, x), rtol=1e-10, atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    x2 = torch.randn(2, 2, 64, dtype=F64)                                  # shorter than d_conv
    torch.testing.assert_close(m(x2), _slow_module_forward(m, x2), rtol=1e-10, atol=1e-12)


MAMBA_SSM_SHAPES = {  # mamba_ssm.modules.mamba_simple.Mamba(d_model=64, d_state=32, d_conv=4, expand=2)
    "A_log": (128, 32),
    "D": (128,),
    "in_proj.weight": (256, 64),
    "conv1d.weight": (128, 1, 4),
    "conv1d.bias": (128,),
    "x_proj.weight": (4 + 2 * 32, 128),
    "dt_proj.weight": (128, 4),
    "dt_proj.bias": (128,),
    "out_proj.weight": (64, 128),
}


def test_parameter_names_shapes_and_init_match_mamba_ssm():
    torch.manual_seed(0)
    m = Mamba(d_model=64, d_state=32, d_conv=4, expand=2)
    assert m.d_inner == 128 and m.dt_rank == 4
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == MAMBA_SSM_SHAPES
    assert {k for k, _ in m.named_parameters()} == set(MAMBA_SSM_SHAPES)
    torch.testing.assert_close(m.A_log, torch.log(torch.arange(1, 33, dtype=torch.float32)).repeat(128, 1))
    torch.testing.assert_close(m.D, torch.ones(128))
    assert m.dt_proj.weight.abs().max() <= 4 ** -0.5
    dt = F.softplus(m.dt_proj.bias)                                       # inverse-softplus init
    assert dt.min() >= 1e-4 - 1e-9 and dt.min() >= 0.001 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert dt.std() > 0
    assert m.dt_proj.bias._no_reinit and m.A_log._no_weight_decay and m.D._no_weight_decay
    assert Mamba(d_model=64, bias=True).in_proj.bias.shape == (256,)
    assert Mamba(d_model=100).dt_rank == 7


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = Mamba()
    torch.manual_seed(1)
    b = Mamba()
    x = torch.randn(2, 10, 64)
    assert not torch.allclose(a(x), b(x))
    missing = b.load_state_dict(a.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_step_matches_full_forward_and_prefill():
    m = _module()
    x = torch.randn(3, 10, 64, dtype=F64)
    full, (conv_full, ssm_full) = m(x, return_state=True)
    conv_state, ssm_state = m.allocate_state(3)
    assert conv_state.shape == (3, 128, 4) and ssm_state.shape == (3, 128, 32) and conv_state.dtype == F64
    c0, s0 = conv_state.clone(), ssm_state.clone()
    outs = []
    state = (conv_state, ssm_state)
    for t in range(10):
        o, *state = m.step(x[:, t], *state)
        outs.append(o)
    torch.testing.assert_close(conv_state, c0, rtol=0, atol=0)            # functional: inputs untouched
    torch.testing.assert_close(ssm_state, s0, rtol=0, atol=0)
    torch.testing.assert_close(torch.stack(outs, 1), full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state[0], conv_full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state[1], ssm_full, rtol=1e-10, atol=1e-12)
    # prefill 6 tokens in one call, continue with step; [B, 1, d] input keeps its shape
    _, (cs, ss) = m(x[:, :6], return_state=True)
    for t in range(6, 10):
        o, cs, ss = m.step(x[:, t: t + 1], cs, ss)
        assert o.shape == (3, 1, 64)
        torch.testing.assert_close(o[:, 0], full[:, t], rtol=1e-10, atol=1e-12)
    # prefill shorter than d_conv
    _, (cs, ss) = m(x[:, :2], return_state=True)
    o, cs, ss = m.step(x[:, 2], cs, ss)
    torch.testing.assert_close(o, full[:, 2], rtol=1e-10, atol=1e-12)


def test_fast_path_flag_and_cpu_fallback():
    m = Mamba(use_fast_path=True)
    m(torch.randn(1, 3, 64))
    # a CPU input never takes mamba_ssm's CUDA path: our C kernels where they build, else pure PyTorch
    assert m.last_path == ("native" if native.available() else "pure")
    m64 = Mamba().double()
    m64(torch.randn(1, 3, 64, dtype=torch.float64))
    assert m64.last_path == "pure"                                        # the kernels are float32 only
    assert isinstance(fast_path_available(), bool)
    if not torch.cuda.is_available():
        assert fast_path_available() is False
    with pytest.raises(ValueError):
        Mamba(use_fast_path="yes")


# the calls into mamba_ssm's kernels (stand-ins on the CPU) and the path rules: tests/test_gpu_mamba_ssm.py


# ---------------------------------------------------------------------------------------------------------------
# GPU (skipped without CUDA / mamba_ssm)
# ---------------------------------------------------------------------------------------------------------------
HAS_CUDA = torch.cuda.is_available()
HAS_MAMBA_SSM = HAS_CUDA and importlib.util.find_spec("mamba_ssm") is not None and fast_path_available()


@pytest.mark.skipif(not HAS_MAMBA_SSM, reason="needs CUDA and an importable mamba_ssm")
def test_gpu_fast_path_matches_pure_path():
    torch.manual_seed(0)
    fast = Mamba().cuda()
    pure = Mamba(use_fast_path=False).cuda()
    pure.load_state_dict(fast.state_dict())
    x = torch.randn(8, 50, 64, device="cuda")
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    o1, o2 = fast(x1), pure(x2)
    assert fast.last_path in ("mamba_inner_fn", "selective_scan_fn") and pure.last_path == "pure"
    torch.testing.assert_close(o1, o2, rtol=1e-3, atol=1e-4)
    w = torch.randn_like(o1)
    g1 = torch.autograd.grad((o1 * w).sum(), [x1] + list(fast.parameters()))
    g2 = torch.autograd.grad((o2 * w).sum(), [x2] + list(pure.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3 * b.abs().max().item() + 1e-5)
    # the scan-only kernel route (used when return_state is asked) agrees too
    o3, (_, h3) = fast(x, return_state=True)
    assert fast.last_path == "selective_scan_fn"
    o4, (_, h4) = pure(x, return_state=True)
    torch.testing.assert_close(o3, o4, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(h3, h4, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_pure_path_matches_cpu_pure_path():
    m_cpu = _module()
    m_gpu = Mamba(use_fast_path=False).to(F64).cuda()
    m_gpu.load_state_dict(m_cpu.state_dict())
    x = torch.randn(4, 30, 64, dtype=F64)
    xc, xg = x.clone().requires_grad_(True), x.cuda().requires_grad_(True)
    oc, og = m_cpu(xc), m_gpu(xg)
    assert m_gpu.last_path == "pure"
    torch.testing.assert_close(og.cpu(), oc, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(oc)
    gc = torch.autograd.grad((oc * w).sum(), [xc] + list(m_cpu.parameters()))
    gg = torch.autograd.grad((og * w.cuda()).sum(), [xg] + list(m_gpu.parameters()))
    for a, b in zip(gc, gg):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-9, atol=1e-10)
