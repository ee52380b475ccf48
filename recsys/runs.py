"""The run directory: the one contract between training and the dashboard.

    run.json          run id, model, dataset (+ fingerprint), protocol, config, command line, environment,
                      best epoch, metrics.valid / metrics.test (lower-case keys: rmse, mae, hr@10, ndcg@10, ...),
                      train seconds, sha256 of every artefact
    history.jsonl     one line per epoch: train loss, valid metrics, learning rate, seconds, samples per second
    model.safetensors best weights (safetensors: loading cannot execute code)
    id_maps.npz       raw MovieLens ids of model indices 1..n (np.load with allow_pickle=False)
    test_results.parquet  per-user (ranking) or per-interaction (rating) test results
    resume/           last-epoch weights + optimizer state for --resume (torch.load(weights_only=True))

Loading checks the format marker, the model name, and the sha256 of each artefact recorded in run.json, so a run of
another model, a truncated file or a tampered file gets a clear RunError instead of garbage or code execution.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

FORMAT = "ss4rec-workbench-run/1"
RUN_FILE = "run.json"
WEIGHTS = "model.safetensors"
ID_MAPS = "id_maps.npz"
HISTORY = "history.jsonl"
TEST_RESULTS = "test_results.parquet"
RESUME_DIR = "resume"


class RunError(Exception):
    """A run directory is missing, corrupted, tampered with, or belongs to something else; shown as is."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_weights(path: Path, state_dict: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {"format": FORMAT, **{k: str(v) for k, v in (metadata or {}).items()}}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_weights(path: Path) -> tuple[dict, dict]:
    """(state_dict, metadata) from a safetensors file; any parse failure becomes a RunError."""
    from safetensors import safe_open

    if not path.exists():
        raise RunError(f"{path}: weights file missing")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise RunError(f"{path}: not a readable safetensors file (truncated or corrupted?): {exc}") from exc
    return tensors, meta


@dataclass
class RunDirectory:
    """A run directory on disk; `load` validates it, the writer methods keep it consistent."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)

    # ------------------------------------------------------------------------------------------- writing
    def write_info(self, info: dict) -> None:
        info = {"format": FORMAT, **info}
        atomic_write_json(self.path / RUN_FILE, info)

    def append_history(self, row: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / HISTORY, "a") as fh:
            fh.write(json.dumps(row, default=_json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_history(self, epochs: int) -> None:
        """Keep the first `epochs` lines (a resumed run rewrites what came after its last checkpoint)."""
        rows = self.history()[:epochs]
        atomic_write_bytes(self.path / HISTORY, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def save_id_maps(self, users: np.ndarray, items: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, users=np.asarray(users, np.int64), items=np.asarray(items, np.int64))
        atomic_write_bytes(self.path / ID_MAPS, buf.getvalue())

    def save_test_results(self, df: pd.DataFrame) -> None:
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(self.path / TEST_RESULTS, buf.getvalue())

    def artefact_hashes(self) -> dict:
        return {name: sha256_file(self.path / name) for name in (WEIGHTS, ID_MAPS, TEST_RESULTS)
                if (self.path / name).exists()}

    # ------------------------------------------------------------------------------------------- reading
    def info(self) -> dict:
        f = self.path / RUN_FILE
        if not self.path.is_dir():
            raise RunError(f"{self.path}: no such run directory")
        if not f.exists():
            raise RunError(f"{self.path}: not a run directory of this workbench (no {RUN_FILE})")
        try:
            info = json.loads(f.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunError(f"{f}: corrupted ({exc})") from exc
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            found = info.get("format") if isinstance(info, dict) else None
            raise RunError(f"{f}: not a run of this workbench (format {found!r}, expected {FORMAT!r})")
        for key in ("model", "dataset", "protocol", "config"):
            if key not in info:
                raise RunError(f"{f}: incomplete run record (no '{key}')")
        return info

    def history(self) -> list[dict]:
        f = self.path / HISTORY
        if not f.exists():
            return []
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                break  # a line cut by a kill: everything before it is intact
        return rows

    def verify(self, info: dict | None = None, only: tuple[str, ...] | None = None) -> dict:
        """Check recorded sha256 of every artefact (or of the artefacts named in `only`); raise RunError on a mismatch
        (tampered or truncated)."""
        info = info or self.info()
        for name, digest in (info.get("artefacts") or {}).items():
            if only is not None and name not in only:
                continue
            p = self.path / name
            if not p.exists():
                raise RunError(f"{p}: missing (run.json lists it)")
            if sha256_file(p) != digest:
                raise RunError(f"{p}: contents differ from the sha256 recorded in run.json (modified, truncated "
                               f"or copied from another run)")
        return info

    def load_weights(self, expected_model: str | None = None) -> tuple[dict, dict]:
        info = self.verify()
        if expected_model and info["model"] != expected_model:
            raise RunError(f"{self.path}: this is a {info['model']} run, not {expected_model}")
        state, meta = load_weights(self.path / WEIGHTS)
        if meta.get("format") != FORMAT or meta.get("model", info["model"]) != info["model"]:
            raise RunError(f"{self.path / WEIGHTS}: weights belong to another model or tool "
                           f"({meta.get('model')!r}, format {meta.get('format')!r})")
        return state, info

    def id_maps(self) -> tuple[np.ndarray, np.ndarray]:
        f = self.path / ID_MAPS
        try:
            with np.load(f, allow_pickle=False) as z:
                return z["users"], z["items"]
        except Exception as exc:
            raise RunError(f"{f}: unreadable id maps ({exc})") from exc

    def test_results(self) -> pd.DataFrame:
        f = self.path / TEST_RESULTS
        try:
            return pd.read_parquet(f)
        except Exception as exc:
            raise RunError(f"{f}: unreadable per-user results ({exc})") from exc

    # ------------------------------------------------------------------------------------------- resume state
    def save_resume(self, state: dict) -> None:
        """Last-epoch training state: tensors, numbers and strings only, so it loads with weights_only=True."""
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path / RESUME_DIR / "state.pt", buf.getvalue())

    def load_resume(self) -> dict:
        f = self.path / RESUME_DIR / "state.pt"
        if not f.exists():
            raise RunError(f"{self.path}: nothing to resume (no {RESUME_DIR}/state.pt); start a new run instead")
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RunError(f"{f}: cannot resume from it (corrupted, or not plain tensors: {exc})") from exc
