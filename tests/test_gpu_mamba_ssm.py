"""mamba_ssm and causal_conv1d on a CPU: replaced by stand-ins with the signatures of mamba-ssm 2.3.2.post1 /
causal-conv1d 1.7.0 (tests/fake_mamba_ssm.py) that check what their CUDA kernels check (shapes, dtypes) and compute the
answer with our reference scan: the Mamba layer must call them as ``mamba_simple.Mamba`` does, and get our numbers
back; and the Mamba layer's dispatch rules (``choose_path``) for a CUDA device that is not here.
"""
from __future__ import annotations

import copy

import pytest
import torch

import recsys.models.mamba as mamba_mod
from recsys.models import native
from recsys.models.mamba import PATHS, Mamba, choose_path
from tests.fake_mamba_ssm import FakeKernels, install, uninstall
from tests.helpers import grads_of

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
U_BF16 = 2.0 ** -8          # unit roundoff of bfloat16 (8 significant bits, round to nearest)
pytestmark = pytest.mark.usefixtures("forget_mamba_ssm_imports")  # no test sees another's stand-ins



def _module(seed=0, bias=True, d_conv=4, dtype=F32) -> Mamba:
    torch.manual_seed(seed)
    m = Mamba(d_model=32, d_state=8, d_conv=d_conv, expand=2, bias=bias).to(dtype)
    with torch.no_grad():                                               # make every parameter matter
        for prm in m.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    return m


def _forward_and_grads(m, x, path, return_state=False):
    xi = x.clone().requires_grad_(True)
    out = m(xi, return_state=return_state, path=path)
    y = out[0] if return_state else out
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(9))
    loss = (y * w.to(y.dtype)).float().sum()
    return out, grads_of(loss, [xi, *m.parameters()])


def test_the_loader_finds_mamba_ssm_and_causal_conv1d(monkeypatch):
    kernels = FakeKernels()
    install(monkeypatch, kernels)
    ops = mamba_mod._load_mamba_ssm()
    assert ops == {"selective_scan_fn": kernels.selective_scan_fn, "mamba_inner_fn": kernels.mamba_inner_fn,
                   "causal_conv1d_fn": kernels.causal_conv1d_fn}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert mamba_mod.fast_path_available()
    install(monkeypatch, kernels, conv=False)                # mamba_ssm without causal_conv1d: the scan only
    assert mamba_mod._load_mamba_ssm() == {"selective_scan_fn": kernels.selective_scan_fn, "mamba_inner_fn": None,
                                           "causal_conv1d_fn": None}
    install(monkeypatch, kernels, conv_in_ssi=False)         # mamba_ssm found no causal_conv1d extension itself
    assert mamba_mod._load_mamba_ssm()["mamba_inner_fn"] is None
    uninstall(monkeypatch)
    assert mamba_mod._load_mamba_ssm() is None and not mamba_mod.fast_path_available()


def test_choose_path_rules():
    both = {"selective_scan_fn": print, "mamba_inner_fn": print, "causal_conv1d_fn": print}
    scan_only = {"selective_scan_fn": print, "mamba_inner_fn": None, "causal_conv1d_fn": None}
    cuda = torch.device("cuda")
    assert choose_path(cuda, BF16, kernels=both) == "mamba_inner_fn"
    assert choose_path(cuda, F32, kernels=both, return_state=True) == "selective_scan_fn"
    assert choose_path(cuda, torch.float16, kernels=scan_only) == "selective_scan_fn"
    assert choose_path(cuda, F32, kernels=both, d_conv=5) == "selective_scan_fn"      # causal_conv1d: width 2..4
    assert choose_path(cuda, F32, kernels=both, d_state=512) == "pure"                # selective_scan: <= 256
    assert choose_path(cuda, F64, kernels=both) == "pure"                            # the kernels have no float64
    assert choose_path(cuda, F32, kernels=None) == "pure"                            # no mamba_ssm: our scan
    assert choose_path(cuda, F32, kernels=both, use_fast_path=False) == "pure"
    assert choose_path(cuda, F32, kernels=both, empty=True) == "pure"
    assert choose_path("cpu", F32, kernels=both, native_ok=True) == "native"         # mamba_ssm is CUDA-only
    assert choose_path("cpu", F32, native_ok=True, return_state=True) == "native"
    assert choose_path("cpu", F32, native_ok=False) == "pure"
    assert choose_path("cpu", F32, native_ok=True, use_fast_path=False) == "pure"


