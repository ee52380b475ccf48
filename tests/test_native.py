"""Native CPU kernels (recsys/models/native): built with the machine's C compiler, held to the pure-PyTorch layers in
float64 (values and every gradient), wired into Mamba, S5 and SS4Rec, and a clean fallback when they cannot be built."""
from __future__ import annotations

import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F

from recsys.models import native
from recsys.models.mamba import Mamba, selective_scan, selective_scan_reference
from recsys.models.s5 import TimeAwareS5
from recsys.models.ss4rec import SS4Rec
from tests.helpers import _batch, ss4rec_loss

F32, F64 = torch.float32, torch.float64

needs_native = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().to(want.dtype), want.detach()
    scale = want.abs().max()
    return float((got - want).abs().max() / scale) if scale > 0 else float((got - want).abs().max())


@pytest.fixture
def restore_native(monkeypatch):
    """Tests that change RECSYS_NATIVE/CC/RECSYS_NATIVE_DIR get a fresh load, and leave a fresh load behind."""
    native.reset()
    yield monkeypatch
    monkeypatch.undo()
    native.reset()


@needs_native
def test_kernels_build_here():
    # CI has a compiler: the fast path must really be what the other tests here exercise
    assert native.status() == "available"


# ------------------------------------------------------------------------------------------------------------------
# selective scan
# ------------------------------------------------------------------------------------------------------------------
def _scan_inputs(batch, length, d_inner, d_state, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    return [r(batch, length, d_inner), r(batch, length, d_inner, scale=0.7) - 0.5,
            -torch.exp(r(d_inner, d_state, scale=0.5) + 0.5), r(batch, length, d_state), r(batch, length, d_state),
            r(d_inner), r(batch, length, d_inner), r(d_inner, scale=0.3)]


@needs_native
@pytest.mark.parametrize("shape", [(3, 9, 13, 5), (2, 1, 8, 4), (4, 40, 24, 16), (1, 3, 130, 7)])
@pytest.mark.parametrize("optional", [True, False])
@pytest.mark.parametrize("softplus", [True, False])
def test_native_scan_matches_reference_values_and_gradients(shape, optional, softplus):
    base = _scan_inputs(*shape)
    if not optional:
        base[5] = base[6] = base[7] = None                     # no D, z or delta bias
    if not softplus:
        base[1] = base[1].abs() * 0.3                           # a positive step without softplus
    ours = [t.clone().requires_grad_(True) if t is not None else None for t in base]
    ref = [t.double().requires_grad_(True) if t is not None else None for t in base]
    y = selective_scan(*ours[:5], D=ours[5], z=ours[6], delta_bias=ours[7], delta_softplus=softplus, native=True)
    y_ref = selective_scan_reference(*ref[:5], D=ref[5], z=ref[6], delta_bias=ref[7], delta_softplus=softplus)
    assert y.dtype == F32 and rel_err(y, y_ref) < 2e-6
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    (y * w).sum().backward()
    (y_ref * w.double()).sum().backward()
    for name, a, b in zip(["u", "delta", "A", "B", "C", "D", "z", "delta_bias"], ours, ref):
        if a is not None:
            assert rel_err(a.grad, b.grad) < 2e-5, name


@needs_native
def test_native_scan_last_state_and_no_grad():
    u, delta, A, B, C, D, z, bias = _scan_inputs(3, 11, 10, 6)
    with torch.no_grad():
        y, h = selective_scan(u, delta, A, B, C, D, z, bias, True, return_last_state=True)
    y_ref, h_ref = selective_scan_reference(u.double(), delta.double(), A.double(), B.double(), C.double(),
                                            D.double(), z.double(), bias.double(), True, return_last_state=True)
    assert rel_err(y, y_ref) < 2e-6 and rel_err(h, h_ref) < 2e-6
    # with a gradient wanted on the last state, the pure path runs (the kernel does not propagate into it)
    leaves = [t.clone().requires_grad_(True) for t in (u, delta, A, B, C)]
    _, h2 = selective_scan(*leaves, return_last_state=True)
    h2.sum().backward()
    assert leaves[0].grad is not None
    with pytest.raises(RuntimeError, match="native selective scan cannot run"):
        selective_scan(u.double(), delta.double(), A.double(), B.double(), C.double(), native=True)


@needs_native
def test_native_scan_strided_views_and_threads():
    """Inputs that are views with row strides (z half of in_proj, B/C columns of x_proj) need no copy and give the
    same answer; splitting the batch over threads changes nothing."""
    u, delta, A, B, C, D, z, bias = _scan_inputs(5, 17, 16, 8)
    xz = torch.cat([u, z], -1)                      # u, z as views of one [B, L, 2d] tensor
    bc = torch.cat([B, torch.randn(5, 17, 3), C], -1)
    uv, zv, Bv, Cv = xz[..., :16], xz[..., 16:], bc[..., :8], bc[..., 11:]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = selective_scan(uv, delta, A, Bv, Cv, D, zv, bias, True, native=True)
        torch.set_num_threads(3)
        y3 = selective_scan(uv, delta, A, Bv, Cv, D, zv, bias, True, native=True)
    finally:
        torch.set_num_threads(threads)
    y_ref = selective_scan(u, delta, A, B, C, D, z, bias, True, native=False)
    torch.testing.assert_close(y1, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y3, y1, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------------------
# the fused Mamba block
# ------------------------------------------------------------------------------------------------------------------
def _mamba_pair(d_model, d_state, bias=False, conv_bias=True, seed=0):
    torch.manual_seed(seed)
    m = Mamba(d_model, d_state, 4, 2, bias=bias, conv_bias=conv_bias)
    with torch.no_grad():
        for p in m.parameters():                            # make every parameter matter
            p.add_(torch.randn_like(p) * 0.1)
    ref = Mamba(d_model, d_state, 4, 2, bias=bias, conv_bias=conv_bias, use_fast_path=False).double()
    ref.load_state_dict(m.state_dict())
    return m, ref


@needs_native
@pytest.mark.parametrize("shape,kw", [((3, 9, 16, 8), {}), ((4, 33, 10, 6), {"bias": True}),
                                      ((2, 1, 8, 4), {"conv_bias": False}), ((2, 3, 12, 5), {})])
def test_native_mamba_block_matches_pure_module(shape, kw, monkeypatch):
    batch, length, d_model, d_state = shape
    monkeypatch.setattr(native.ops, "_CHUNK_POSITIONS", 2 * length)   # several batch chunks in both directions
    m, ref = _mamba_pair(d_model, d_state, **kw)
    x = torch.randn(batch, length, d_model)
    xi, xr = x.clone().requires_grad_(True), x.double().requires_grad_(True)
    y, y_ref = m(xi), ref(xr)
    assert m.last_path == "native" and ref.last_path == "pure"
    assert rel_err(y, y_ref) < 2e-6
    w = torch.randn(y.shape)
    (y * w).sum().backward()
    (y_ref * w.double()).sum().backward()
    assert rel_err(xi.grad, xr.grad) < 2e-5
    for (name, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
        assert rel_err(p.grad, q.grad) < 5e-5, name


@needs_native
def test_native_mamba_trains_and_keeps_causality():
    m, _ = _mamba_pair(16, 8)
    x = torch.randn(4, 12, 16)
    with torch.no_grad():
        full = m(x)
        x2 = x.clone()
        x2[:, 7:] = torch.randn(4, 5, 16)                  # changing the future leaves the past alone
        torch.testing.assert_close(m(x2)[:, :7], full[:, :7], rtol=0, atol=0)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    target = torch.randn(4, 12, 16)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.mse_loss(m(x), target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert m.last_path == "native" and losses[-1] < 0.7 * losses[0]


@needs_native
def test_native_mamba_ignores_autocast_and_refuses_other_dtypes():
    """The kernels are float32: under autocast (bf16 here on the CPU; what training uses on CUDA) the native path
    switches it off and computes exactly what it computes without, with or without the state returned, and a tensor
    of another dtype handed to the kernels directly raises instead of being misread as float32."""
    m, _ = _mamba_pair(16, 8)
    x = torch.randn(3, 9, 16)
    runs = []
    for autocast in (False, True):
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = m(xi)
            assert m.last_path == "native"
            y_state, (conv, ssm) = m(x, return_state=True)
            assert m.last_path == "native"
        y.sum().backward()
        runs.append([y, y_state, conv, ssm, xi.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*runs):
        assert a.dtype == torch.float32
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    u, delta, A, B, C, D, z, bias = _scan_inputs(2, 5, 8, 4)
    with pytest.raises(TypeError, match="float32 CPU tensors"):
        native.selective_scan(u.bfloat16(), delta, A, B, C, D, z, bias, True)
    with pytest.raises(TypeError, match="float32 CPU tensors"):
        native.last_state(u, delta.double(), A, B, C, bias, True)
    bu = torch.randn(2, 5, 4, dtype=torch.complex128)
    with pytest.raises(TypeError):
        native.s5_states(torch.rand(2, 5), bu, torch.full((4,), -0.5 + 1j, dtype=torch.complex128),
                         torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0, 0)])
def test_empty_batches_and_sequences(shape):
    """Zero rows or zero steps flow through both layers, forward and backward, with the shapes they came in."""
    m, s5 = Mamba(16, 8, 4, 2), TimeAwareS5(16, 8)
    x = torch.randn(*shape, 16, requires_grad=True)
    y = s5(m(x), torch.rand(*shape))
    assert y.shape == (*shape, 16)
    y.sum().backward()
    out, (conv, ssm) = m(x, return_state=True)
    assert out.shape == (*shape, 16) and conv.shape == (shape[0], 32, 4) and ssm.shape == (shape[0], 32, 8)


# ------------------------------------------------------------------------------------------------------------------
# S5
# ------------------------------------------------------------------------------------------------------------------
def _s5_pair(width=16, state=8, seed=0):
    torch.manual_seed(seed)
    m = TimeAwareS5(width, state, scan="native")
    ref = TimeAwareS5(width, state, scan="sequential").double()
    ref.load_state_dict(m.state_dict())
    return m, ref


@needs_native
@pytest.mark.parametrize("length", [1, 7, 40])
@pytest.mark.parametrize("with_state", [False, True])
def test_native_s5_matches_sequential_scan(length, with_state):
    m, ref = _s5_pair()
    batch = 3
    u = torch.randn(batch, length, 16)
    dt = torch.rand(batch, length) * 50
    dt[0, : min(2, length)] = 0                            # zero gaps: state carried unchanged
    dt[1, -1] = 1e8                                        # a huge gap: the state is reset exactly
    dt[2] = 10 ** torch.linspace(-3, 6, length)            # seconds to weeks
    x0 = torch.randn(batch, 8, dtype=torch.complex64) if with_state else None
    ui, ur = u.clone().requires_grad_(True), u.double().requires_grad_(True)
    xi = x0.clone().requires_grad_(True) if with_state else None
    xr = x0.to(torch.complex128).requires_grad_(True) if with_state else None
    y, xs = m(ui, dt, state=xi, return_state=True)
    y_ref, xs_ref = ref(ur, dt.double(), state=xr, return_state=True)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(xs, xs_ref) < 1e-5
    loss = y.square().sum() + xs.abs().sum()
    loss_ref = y_ref.square().sum() + xs_ref.abs().sum()
    loss.backward()
    loss_ref.backward()
    assert rel_err(ui.grad, ur.grad) < 1e-4
    if with_state:
        assert rel_err(xi.grad, xr.grad) < 1e-4
    for (name, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
        assert rel_err(p.grad, q.grad) < 1e-4, name


@needs_native
def test_native_s5_large_angles_and_huge_gaps():
    """Rotation angles beyond the vector sincos' reduction range (|angle| > 8192, C library fallback) and gaps large
    enough to underflow Abar to exactly 0 match the reference."""
    m, ref = _s5_pair(width=4, state=4)
    with torch.no_grad():
        lam = torch.complex(torch.full((4,), -1e-6), torch.tensor([3e3, -5e3, 40.0, 0.5]))
        for mod in (m, ref):
            mod.seq.Lambda.copy_(lam.to(mod.seq.Lambda.dtype))
            mod.seq.log_step.zero_()
    dt = torch.tensor([[0.0, 2.0, 3.5, 1e7, 1e-3, 9.0]])
    u = torch.randn(1, 6, 4)
    y, xs = m(u, dt, return_state=True)
    y_ref, xs_ref = ref(u.double(), dt.double(), return_state=True)
    assert rel_err(xs, xs_ref) < 1e-4 and rel_err(y, y_ref) < 1e-4


# ------------------------------------------------------------------------------------------------------------------
# the whole model, and the fallback
# ------------------------------------------------------------------------------------------------------------------
@needs_native
def test_ss4rec_native_paths_match_pure_paths():
    torch.manual_seed(0)
    ours = SS4Rec(40, hidden=16, n_layers=2, d_state=8, s5_state=8, dropout=0.0)
    pure = SS4Rec(40, hidden=16, n_layers=2, d_state=8, s5_state=8, dropout=0.0)
    pure.load_state_dict(ours.state_dict())
    for block in pure.blocks:
        block.mamba.use_fast_path = False
        block.s5.scan = "sequential"
    batch = _batch()
    loss, loss_ref = ss4rec_loss(ours, batch), ss4rec_loss(pure, batch)
    assert {b.mamba.last_path for b in ours.blocks} == {"native"}
    assert {b.mamba.last_path for b in pure.blocks} == {"pure"}
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    loss_ref.backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), pure.named_parameters()):
        if q.grad is not None:
            assert rel_err(p.grad, q.grad) < 1e-4, name


def test_disabled_native_falls_back_to_pure_paths(restore_native):
    restore_native.setenv("RECSYS_NATIVE", "0")
    native.reset()
    assert not native.available() and "RECSYS_NATIVE=0" in native.status()
    m = Mamba(16, 8, 4, 2)
    m(torch.randn(2, 5, 16)).sum().backward()
    assert m.last_path == "pure"
    s5 = TimeAwareS5(16, 8)
    assert s5._resolve_scan(None, torch.device("cpu")) == "sequential"
    with pytest.raises(RuntimeError, match="native S5 scan cannot run"):
        s5(torch.randn(2, 5, 16), torch.rand(2, 5), scan="native")


def test_missing_compiler_is_reported_not_raised(restore_native, tmp_path):
    restore_native.setenv("CC", str(tmp_path / "no-such-cc"))
    restore_native.setenv("RECSYS_NATIVE_DIR", str(tmp_path / "build"))
    native.reset()
    assert not native.available() and "no C compiler" in native.status()
    m = Mamba(8, 4, 4, 2)
    m(torch.randn(1, 3, 8))
    assert m.last_path == "pure"


def test_failing_compiler_warns_once_and_falls_back(restore_native, tmp_path):
    cc = tmp_path / "broken-cc"
    cc.write_text("#!/bin/sh\necho 'broken compiler' >&2\nexit 1\n")
    cc.chmod(0o755)
    restore_native.setenv("CC", str(cc))
    restore_native.setenv("RECSYS_NATIVE_DIR", str(tmp_path / "build"))
    native.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not native.available()
        assert not native.available()
    assert len([w for w in caught if "native CPU kernels unavailable" in str(w.message)]) == 1
    assert "build failed" in native.status() and "broken compiler" in native.status()


@needs_native
def test_build_is_cached_by_content(restore_native, tmp_path):
    build = tmp_path / "build"
    restore_native.setenv("RECSYS_NATIVE_DIR", str(build))
    native.reset()
    assert native.available()
    libs = list(build.glob("*.so"))
    assert len(libs) == 1 and not list(build.glob(".build-*"))
    stamp = libs[0].stat().st_mtime_ns
    native.reset()
    assert native.available()                              # loaded from the cache, not rebuilt
    assert libs[0].stat().st_mtime_ns == stamp and len(list(build.glob("*.so"))) == 1
