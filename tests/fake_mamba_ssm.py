"""Stand-ins for mamba-ssm 2.3.2.post1 / causal-conv1d 1.7.0 (requirements-gpu.txt) for tests on a CPU: they bind
their arguments to the real signatures, check what the CUDA kernels check (shapes, dtypes, strides) and compute the
answer with our reference scan. Used by tests/test_gpu_mamba_ssm.py and by the bf16 test of tests/test_gpu_s5.py
(a pytest plugin of tests/conftest.py: fixtures `fake_mamba_ssm`, and `forget_mamba_ssm_imports` for modules that
swap the packages: `pytestmark = pytest.mark.usefixtures("forget_mamba_ssm_imports")`).
"""
from __future__ import annotations

import inspect
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import recsys.models.mamba as mamba_mod
from recsys.models.mamba import selective_scan_reference

F32, BF16 = torch.float32, torch.bfloat16
# ----------------------------------------------------------------------------------------------------------------
# 1c. mamba_ssm's kernels: stand-ins with the real signatures and the CUDA kernels' checks
# ----------------------------------------------------------------------------------------------------------------
KERNEL_DTYPES = (F32, torch.float16, BF16)      # selective_scan_cuda / causal_conv1d_cuda input types


class FakeKernels:
    """Stand-ins for mamba_ssm.ops.selective_scan_interface.{selective_scan_fn, mamba_inner_fn} and
    causal_conv1d.causal_conv1d_fn. Each binds its arguments to the real signature, records them by name, checks
    what the CUDA kernel checks, and returns our reference computation in the kernel's layout and dtypes."""

    def __init__(self):
        self.calls = {"selective_scan_fn": [], "mamba_inner_fn": [], "causal_conv1d_fn": []}

    def _record(self, fn, args, kwargs) -> dict:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        bound.apply_defaults()
        self.calls[fn.__name__].append(dict(bound.arguments))
        return dict(bound.arguments)

    # mamba_ssm/ops/selective_scan_interface.py
    def selective_scan_fn(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        self._record(FakeKernels.selective_scan_fn, (self, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                     return_last_state), {})
        batch, dim, length = u.shape
        n = A.shape[1]
        # selective_scan_cuda.fwd's checks (variable B and C: [batch, d_state, L] in the input dtype)
        assert u.dtype in KERNEL_DTYPES and delta.dtype == u.dtype and delta.shape == u.shape
        assert A.dtype == F32 and A.shape == (dim, n) and n <= 256
        assert B.shape == C.shape == (batch, n, length) and B.dtype == C.dtype == u.dtype
        assert D is None or (D.dtype == F32 and D.shape == (dim,))
        assert z is None or (z.dtype == u.dtype and z.shape == u.shape)
        assert delta_bias is None or (delta_bias.dtype == F32 and delta_bias.shape == (dim,))
        assert len({t.device for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None}) == 1
        # the kernel reads along L with unit stride (SelectiveScanFn copies anything else; mamba_simple passes
        # views like ours, only B and C made contiguous)
        assert all(t.stride(-1) == 1 for t in (u, delta, B, C, z) if t is not None)
        assert B.is_contiguous() and C.is_contiguous()
        t = lambda x: None if x is None else x.transpose(1, 2)  # noqa: E731
        res = selective_scan_reference(t(u), t(delta), A, t(B), t(C), D, t(z), delta_bias, delta_softplus,
                                       return_last_state)
        if return_last_state:   # out in the input dtype, the last state in float32
            return res[0].transpose(1, 2).to(u.dtype), res[1].to(F32)
        return res.transpose(1, 2).to(u.dtype)

    def mamba_inner_fn(self, xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                       out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                       C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1):
        kw = self._record(FakeKernels.mamba_inner_fn, (self, xz, conv1d_weight, conv1d_bias, x_proj_weight,
                                                       delta_proj_weight, out_proj_weight, out_proj_bias, A, B, C,
                                                       D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus,
                                                       checkpoint_lvl), {})
        batch, two_d, length = xz.shape
        dim, width, rank, n = two_d // 2, conv1d_weight.shape[-1], delta_proj_weight.shape[1], A.shape[1]
        assert xz.dtype in KERNEL_DTYPES and xz.stride(-1) == 1            # MambaInnerFn copies anything else
        assert conv1d_weight.shape == (dim, 1, width) and 2 <= width <= 4                 # causal_conv1d_fwd
        assert conv1d_bias is None or conv1d_bias.shape == (dim,)
        assert x_proj_weight.shape == (rank + 2 * n, dim) and delta_proj_weight.shape == (dim, rank)
        assert out_proj_weight.shape[1] == dim
        assert A.dtype == F32 and A.shape == (dim, n)
        assert B is None and C is None and kw["B_proj_bias"] is None and kw["C_proj_bias"] is None
        assert D.dtype == F32 and D.shape == (dim,) and delta_bias.dtype == F32 and delta_bias.shape == (dim,)
        x, z = xz.chunk(2, dim=1)
        xc = F.silu(F.conv1d(x, conv1d_weight, conv1d_bias, padding=width - 1, groups=dim)[..., :length])
        x_dbl = F.linear(xc.transpose(1, 2), x_proj_weight)                             # [b, L, r + 2n]
        delta = F.linear(x_dbl[..., :rank], delta_proj_weight)
        y = selective_scan_reference(xc.transpose(1, 2), delta, A, x_dbl[..., rank:rank + n], x_dbl[..., rank + n:],
                                     D, z.transpose(1, 2), delta_bias, delta_softplus)
        return F.linear(y, out_proj_weight, out_proj_bias)

    # causal_conv1d/causal_conv1d_interface.py
    def causal_conv1d_fn(self, x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                         final_states_out=None, activation=None):
        self._record(FakeKernels.causal_conv1d_fn, (self, x, weight, bias, seq_idx, initial_states,
                                                    return_final_states, final_states_out, activation), {})
        batch, dim, length = x.shape
        assert x.dtype in KERNEL_DTYPES and weight.dtype in KERNEL_DTYPES
        assert weight.shape[0] == dim and weight.dim() == 2 and 2 <= weight.shape[1] <= 4
        assert bias is None or bias.shape == (dim,)
        assert activation in (None, "silu", "swish") and seq_idx is None and initial_states is None
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=weight.shape[1] - 1, groups=dim)[..., :length]
        return F.silu(out) if activation else out


