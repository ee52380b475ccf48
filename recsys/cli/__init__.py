"""The command-line programs (installed as recsys-train, recsys-evaluate, recsys-fit-rating-head; scripts/*.py are
thin wrappers around them)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def recorded_command(script: str, argv: list[str]) -> list[str]:
    """The command line as it runs again from a fresh clone after `make setup`: the project's venv interpreter (or
    torchrun) named relative to the project, else a plain `python`."""
    exe = Path(sys.executable)
    try:
        python = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else "python"
    except ValueError:
        python = "python"
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        torchrun = str(Path(python).with_name("torchrun")) if python != "python" else "torchrun"
        return [torchrun, f"--nproc_per_node={os.environ['WORLD_SIZE']}", script, *argv]
    return [python, script, *argv]