def test_cpu_inputs_never_take_or_import_mamba_ssm(fake_mamba_ssm, monkeypatch):
    imports = []
    real = mamba_mod._load_mamba_ssm
    monkeypatch.setattr(mamba_mod, "_load_mamba_ssm", lambda: imports.append(1) or real())
    m = _module()
    x = torch.randn(2, 7, 32)
    m(x)
    assert m.last_path == ("native" if native.available() else "pure")
    m(x, return_state=True)
    assert m.last_path == ("native" if native.available() else "pure")
    assert not imports and not any(fake_mamba_ssm.calls.values())


def test_forced_paths_that_cannot_run_say_so(monkeypatch):
    m = _module()
    x = torch.randn(1, 3, 32)
    uninstall(monkeypatch)
    for path in ("mamba_inner_fn", "selective_scan_fn"):
        with pytest.raises(RuntimeError, match="mamba_ssm"):
            m(x, path=path)
    with pytest.raises(RuntimeError, match="native Mamba path cannot run"):
        m.double()(x.double(), path="native")
    with pytest.raises(ValueError, match="one of"):
        m(x.double(), path="cuda")
    with pytest.raises(ValueError, match="returns no state"):
        m(x.double(), return_state=True, path="mamba_inner_fn")
    assert set(PATHS) == {"mamba_inner_fn", "selective_scan_fn", "native", "pure"}


@pytest.mark.parametrize("bias", [True, False])
def test_mamba_inner_fn_is_called_as_mamba_simple_calls_it(fake_mamba_ssm, bias):
    m = _module(bias=bias)
    x = torch.randn(3, 11, 32)
    want, g_want = _forward_and_grads(m, x, "pure")
    got, g_got = _forward_and_grads(m, x, "mamba_inner_fn")
    assert m.last_path == "mamba_inner_fn"
    assert [len(v) for v in fake_mamba_ssm.calls.values()] == [0, 1, 0]
    call = fake_mamba_ssm.calls["mamba_inner_fn"][0]
    xz = call["xz"]
    assert xz.shape == (3, 2 * m.d_inner, 11) and xz.stride(-1) == 1       # [b, 2 d_inner, L], time contiguous
    torch.testing.assert_close(xz, m.in_proj(x).transpose(1, 2))
    # the live parameters themselves (gradients must reach them), in mamba_simple's order
    for name, prm in (("conv1d_weight", m.conv1d.weight), ("conv1d_bias", m.conv1d.bias),
                      ("x_proj_weight", m.x_proj.weight), ("delta_proj_weight", m.dt_proj.weight),
                      ("out_proj_weight", m.out_proj.weight), ("out_proj_bias", m.out_proj.bias)):
        assert call[name] is prm, name
    torch.testing.assert_close(call["A"], -torch.exp(m.A_log.float()), rtol=0, atol=0)
    torch.testing.assert_close(call["D"], m.D.float(), rtol=0, atol=0)
    torch.testing.assert_close(call["delta_bias"], m.dt_proj.bias.float(), rtol=0, atol=0)
    assert call["B"] is None and call["C"] is None and call["delta_softplus"] is True
    assert call["checkpoint_lvl"] == 1 and call["B_proj_bias"] is None and call["C_proj_bias"] is None
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("conv", [True, False], ids=["causal_conv1d", "no-causal_conv1d"])
@pytest.mark.parametrize("return_state", [False, True])
def test_selective_scan_fn_is_called_as_mamba_simple_calls_it(monkeypatch, conv, return_state):
    kernels = FakeKernels()
    install(monkeypatch, kernels, conv=conv)
    m = _module()
    x = torch.randn(2, 9, 32)
    want, g_want = _forward_and_grads(m, x, "pure", return_state)
    got, g_got = _forward_and_grads(m, x, "selective_scan_fn", return_state)
    assert m.last_path == "selective_scan_fn"
    assert len(kernels.calls["selective_scan_fn"]) == 1 and not kernels.calls["mamba_inner_fn"]
    assert len(kernels.calls["causal_conv1d_fn"]) == int(conv)
    if conv:
        cc = kernels.calls["causal_conv1d_fn"][0]
        assert cc["x"].shape == (2, m.d_inner, 9) and cc["activation"] == "silu"
        assert cc["weight"].shape == (m.d_inner, m.d_conv) and cc["bias"] is m.conv1d.bias
        torch.testing.assert_close(cc["weight"], m.conv1d.weight[:, 0], rtol=0, atol=0)
    call = kernels.calls["selective_scan_fn"][0]
    assert call["u"].shape == call["delta"].shape == call["z"].shape == (2, m.d_inner, 9)
    assert call["B"].shape == call["C"].shape == (2, m.d_state, 9)
    xz = m.in_proj(x)
    torch.testing.assert_close(call["z"], xz[..., m.d_inner:].transpose(1, 2))
    xc = m._causal_conv(xz[..., :m.d_inner])
    dt, B, C = m._ssm_inputs(xc)                         # dt without its bias: the kernel adds delta_bias
    for name, ours in (("u", xc), ("delta", dt), ("B", B), ("C", C)):
        torch.testing.assert_close(call[name], ours.transpose(1, 2), rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(call["A"], -torch.exp(m.A_log.float()), rtol=0, atol=0)
    torch.testing.assert_close(call["D"], m.D.float(), rtol=0, atol=0)
    torch.testing.assert_close(call["delta_bias"], m.dt_proj.bias.float(), rtol=0, atol=0)
    assert call["delta_softplus"] is True and call["return_last_state"] is return_state
    if return_state:
        (got, (conv_got, ssm_got)), (want, (conv_want, ssm_want)) = got, want
        torch.testing.assert_close(conv_got, conv_want, rtol=0, atol=0)
        torch.testing.assert_close(ssm_got, ssm_want, rtol=1e-5, atol=1e-6)
        assert ssm_got.dtype == F32 and conv_got.shape == (2, m.d_inner, m.d_conv)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["autocast", "bf16-model"])
