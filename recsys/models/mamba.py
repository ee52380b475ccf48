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
The scans themselves live in ``recsys.models.mamba_scan``.

Code paths. ``choose_path`` is the one place that picks one, from facts only (device, dtype, what imports), so that
every branch can be forced and tested on a CPU with ``forward(path=...)``; ``last_path`` records the one taken:

* "mamba_inner_fn": mamba_ssm's fused block, as ``mamba_simple`` calls it (CUDA; mamba_ssm and causal_conv1d import;
  no state asked for);
* "selective_scan_fn": our projections, ``causal_conv1d_fn`` (our conv when causal_conv1d is missing) and
  mamba_ssm's fused scan (CUDA; mamba_ssm imports);
* "native": the C kernels of ``recsys.models.native`` (float32 CPU tensors and a compiler): the whole block as one
  autograd Function, or the kernel's scan when the state is returned; autocast is off inside (float32 kernels);
* "pure": the same maths in PyTorch on any device and dtype, the fallback of all the others.

mamba_ssm is imported lazily, on the first forward that could use it, never at module import;
``fast_path_available()`` says whether it can run here. ``use_fast_path=False`` always takes "pure".

Single-token inference: ``allocate_state(batch)`` -> (conv_state [B, d_inner, d_conv], ssm_state
[B, d_inner, d_state]); ``step(x_t, conv_state, ssm_state)`` -> (out_t, conv_state, ssm_state), equal to the full
forward token by token. ``step`` is functional (returns new state tensors, leaves its inputs alone), unlike
mamba_ssm's in-place ``step``. ``forward(x, return_state=True)`` also returns the state after the LAST position
(padding included), so a prefix can be prefilled in one call and continued with ``step``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from recsys.models import native as _native
from recsys.models.mamba_scan import (  # noqa: F401  (re-exported: the scans were defined here before)
    _LOW_PRECISION,
    _selective_scan_indexed,
    main,
    selective_scan,
    selective_scan_reference,
)

__all__ = [
    "Mamba",
    "PATHS",
    "choose_path",
    "fast_path_available",
    "selective_scan",
    "selective_scan_reference",
]

PATHS = ("mamba_inner_fn", "selective_scan_fn", "native", "pure")
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)   # what mamba_ssm's CUDA kernels take as input
_CONV_WIDTHS = (2, 3, 4)                                           # what causal_conv1d's kernel supports
_MAX_KERNEL_STATE = 256                                            # selective_scan_cuda's largest d_state


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 (the SSM parameters and the scan run in at least float32); else unchanged."""
    return t.float() if t.dtype in _LOW_PRECISION else t


def _mark(param: torch.Tensor, flag: str) -> None:
    """Set one of mamba_ssm's marker attributes on a parameter (`_no_reinit`, `_no_weight_decay`: read with getattr
    by the optimizer and re-init code written for mamba_ssm); a Parameter declares none of them."""
    setattr(param, flag, True)


# ----------------------------------------------------------------------------------------------------------------
# optional mamba_ssm kernels (lazy)
# ----------------------------------------------------------------------------------------------------------------
_MAMBA_SSM_CACHE: dict = {}


def _load_mamba_ssm() -> dict | None:
    """mamba_ssm's fused functions, imported once: {"selective_scan_fn", "mamba_inner_fn", "causal_conv1d_fn"} (the
    last two None without causal_conv1d), or None when mamba_ssm does not import (no CUDA build, no package, ...)."""
    if "ops" in _MAMBA_SSM_CACHE:
        return _MAMBA_SSM_CACHE["ops"]
    ops = None
    try:
        from mamba_ssm.ops import selective_scan_interface as ssi  # noqa: WPS433 (lazy on purpose)

        ops = {"selective_scan_fn": ssi.selective_scan_fn, "mamba_inner_fn": None, "causal_conv1d_fn": None}
        try:
            from causal_conv1d import causal_conv1d_fn

            # mamba_inner_fn calls causal_conv1d's extension through names of its own module (causal_conv1d_cuda
            # before mamba-ssm 2.2.5, causal_conv1d_fwd_function since), None when that import failed there
            if all(getattr(ssi, name, True) is not None for name in ("causal_conv1d_cuda",
                                                                     "causal_conv1d_fwd_function")):
                ops["mamba_inner_fn"] = ssi.mamba_inner_fn
            ops["causal_conv1d_fn"] = causal_conv1d_fn
        except (ImportError, OSError, RuntimeError, AttributeError):
            pass
    except (ImportError, OSError, RuntimeError, AttributeError):
        ops = None
    _MAMBA_SSM_CACHE["ops"] = ops
    return ops


def fast_path_available() -> bool:
    """True when CUDA is available and mamba_ssm's fused selective scan imports."""
    return torch.cuda.is_available() and _load_mamba_ssm() is not None


