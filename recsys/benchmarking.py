"""Shared pieces of the benchmark scripts (scripts/bench_*.py): peak-memory measurement that a child process can
reset, the --device/--threads handling, and number formatting for their printed tables."""
from __future__ import annotations

import argparse
import resource
import sys


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark to its current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    kib = _proc_status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak RSS of this process: VmHWM (the memory map's own high-water mark, which a reset clears), else
    ru_maxrss. ru_maxrss alone is not enough in a child: Linux carries the parent's high-water mark over exec."""
    kib = _proc_status_kib("VmHWM")
    return kib * 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def resolve_devices(parser: argparse.ArgumentParser, args) -> list:
    """Apply --threads to torch and turn --device into the devices to measure (a parser error if unavailable)."""
    import torch

    from recsys.training.engine import benchmark_devices

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return benchmark_devices(args.device)
    except ValueError as exc:
        parser.error(str(exc))


def gb(n: float) -> float:
    return n / 1024**3


def fmt_time(s: float) -> str:
    return f"{s:.3g}" if s < 100 else f"{s:,.0f}"