@pytest.mark.parametrize("path", ["mamba_inner_fn", "selective_scan_fn"])
def test_fused_paths_in_bf16_pass_the_kernels_dtypes(fake_mamba_ssm, path, mode):
    """In bf16 (under autocast, or a model cast to bf16) the kernels get bf16 activations and float32 A, D and delta
    bias (the stand-ins assert the CUDA kernels' dtype rules), and the block stays within bf16 rounding of float32:
    6 u in norm, one rounding for each of its five bf16 matmuls and one for its bf16 output (seen: at most 1.5 u over
    8 seeds)."""
    m = _module()
    x = torch.randn(2, 9, 32)
    if mode == "bf16-model":                     # the reference gets the same bf16-rounded weights and input
        m, x = m.to(BF16), x.to(BF16)
    ref = copy.deepcopy(m).float()
    with torch.no_grad():
        want = ref(x.float(), path="pure")
        with torch.autocast("cpu", dtype=BF16, enabled=mode == "autocast"):
            got = m(x, path=path)
    call = fake_mamba_ssm.calls[path][0]
    assert (call["xz"] if path == "mamba_inner_fn" else call["u"]).dtype == BF16
    assert call["A"].dtype == call["D"].dtype == call["delta_bias"].dtype == F32
    assert got.dtype == BF16 and torch.isfinite(got).all()
    assert float((got.float() - want).norm()) <= 6 * U_BF16 * float(want.norm())


def test_d_conv_outside_causal_conv1d_widths_uses_our_conv(fake_mamba_ssm, monkeypatch):
    m = _module(d_conv=5)
    x = torch.randn(2, 9, 32)
    monkeypatch.setattr(Mamba, "path_for", lambda self, inp, return_state=False: choose_path(
        "cuda", inp.dtype, return_state=return_state, kernels=mamba_mod._load_mamba_ssm(), d_conv=self.d_conv))
    got = m(x)
    assert m.last_path == "selective_scan_fn" and not fake_mamba_ssm.calls["causal_conv1d_fn"]
    torch.testing.assert_close(got, m(x, path="pure"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inner", [True, False])
def test_fast_path_plumbing_with_stand_in_kernels(monkeypatch, inner):
    """The argument order and layouts we hand to mamba_ssm's kernels, checked on CPU with stand-ins, with the
    choice made as on a CUDA device (formerly in test_mamba.py)."""
    kernels = FakeKernels()
    install(monkeypatch, kernels, conv=inner)
    m = _module(bias=True)
    x = torch.randn(2, 9, 32)
    want, (conv_want, ssm_want) = m(x, return_state=True)
    assert m.last_path == ("native" if native.available() else "pure")
    monkeypatch.setattr(Mamba, "path_for", lambda self, inp, return_state=False: choose_path(
        "cuda", inp.dtype, return_state=return_state, kernels=mamba_mod._load_mamba_ssm()))
    got = m(x)
    assert m.last_path == ("mamba_inner_fn" if inner else "selective_scan_fn")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got, (conv_got, ssm_got) = m(x, return_state=True)
    assert m.last_path == "selective_scan_fn"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(conv_got, conv_want)
    torch.testing.assert_close(ssm_got, ssm_want, rtol=1e-5, atol=1e-6)
