"""The GPU branches of the SS4Rec layers, run on a CPU: CI has no GPU, and no code may run for the first time on one.

* S5's parallel scan (what "auto" picks on CUDA) against the sequential reference: float64 values and gradients.
* bf16 autocast (what training uses on CUDA) through the full SS4Rec forward + backward and through the chunked
  softmax cross-entropy, against float32, with each device's layers (mamba_ssm's stand-ins: tests/fake_mamba_ssm.py).
* the S5 dispatch rule (``choose_scan``) for a CUDA device that is not here.
(mamba_ssm's kernels themselves: tests/test_gpu_mamba_ssm.py.)
"""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import recsys.models.losses as losses_mod
import recsys.models.mamba as mamba_mod
import recsys.models.s5 as s5_mod
from recsys.models.mamba import Mamba, choose_path
from recsys.models.s5 import TimeAwareS5, choose_scan
from recsys.models.ss4rec import SS4Rec, chunked_softmax_cross_entropy
from tests.helpers import _batch, grads_of, ss4rec_loss

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
U_BF16 = 2.0 ** -8          # unit roundoff of bfloat16 (8 significant bits, round to nearest)
pytestmark = pytest.mark.usefixtures("forget_mamba_ssm_imports")  # the bf16 test swaps in mamba_ssm stand-ins



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