def choose_path(device, dtype: torch.dtype, *, use_fast_path="auto", return_state: bool = False, empty: bool = False,
                kernels: dict | None = None, native_ok: bool = False, d_conv: int = 4, d_state: int = 16) -> str:
    """The code a Mamba forward runs, one of ``PATHS``, decided from facts alone.

    ``kernels``: what mamba_ssm offers here (``_load_mamba_ssm()``; None: it does not import); ``native_ok``: the C
    kernels can take these tensors; ``empty``: no position to scan. mamba_ssm's kernels run only on CUDA inputs of
    the dtypes and sizes they support; its fused block only when no state is wanted.
    """
    if use_fast_path is False or empty:
        return "pure"
    if (torch.device(device).type == "cuda" and kernels is not None and dtype in _KERNEL_DTYPES
            and d_state <= _MAX_KERNEL_STATE):
        if kernels.get("mamba_inner_fn") is not None and not return_state and d_conv in _CONV_WIDTHS:
            return "mamba_inner_fn"
        return "selective_scan_fn"
    return "native" if native_ok else "pure"


# ----------------------------------------------------------------------------------------------------------------
# the block
# ----------------------------------------------------------------------------------------------------------------
class Mamba(nn.Module):
    """Mamba block with mamba_ssm's parameter layout and init; the code it runs is picked by ``path_for``."""

    def __init__(self, d_model: int = 64, d_state: int = 32, d_conv: int = 4, expand: int = 2, dt_rank="auto",
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random", dt_scale: float = 1.0,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False, use_fast_path="auto",
                 layer_idx: int | None = None, device=None, dtype=None):
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
        self.last_path: str | None = None

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
        _mark(self.dt_proj.bias, "_no_reinit")

        # S4D-real: A = -(1, 2, ..., d_state) for every channel, stored as log.
        a = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a).contiguous())
        _mark(self.A_log, "_no_weight_decay")
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        _mark(self.D, "_no_weight_decay")
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    # -- path -------------------------------------------------------------------------------------------------
    def path_for(self, hidden_states: torch.Tensor, return_state: bool = False) -> str:
        """The path ``forward`` takes for this input when none is forced (see ``choose_path``)."""
        x = hidden_states
        on_cuda = x.device.type == "cuda"
        return choose_path(x.device, x.dtype, use_fast_path=self.use_fast_path, return_state=return_state,
                           empty=x.numel() == 0,
                           kernels=_load_mamba_ssm() if on_cuda and self.use_fast_path is not False else None,
                           native_ok=not on_cuda and _native.usable(x, *self.parameters()),
                           d_conv=self.d_conv, d_state=self.d_state)

    def _kernels(self, path: str) -> dict:
        ops = _load_mamba_ssm()
        if ops is None or (path == "mamba_inner_fn" and ops["mamba_inner_fn"] is None):
            raise RuntimeError(f"path {path!r} needs mamba_ssm{' and causal_conv1d' * (path == 'mamba_inner_fn')}, "
                               "which do not import here")
        return ops

    # -- helpers ------------------------------------------------------------------------------------------------
    def _causal_conv(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, d_inner] -> SiLU(causal depthwise conv) [B, L, d_inner]."""
        length = x.shape[1]
        if length == 0:                                                     # conv1d rejects empty sequences
            return x
        return F.silu(self.conv1d(x.transpose(1, 2))[..., :length].transpose(1, 2))

    def _conv_state_from(self, xt: torch.Tensor) -> torch.Tensor:
        """Last d_conv pre-conv inputs [B, d_inner, d_conv] of xt [B, d_inner, L] (oldest first, zero-filled for
        short sequences)."""
        pad = self.d_conv - xt.shape[-1]
        return F.pad(xt, (pad, 0)) if pad > 0 else xt[..., -self.d_conv:].contiguous()

    def _ssm_inputs(self, xc: torch.Tensor):
        dt, B, C = torch.split(self.x_proj(xc), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C                      # dt_proj bias goes to the scan

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, hidden_states: torch.Tensor, return_state: bool = False, *, path: str | None = None):
        """[B, L, d_model] -> [B, L, d_model]; with ``return_state`` also (conv_state, ssm_state) after position L-1.

        ``path`` forces one of ``PATHS`` (RuntimeError where it cannot run); None lets ``path_for`` choose.
        """
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"expected [batch, L, {self.d_model}], got {tuple(hidden_states.shape)}")
        path = path or self.path_for(hidden_states, return_state)
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if path == "mamba_inner_fn" and return_state:
            raise ValueError("mamba_inner_fn returns no state; use path 'selective_scan_fn'")
        self.last_path = path
        if path == "mamba_inner_fn":
            return self._forward_mamba_inner_fn(hidden_states, self._kernels(path))
        if path == "selective_scan_fn":
            return self._forward_selective_scan_fn(hidden_states, return_state, self._kernels(path))
        if path == "native":
            if not _native.usable(hidden_states, *self.parameters()):
                raise RuntimeError(f"the native Mamba path cannot run here: {_native.status()} "
                                   "(it needs float32 CPU tensors and parameters, and a C compiler)")
            with torch.autocast("cpu", enabled=False):                     # float32 kernels, whatever autocast asks
                if not return_state:
                    return _native.mamba_block(
                        hidden_states, self.in_proj.weight, self.in_proj.bias, self.conv1d.weight, self.conv1d.bias,
                        self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias, self.A_log, self.D,
                        self.out_proj.weight, self.out_proj.bias)
                return self._forward_pure(hidden_states, return_state, native=True)
        return self._forward_pure(hidden_states, return_state, native=False)

    def _forward_pure(self, hidden_states: torch.Tensor, return_state: bool, native: bool):
        """Batch-first PyTorch; the scan is ``mamba_scan.selective_scan`` (its C kernel when ``native``)."""
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)                 # [B, L, d_inner] each
        xc = self._causal_conv(x)
        dt, B, C = self._ssm_inputs(xc)
        A = -torch.exp(_upcast(self.A_log))
        res = selective_scan(xc, dt, A, B, C, _upcast(self.D), z=z, delta_bias=_upcast(self.dt_proj.bias),
                             delta_softplus=True, return_last_state=return_state, native=native)
        y, h = res if return_state else (res, None)
        out = self.out_proj(y.to(hidden_states.dtype))
        return (out, (self._conv_state_from(x.transpose(1, 2)), h)) if return_state else out

    def _in_proj_channels_first(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """xz [B, 2*d_inner, L] with unit stride along L, as mamba_simple computes it (matmul and transpose in one)."""
        batch, length, _ = hidden_states.shape
        xz = (self.in_proj.weight @ hidden_states.reshape(batch * length, -1).T).view(-1, batch, length)
        xz = xz.transpose(0, 1)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(dtype=xz.dtype)[:, None]
        return xz

    def _forward_mamba_inner_fn(self, hidden_states: torch.Tensor, kernels: dict) -> torch.Tensor:
        """mamba_ssm's fused block, called exactly as ``mamba_simple.Mamba.forward`` calls it."""
        return kernels["mamba_inner_fn"](
            self._in_proj_channels_first(hidden_states), self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
            self.dt_proj.weight, self.out_proj.weight, self.out_proj.bias, -torch.exp(self.A_log.float()),
            None, None,                                                     # B, C: input-dependent
            self.D.float(), delta_bias=self.dt_proj.bias.float(), delta_softplus=True)

    def _forward_selective_scan_fn(self, hidden_states: torch.Tensor, return_state: bool, kernels: dict):
        """mamba_simple's unfused branch: channels-first tensors, causal_conv1d_fn when present, the fused scan."""
        batch, length, _ = hidden_states.shape
        x, z = self._in_proj_channels_first(hidden_states).chunk(2, dim=1)  # [B, d_inner, L] each
        conv = kernels.get("causal_conv1d_fn")
        if conv is not None and self.d_conv in _CONV_WIDTHS:
            xc = conv(x=x, weight=self.conv1d.weight.squeeze(1), bias=self.conv1d.bias, activation=self.activation)
        else:
            xc = self.act(self.conv1d(x)[..., :length])
        x_dbl = self.x_proj(xc.transpose(1, 2).reshape(batch * length, -1))   # [(B L), dt_rank + 2 d_state]
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.T).view(-1, batch, length).transpose(0, 1)   # [B, d_inner, L]
        B = B.view(batch, length, -1).transpose(1, 2).contiguous()          # [B, d_state, L]
        C = C.view(batch, length, -1).transpose(1, 2).contiguous()
        res = kernels["selective_scan_fn"](xc, dt, -torch.exp(self.A_log.float()), B, C, self.D.float(), z=z,
                                           delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                                           return_last_state=return_state)
        y, h = res if return_state else (res, None)
        out = self.out_proj(y.transpose(1, 2))
        return (out, (self._conv_state_from(x), h)) if return_state else out

    # -- single-token inference -------------------------------------------------------------------------------
    def allocate_state(self, batch: int, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
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


if __name__ == "__main__":  # pragma: no cover - the scan benchmark; ``python -m recsys.models.mamba --bench``
    main()
