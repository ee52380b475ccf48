"""The folders a server (the dashboard, recsys-serve) may read: typed paths and paths recorded in run files are
confined to them, so a browser can neither list `/etc` nor make a crafted run.json read a file outside them.

Runs: the project folder (checkpoints/, runs/) and any folder in $RECSYS_RUNS_ROOTS. Data: the project folder, the
workbench's download folder ($RECSYS_DATA_DIR or ~/.cache/ss4rec-workbench/movielens), `../shared/movielens` beside
the project, the embedded ML-100K, and any folder in $RECSYS_DATA_ROOTS. Both variables take paths separated by
`os.pathsep` (":"). A path is checked after resolving every symbolic link, before anything looks at what it names,
and a refusal reads the same whether or not it exists: nothing is revealed about folders outside.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS_ENV = "RECSYS_RUNS_ROOTS"
DATA_ENV = "RECSYS_DATA_ROOTS"


class OutsideRoots(ValueError):
    """A path outside the folders this server may read (the message names the allowed ones and how to add one)."""


def _env_roots(var: str) -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get(var, "").split(os.pathsep) if p.strip()]


def runs_roots() -> list[Path]:
    return [ROOT, *_env_roots(RUNS_ENV)]


def data_roots() -> list[Path]:
    from recsys.data import download
    from recsys.data.integrity import embedded_dir

    roots = [ROOT, download.default_data_root(), ROOT.parent / "shared" / "movielens", *_env_roots(DATA_ENV)]
    embedded = embedded_dir()
    return roots + ([embedded] if embedded is not None else [])


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def confine(path: str | Path, roots: list[Path], what: str, env: str, base: Path = ROOT) -> Path:
    """`path` (relative to `base`, ~ expanded) as an absolute path, if it lies inside one of `roots` once every
    link is resolved; else OutsideRoots."""
    p = Path(str(path)).expanduser()
    p = p if p.is_absolute() else base / p
    real = _real(p)
    for root in roots:
        r = _real(root)
        if real == r or r in real.parents:
            return p
    shown = ", ".join(str(r) for r in roots)
    raise OutsideRoots(f"{path}: outside the {what} folders this app may read ({shown}); to allow another, start it "
                       f"with {env}=/that/folder")


def confine_runs(path: str | Path) -> Path:
    return confine(path, runs_roots(), "runs", RUNS_ENV)


def confine_data(path: str | Path, base: Path = ROOT) -> Path:
    return confine(path, data_roots(), "data", DATA_ENV, base)


def check_recorded_data_dir(info: dict, base: Path | None = None) -> None:
    """A run's recorded data folder (read back to rebuild its ids) must lie inside the data roots: a crafted
    run.json cannot make a server read /etc/passwd as ratings. Relative paths are taken from where the server runs
    (as the loader does)."""
    data_dir = (info.get("config") or {}).get("data_dir")
    if data_dir:
        confine_data(data_dir, base or Path.cwd())


__all__ = ["OutsideRoots", "check_recorded_data_dir", "confine", "confine_data", "confine_runs", "data_roots",
           "runs_roots"]
