"""The GPU branches of the SS4Rec layers, run on a CPU: CI has no GPU, and no code may run for the first time on one.

* S5's parallel scan (what "auto" picks on CUDA) against the sequential reference: float64 values and gradients.
* bf16 autocast (what training uses on CUDA) through the full SS4Rec forward + backward and through the chunked
  softmax cross-entropy, against float32.
* mamba_ssm and causal_conv1d replaced by stand-ins with the signatures of mamba-ssm 2.3.2.post1 / causal-conv1d
  1.7.0 (requirements-gpu.txt) that check what their CUDA kernels check (shapes, dtypes) and compute the answer
  with our reference scan: the Mamba layer must call them as ``mamba_simple.Mamba`` does, and get our numbers back.
* the dispatch rules themselves (``choose_path``, ``choose_scan``), for a CUDA device that is not here.
"""
from __future__ import annotations

import copy
import inspect
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import recsys.models.losses as losses_mod
import recsys.models.mamba as mamba_mod
import recsys.models.s5 as s5_mod
from recsys.models import native
from recsys.models.mamba import PATHS, Mamba, choose_path, selective_scan_reference
from recsys.models.s5 import TimeAwareS5, choose_scan
from recsys.models.ss4rec import SS4Rec, chunked_softmax_cross_entropy
from tests.helpers import _batch, ss4rec_loss

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
U_BF16 = 2.0 ** -8          # unit roundoff of bfloat16 (8 significant bits, round to nearest)


def grads_of(loss, leaves):
    return torch.autograd.grad(loss, leaves, allow_unused=True)


def assert_close_to(got, want, rtol, what=""):
    """max |got - want| <= rtol * max |want| (a tolerance relative to the tensor's scale, not to each element)."""
    assert got.shape == want.shape, what
    assert torch.isfinite(torch.view_as_real(got) if got.is_complex() else got).all(), f"{what}: non-finite"
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    assert err <= rtol * scale + 1e-300, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


# ----------------------------------------------------------------------------------------------------------------
# 1a. S5: the parallel scan (CUDA's) against the sequential one, float64, values and gradients
# ----------------------------------------------------------------------------------------------------------------
H, P = 16, 8


def s5_f64(seed=0, chunk_size=8) -> TimeAwareS5:
    torch.manual_seed(seed)
    m = TimeAwareS5(H, P, chunk_size=chunk_size)
    for prm in m.parameters():                               # every parameter, complex ones included, in 64 bits
        prm.data = prm.data.to(torch.complex128 if prm.is_complex() else F64)
    return m