def install(monkeypatch, kernels: FakeKernels, conv: bool = True, conv_in_ssi: bool = True) -> None:
    """Put fake mamba_ssm (and causal_conv1d) packages in sys.modules and forget what the layer imported before."""
    ssi = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    ssi.selective_scan_fn, ssi.mamba_inner_fn = kernels.selective_scan_fn, kernels.mamba_inner_fn
    ssi.causal_conv1d_cuda = object() if (conv and conv_in_ssi) else None
    ops = types.ModuleType("mamba_ssm.ops")
    ops.selective_scan_interface = ssi
    pkg = types.ModuleType("mamba_ssm")
    pkg.ops = ops
    for name, module in (("mamba_ssm", pkg), ("mamba_ssm.ops", ops), ("mamba_ssm.ops.selective_scan_interface", ssi)):
        monkeypatch.setitem(sys.modules, name, module)
    if conv:
        cc = types.ModuleType("causal_conv1d")
        cc.causal_conv1d_fn = kernels.causal_conv1d_fn
        monkeypatch.setitem(sys.modules, "causal_conv1d", cc)
    else:
        monkeypatch.setitem(sys.modules, "causal_conv1d", None)          # import raises ImportError
    mamba_mod._MAMBA_SSM_CACHE.clear()


def uninstall(monkeypatch) -> None:
    """Make every mamba_ssm import fail, whatever this machine has installed."""
    for name in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.selective_scan_interface"):
        monkeypatch.setitem(sys.modules, name, None)
    mamba_mod._MAMBA_SSM_CACHE.clear()


@pytest.fixture
def forget_mamba_ssm_imports():
    """The layer caches what it imported: no test sees another's stand-ins (or their absence)."""
    mamba_mod._MAMBA_SSM_CACHE.clear()
    yield
    mamba_mod._MAMBA_SSM_CACHE.clear()


@pytest.fixture
def fake_mamba_ssm(monkeypatch):
    kernels = FakeKernels()
    install(monkeypatch, kernels)
    return kernels


