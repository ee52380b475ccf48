"""Compile ``kernels.c`` with the machine's C compiler, cache the shared library by content, load it with ctypes.

The build key covers the source, the flags, the compiler's version and the CPU's feature flags, so a shared home
directory never loads a library built for another CPU; the library is written under a temporary name and renamed,
so concurrent builds never load a half-written file. ``RECSYS_NATIVE=0`` disables the kernels; a failed build
warns once and disables them for the process. The ctypes structures here mirror the C ABI (``ABI_VERSION``).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.c")
CFLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-shared", "-fPIC")
ABI_VERSION = 6

_lock = threading.Lock()
_state: dict = {}

_i64, _vp = ctypes.c_int64, ctypes.c_void_p


class ScanInputs(ctypes.Structure):
    _fields_ = [("L", _i64), ("D", _i64), ("N", _i64), ("R", _i64),
                ("u", _vp), ("u_sb", _i64), ("u_st", _i64), ("dt", _vp), ("dt_sb", _i64), ("dt_st", _i64),
                ("W", _vp), ("A", _vp), ("B", _vp), ("B_sb", _i64), ("B_st", _i64),
                ("C", _vp), ("C_sb", _i64), ("C_st", _i64), ("Dp", _vp),
                ("z", _vp), ("z_sb", _i64), ("z_st", _i64), ("bias", _vp), ("softplus", _i64)]


class ScanGrads(ctypes.Structure):
    _fields_ = [("gu", _vp), ("gu_rs", _i64), ("gdt", _vp), ("gdt_rs", _i64), ("gz", _vp), ("gz_rs", _i64),
                ("gB", _vp), ("gB_rs", _i64), ("gC", _vp), ("gC_rs", _i64),
                ("gA", _vp), ("gD", _vp), ("gbias", _vp), ("gW", _vp), ("y", _vp)]


class S5Inputs(ctypes.Structure):
    _fields_ = [("L", _i64), ("P", _i64), ("gaps", _vp), ("bu", _vp), ("x0", _vp), ("lre", _vp), ("lim", _vp),
                ("es", _vp), ("ilr", _vp), ("ili", _vp)]


class ConvInputs(ctypes.Structure):
    _fields_ = [("L", _i64), ("D", _i64), ("K", _i64), ("x", _vp), ("x_sb", _i64), ("x_st", _i64),
                ("w", _vp), ("bias", _vp)]


def _signatures() -> dict:
    scan, grads, conv, s5 = (ctypes.POINTER(c) for c in (ScanInputs, ScanGrads, ConvInputs, S5Inputs))
    return {"ss_forward": [scan, _i64, _i64, _vp, _vp],
            "ss_backward": [scan, _i64, _i64, _vp, grads],
            "conv_forward": [conv, _i64, _i64, _vp, _i64],
            "conv_backward": [conv, _i64, _i64, _vp, _i64, _vp, _i64, _vp, _vp],
            "s5_forward": [s5, _i64, _i64, _vp],
            "s5_backward": [s5, _i64, _i64, _vp, _vp, _vp, _vp, *([_vp] * 5)]}


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def _build_dir() -> Path:
    return Path(os.environ.get("RECSYS_NATIVE_DIR", Path.home() / ".cache" / "ss4rec-workbench" / "native"))


def _compile(cc: str) -> Path:
    source = SOURCE.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(b"\0".join([source, " ".join(CFLAGS).encode(), version.encode(), _cpu_flags().encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    out_dir = _build_dir()
    target = out_dir / f"kernels-{key}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        res = subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True,
                             timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load() -> ctypes.CDLL | None:
    """The compiled library, building it on first use; None (with the reason in status()) when unavailable."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib, reason = None, ""
        if os.environ.get("RECSYS_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            reason = "disabled by RECSYS_NATIVE=0"
        else:
            cc = _compiler()
            if cc is None:
                reason = f"no C compiler ({os.environ.get('CC', 'cc')!r} not found)"
            else:
                try:
                    lib = ctypes.CDLL(str(_compile(cc)))
                    if lib.native_abi_version() != ABI_VERSION:
                        raise RuntimeError(f"ABI version {lib.native_abi_version()} != {ABI_VERSION}")
                    for name, argtypes in _signatures().items():
                        fn = getattr(lib, name)
                        fn.argtypes, fn.restype = argtypes, ctypes.c_int
                except Exception as exc:  # noqa: BLE001 - any build/load failure means "use the pure path"
                    lib, reason = None, f"build failed: {exc}"
                    warnings.warn(f"native CPU kernels unavailable, using the pure-PyTorch layers ({reason})",
                                  RuntimeWarning, stacklevel=3)
        _state["lib"], _state["reason"] = lib, reason
        return lib


def available() -> bool:
    return load() is not None


def status() -> str:
    """'available', or why the native kernels are not used."""
    return "available" if load() is not None else _state.get("reason", "unavailable")


def reset() -> None:
    """Forget the loaded library / failure (tests change RECSYS_NATIVE or CC and call this)."""
    with _lock:
        _state.clear()


def usable(*tensors) -> bool:
    """True when every given tensor (None ignored) is a float32 CPU tensor and the library is available."""
    for t in tensors:
        if t is not None and (t.device.type != "cpu" or t.dtype != torch.float32):
            return False
    return available()


def usable_complex(*tensors) -> bool:
    """True when every given tensor (None ignored) is a complex64 CPU tensor and the library is available."""
    for t in tensors:
        if t is not None and (t.device.type != "cpu" or t.dtype != torch.complex64):
            return False
    return available()