def s5_gaps(kind: str, bsz: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """Gaps in seconds as SS4Rec feeds them; "huge" underflows Abar to exactly 0 (a reset)."""
    if kind == "zero":
        return torch.zeros(bsz, length, dtype=F64)
    if kind == "huge":
        return (10 ** (6 + 3 * torch.rand(bsz, length, generator=gen, dtype=F64))).floor()
    if kind == "mixed":
        choices = torch.tensor([0.0, 0.5, 1.0, 37.0, 3600.0, 86400.0, 1e8, 1e9], dtype=F64)
        return choices[torch.randint(len(choices), (bsz, length), generator=gen)]
    dt = (10 ** (torch.rand(bsz, length, generator=gen, dtype=F64) * 5.8)).floor()     # "random"
    dt[torch.rand(bsz, length, generator=gen) < 0.25] = 0
    return dt


def s5_run(m, u, dt, x0, wy, wx, scan=None):
    """(y, states, gradients of u, x0 and every parameter) of a weighted sum of outputs and states."""
    u, x0 = u.clone().requires_grad_(True), x0.clone().requires_grad_(True)
    y, xs = m(u, dt, state=x0, return_state=True, scan=scan)
    loss = (y * wy).sum() + (xs * wx.conj()).real.sum()
    return y, xs, grads_of(loss, [u, x0, *m.parameters()])


@pytest.fixture
def count_parallel_scans(monkeypatch):
    """Counts the calls of s5.parallel_scan, so a test knows the branch it forced really ran."""
    calls = []
    real = s5_mod.parallel_scan

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(s5_mod, "parallel_scan", spy)
    return calls


@pytest.mark.parametrize("kind", ["zero", "huge", "mixed", "random"])
@pytest.mark.parametrize("length,chunk", [(1, 8), (2, 1), (7, 8), (8, 8), (9, 4), (37, 8), (37, 64)])
def test_parallel_s5_equals_sequential_values_and_gradients(kind, length, chunk, count_parallel_scans):
    m = s5_f64(chunk_size=chunk)
    gen = torch.Generator().manual_seed(length * 100 + chunk)
    bsz = 3
    u = torch.randn(bsz, length, H, generator=gen, dtype=F64)
    dt = s5_gaps(kind, bsz, length, gen)
    x0 = torch.randn(bsz, P, generator=gen, dtype=torch.complex128)
    wy = torch.randn(bsz, length, H, generator=gen, dtype=F64)
    wx = torch.randn(bsz, length, P, generator=gen, dtype=torch.complex128)
    y_s, xs_s, g_s = s5_run(m, u, dt, x0, wy, wx, scan="sequential")
    assert not count_parallel_scans
    m.scan = "parallel"                                  # forced on the module, as "auto" resolves it on CUDA
    y_p, xs_p, g_p = s5_run(m, u, dt, x0, wy, wx)
    assert len(count_parallel_scans) == 1
    assert_close_to(y_p, y_s, 1e-12, "y")
    assert_close_to(xs_p, xs_s, 1e-12, "states")
    names = ["u", "x0"] + [n for n, _ in m.named_parameters()]
    for name, a, b in zip(names, g_p, g_s):
        assert_close_to(a, b, 1e-11, f"grad {name}")
    if kind == "zero":                                   # nothing enters the state: it stays x0, y = Re(C x0) + D u
        assert_close_to(xs_p, x0[:, None].expand_as(xs_p), 1e-14, "carried state")


@pytest.mark.parametrize("lead", [False, True], ids=["trailing-padding", "leading-padding"])
def test_parallel_s5_on_padded_batches(lead, count_parallel_scans):
    """Rows of lengths 11, 6, 1 and 0 padded to 11 (u = 0, dt = 0 on padding): both scans agree on every position
    and gradient, padding carries the state, and the real positions equal those of the unpadded sequences."""
    m = s5_f64(seed=1, chunk_size=4)
    gen = torch.Generator().manual_seed(2)
    lengths, width = [11, 6, 1, 0], 11
    u = torch.randn(len(lengths), width, H, generator=gen, dtype=F64)
    dt = s5_gaps("mixed", len(lengths), width, gen)
    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    if lead:
        real = real.flip(1)
    u, dt = u * real[..., None], dt * real
    x0 = torch.zeros(len(lengths), P, dtype=torch.complex128)
    wy = torch.randn(u.shape, generator=gen, dtype=F64) * real[..., None]     # padded outputs are ignored
    wx = torch.zeros(len(lengths), width, P, dtype=torch.complex128)
    y_s, xs_s, g_s = s5_run(m, u, dt, x0, wy, wx, scan="sequential")
    y_p, xs_p, g_p = s5_run(m, u, dt, x0, wy, wx, scan="parallel")
    assert len(count_parallel_scans) == 1
    assert_close_to(y_p, y_s, 1e-12, "y")
    for a, b in zip(g_p, g_s):
        assert_close_to(a, b, 1e-11, "grad")
    for row, n in enumerate(lengths):
        if n == 0:
            assert torch.equal(xs_p[row], torch.zeros_like(xs_p[row]))          # all padding: the zero state
            continue
        span = slice(width - n, width) if lead else slice(0, n)
        alone = m(u[row:row + 1, span], dt[row:row + 1, span], return_state=True, scan="parallel")
        assert_close_to(y_p[row, span], alone[0][0], 1e-12, f"row {row} real positions")
        if lead:
            assert torch.equal(xs_p[row, :width - n], torch.zeros_like(xs_p[row, :width - n]))
        else:
            for k in range(n, width):                                             # carried, not decayed
                assert_close_to(xs_p[row, k], xs_p[row, n - 1], 1e-13, f"row {row} pad {k}")


def test_auto_picks_the_parallel_scan_on_cuda_only():
    assert choose_scan("cuda", torch.complex64, native_ok=True) == "parallel"
    assert choose_scan(torch.device("cuda", 0), torch.complex128) == "parallel"
    assert choose_scan("cpu", torch.complex64, native_ok=True) == "native"
    assert choose_scan("cpu", torch.complex128, native_ok=True) == "sequential"      # the kernel is complex64
    assert choose_scan("cpu", torch.complex64, native_ok=False) == "sequential"
    m = TimeAwareS5(8, 4)
    assert m._resolve_scan(None, torch.device("cuda")) == "parallel"
    assert m._resolve_scan("sequential", torch.device("cuda")) == "sequential"       # a forced scan stays forced


def test_ss4rec_with_the_cuda_layers_equals_the_reference_layers_in_float64():
    """The layers a CUDA machine without mamba_ssm runs (parallel S5, pure Mamba), forced on the CPU for a whole
    float64 SS4Rec, give the reference layers' loss and gradients."""
    torch.manual_seed(0)
    kw = dict(hidden=16, n_layers=2, d_state=8, s5_state=8, dropout=0.0, rating_head=False)  # its MSE is float32
    cuda_like, reference = SS4Rec(40, **kw).double(), SS4Rec(40, **kw).double()
    reference.load_state_dict(cuda_like.state_dict())
    for model, scan in ((cuda_like, "parallel"), (reference, "sequential")):
        for block in model.blocks:
            block.s5.scan, block.mamba.use_fast_path = scan, False
    batch = _batch()
    loss, loss_ref = ss4rec_loss(cuda_like, batch), ss4rec_loss(reference, batch)
    assert loss.dtype == F64
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=0)
    for (name, _p), g, g_ref in zip(cuda_like.named_parameters(), grads_of(loss, list(cuda_like.parameters())),
                                   grads_of(loss_ref, list(reference.parameters()))):
        if g_ref is not None:
            assert_close_to(g, g_ref, 1e-9, name)


