"""Native CPU kernels for SS4Rec's layers, compiled on first use with the machine's C compiler, loaded with ctypes.

``kernels.c`` holds Mamba's causal depthwise conv + SiLU, its selective scan with the dt projection folded in, and
S5's complex diagonal recurrence, forward and backward, float32. They are an optional fast path in the same sense as
mamba-ssm's CUDA kernels, and the layers fall back to their pure-PyTorch code, which the tests hold these kernels to:

* ``mamba_block``: in_proj -> conv -> x_proj -> scan -> gating -> out_proj in one autograd Function that saves only
  the block's input (the CPU counterpart of mamba_ssm's ``mamba_inner_fn``);
* ``selective_scan`` / ``last_state``: the scan alone (``recsys.models.mamba.selective_scan`` uses it);
* ``s5_states``: S5's discretisation and complex recurrence in one Function (``recsys.models.s5``'s "native" scan).

Nothing here needs PyTorch's C++ headers, pybind11 or network access: the C file is plain C compiled as a shared
library. ``build`` compiles, caches and loads it (``RECSYS_NATIVE=0`` disables it, ``status()`` says why it is not
used); ``ops`` holds the autograd Functions.
"""
from __future__ import annotations

from recsys.models.native.build import ABI_VERSION, CFLAGS, SOURCE, available, reset, status, usable, usable_complex
from recsys.models.native.ops import (
    NativeMamba,
    NativeS5States,
    NativeSelectiveScan,
    last_state,
    mamba_block,
    s5_states,
    selective_scan,
)

__all__ = ["ABI_VERSION", "CFLAGS", "SOURCE", "available", "status", "reset", "usable", "usable_complex",
           "NativeMamba", "NativeS5States", "NativeSelectiveScan", "mamba_block", "selective_scan", "last_state",
           "s5_states"]