# ----------------------------------------------------------------------------------------------------------------
# 1b. bf16 autocast: the chunked cross-entropy and the whole model
# ----------------------------------------------------------------------------------------------------------------
class _MatmulDtypes(TorchDispatchMode):
    """Records (dtype, shape) of every matrix product and convolution aten runs."""

    OPS = ("aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm", "aten.convolution")

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in self.OPS:
            self.seen.append((args[0].dtype, tuple(args[0].shape), tuple(args[1].shape)))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def lowp_spy(monkeypatch):
    """What ``losses._lowp_dtype`` answered each time the cross-entropy asked."""
    answers = []
    real = losses_mod._lowp_dtype

    def spy(device):
        answers.append(real(device))
        return answers[-1]

    monkeypatch.setattr(losses_mod, "_lowp_dtype", spy)
    return answers


def test_chunked_cross_entropy_bf16_branch_within_its_rounding_bound(lowp_spy):
    """Under bf16 autocast the logits matmuls really run in bf16 (the `_lowp_dtype` branch), in the forward and in
    the backward, and the loss and gradients stay within the error that bf16 logits can cause:

    rounding h and W to bf16 moves each logit by at most eps_z = 2 u sum_i |h_i W_ji| (u = 2^-8, first order; the
    float32 accumulation adds far less). A log-sum-exp minus one logit moves by at most 2 eps_z, so the mean loss
    too; the softmax moves by sum_j |dp_j| <= 2 eps_z per row, so a row of dL/dh by at most 2 eps_z max|W| / N
    and a row of dL/dW by at most 2 eps_z max|h| (averaged over the N rows). A factor 1.5 covers second-order terms.
    """
    torch.manual_seed(3)
    n, d, v = 700, 32, 500
    h = torch.randn(n, d) * 0.8
    w = torch.randn(v, d) * 0.3
    t = torch.randint(1, v, (n,))
    leaves = [h.clone().requires_grad_(True), w.clone().requires_grad_(True)]
    ref = chunked_softmax_cross_entropy(*leaves, t, 128)
    gh_ref, gw_ref = grads_of(ref, leaves)
    assert lowp_spy == [None]
    leaves = [h.clone().requires_grad_(True), w.clone().requires_grad_(True)]
    mode = _MatmulDtypes()
    with mode:
        with torch.autocast("cpu", dtype=BF16):
            got = chunked_softmax_cross_entropy(*leaves, t, 128)
        gh, gw = grads_of(got, leaves)
    assert lowp_spy[1:] == [BF16]
    logits_mms = [s for s in mode.seen if s[0] == BF16 and s[2] == (d, v - 1)]
    assert len(logits_mms) == 2 * -(-n // 128)          # every chunk, forward and backward, in bf16
    assert got.dtype == gh.dtype == gw.dtype == F32
    for x in (got, gh, gw):
        assert torch.isfinite(x).all()
    eps_z = 2 * U_BF16 * float((h.abs() @ w.abs().T).max())
    assert abs(got.item() - ref.item()) <= 1.5 * 2 * eps_z
    assert float((gh - gh_ref).abs().max()) <= 1.5 * 2 * eps_z * float(w.abs().max()) / n
    assert float((gw - gw_ref).abs().max()) <= 1.5 * 2 * eps_z * float(h.abs().max())
    assert abs(got.item() - ref.item()) > 0                 # the bound is not met by never rounding


class _ComplexViewOfLowPrecision(TorchFunctionMode):
    """Flags torch.view_as_complex on a bf16/fp16 tensor. CPU autocast upcasts that input to float32, CUDA autocast
    does not (and view_as_complex rejects bf16): code that relies on the CPU cast crashes only on a GPU."""

    def __init__(self):
        super().__init__()
        self.bad = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.view_as_complex and args[0].dtype in (torch.float16, BF16):
            self.bad.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def _perturbed_ss4rec(seed=0) -> SS4Rec:
    torch.manual_seed(seed)
    m = SS4Rec(200, hidden=32, n_layers=2, d_state=8, s5_state=16, dropout=0.0)
    with torch.no_grad():                   # away from RecBole's tiny init, so every layer shapes the loss
        for prm in m.parameters():
            if prm.dtype.is_floating_point:
                prm.add_(torch.randn_like(prm) * 0.05)
    return m


# the layers each device runs: "cpu" as dispatched here; "cuda" as dispatched on a GPU without mamba_ssm;
# "cuda+mamba_ssm" the fused kernels (stand-ins here) with their CUDA dtype rules checked
LAYERS = {"cpu": (None, None), "cuda": ("parallel", "pure"), "cuda+mamba_ssm": ("parallel", "mamba_ssm")}


@pytest.mark.parametrize("layers", list(LAYERS))
def test_ss4rec_bf16_autocast_forward_backward_close_to_float32(layers, lowp_spy, fake_mamba_ssm, monkeypatch):
    """bf16 autocast through the whole model on the CPU, with each device's layers: finite, close to float32, the
    cross-entropy in its bf16 branch, and no complex view of a bf16 tensor (which only CPU autocast would fix up).

    Tolerance, in units of bf16's rounding u = 2^-8 (8 significant bits): the loss, a mean over positions whose
    rounding errors are independent, within 2 u. A gradient passes through about 30 bf16 roundings (the logits, the
    rating MLP, S5's two projections and Mamba's five matmuls per block, forward and again backward), amplified
    where softmax, LayerNorm and ReLU are ill-conditioned: the whole gradient may move by 16 u, one parameter's by
    64 u (seen over 8 seeds and the three layer sets: at most 9.4 u and 43 u, the same with the "cpu" set's float32
    Mamba, so mostly from the logits and the rating MLP). A dropped term, a wrong cast or garbage moves them by
    O(1), hundreds of u.
    """
    scan, mamba_path = LAYERS[layers]
    model = _perturbed_ss4rec()
    for block in model.blocks:
        block.s5.scan = scan or "auto"
    if mamba_path == "mamba_ssm":
        monkeypatch.setattr(Mamba, "path_for", lambda self, x, return_state=False: choose_path(
            "cuda", x.dtype, return_state=return_state, kernels=mamba_mod._load_mamba_ssm()))
    elif mamba_path == "pure":
        for block in model.blocks:
            block.mamba.use_fast_path = False
    batch = _batch(n_items=200, batch=8, length=20)
    params = [p for p in model.parameters()]
    loss32 = ss4rec_loss(model, batch)
    g32 = grads_of(loss32, params)
    paths32 = {b.mamba.last_path for b in model.blocks}
    views = _ComplexViewOfLowPrecision()
    with views, torch.autocast("cpu", dtype=BF16):
        loss16 = ss4rec_loss(model, batch)
    g16 = grads_of(loss16, params)
    assert {b.mamba.last_path for b in model.blocks} == paths32
    if mamba_path == "mamba_ssm":
        assert paths32 == {"mamba_inner_fn"}
        assert {c["xz"].dtype for c in fake_mamba_ssm.calls["mamba_inner_fn"]} == {F32, BF16}
    elif mamba_path == "pure":
        assert paths32 == {"pure"}
    assert lowp_spy == [None, BF16]
    assert not views.bad, "view_as_complex got a low-precision tensor: CUDA autocast would raise there"
    assert torch.isfinite(loss16) and loss16.dtype == F32
    assert abs(loss16.item() - loss32.item()) <= 2 * U_BF16 * abs(loss32.item())
    assert loss16.item() != loss32.item()                  # bf16 did run somewhere
    named = [(n, a, b) for (n, _), a, b in zip(model.named_parameters(), g16, g32) if b is not None]
    for name, a, b in named:
        assert torch.isfinite(a).all(), name
        assert float((a - b).norm()) <= 64 * U_BF16 * float(b.norm()), name
    flat16 = torch.cat([a.flatten() for _, a, _ in named])
    flat32 = torch.cat([b.flatten() for _, _, b in named])
    assert float((flat16 - flat32).norm()) <= 16 * U_BF16 * float(flat32.norm())


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


def _install(monkeypatch, kernels: FakeKernels, conv: bool = True, conv_in_ssi: bool = True) -> None:
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


def _uninstall(monkeypatch) -> None:
    """Make every mamba_ssm import fail, whatever this machine has installed."""
    for name in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.selective_scan_interface"):
        monkeypatch.setitem(sys.modules, name, None)
    mamba_mod._MAMBA_SSM_CACHE.clear()


@pytest.fixture(autouse=True)
def _forget_mamba_ssm_imports():
    """The layer caches what it imported: no test sees another's stand-ins (or their absence)."""
    mamba_mod._MAMBA_SSM_CACHE.clear()
    yield
    mamba_mod._MAMBA_SSM_CACHE.clear()


@pytest.fixture
def fake_mamba_ssm(monkeypatch):
    kernels = FakeKernels()
    _install(monkeypatch, kernels)
    return kernels


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
    _install(monkeypatch, kernels)
    ops = mamba_mod._load_mamba_ssm()
    assert ops == {"selective_scan_fn": kernels.selective_scan_fn, "mamba_inner_fn": kernels.mamba_inner_fn,
                   "causal_conv1d_fn": kernels.causal_conv1d_fn}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert mamba_mod.fast_path_available()
    _install(monkeypatch, kernels, conv=False)                # mamba_ssm without causal_conv1d: the scan only
    assert mamba_mod._load_mamba_ssm() == {"selective_scan_fn": kernels.selective_scan_fn, "mamba_inner_fn": None,
                                           "causal_conv1d_fn": None}
    _install(monkeypatch, kernels, conv_in_ssi=False)         # mamba_ssm found no causal_conv1d extension itself
    assert mamba_mod._load_mamba_ssm()["mamba_inner_fn"] is None
    _uninstall(monkeypatch)
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
    _uninstall(monkeypatch)
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
    _install(monkeypatch, kernels, conv=conv)
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
    _install(monkeypatch, kernels, conv=inner)
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
