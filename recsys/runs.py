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
import io
import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

# the file layer (bounded reads, atomic writes) is part of the run contract: re-exported here
from recsys.run_io import (  # noqa: F401
    MAX_ARTEFACT,
    MAX_BYTES,
    MAX_HISTORY,
    MAX_ID_MAPS_UNPACKED,
    MAX_RUN_JSON,
    IdsWithheld,
    RunError,
    _json_default,
    _open_regular,
    _refuse_links,
    atomic_write_bytes,
    atomic_write_json,
    canonical_json,
    content_digest,
    max_bytes,
    read_bytes,
    sha256_file,
)

FORMAT = "ss4rec-workbench-run/1"
RUN_FILE = "run.json"
WEIGHTS = "model.safetensors"
ID_MAPS = "id_maps.npz"
HISTORY = "history.jsonl"
TEST_RESULTS = "test_results.parquet"
RESUME_DIR = "resume"


def _st_dtypes() -> dict:
    import torch  # here, not at the top: reading run.json and results (the dashboard's answer page) needs no torch

    return {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
            torch.bool: "BOOL", torch.complex64: "C64"}


def safetensors_bytes(tensors: dict, metadata: dict) -> bytes:
    """The safetensors format written deterministically (tensors and metadata in name order), so identical runs
    give byte-identical weight files; safetensors' own writer orders the metadata differently from run to run."""
    import torch

    dtypes = _st_dtypes()
    header: dict = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in dtypes:
            raise TypeError(f"{name}: dtype {t.dtype} cannot be stored")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def npz_bytes(**arrays: npt.ArrayLike) -> bytes:
    """np.savez's format with fixed zip timestamps (np.savez stamps the current time: never byte-identical)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buf.getvalue()


# settings a re-evaluation may change without touching the weights (recsys/training/reevaluate.py)
EVAL_ONLY_KEYS = ("mask_seen", "ks", "eval_batch_size", "device", "cpu_threads", "tie_order")


def config_binding(config: dict) -> str:
    """sha256 of the settings that shaped a run's weights (run.json's config less the evaluation-only keys)."""
    return hashlib.sha256(canonical_json({k: v for k, v in config.items() if k not in EVAL_ONLY_KEYS})).hexdigest()


def weights_binding(model: str, config: dict) -> dict:
    """The metadata a run's weights carry: the model, and the configuration they were trained with, so an edit of
    run.json's configuration (digest recomputed or not) no longer matches its weights."""
    return {"model": model, "config_sha256": config_binding(config)}


def save_weights(path: Path, state_dict: dict, metadata: dict | None = None) -> None:
    meta = {"format": FORMAT, **{k: str(v) for k, v in (metadata or {}).items()}}
    atomic_write_bytes(path, safetensors_bytes(state_dict, meta))


def _header_metadata(data: bytes, where: Path) -> dict:
    n = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else -1
    if not 0 < n <= min(len(data) - 8, 100 << 20):
        raise RunError(f"{where}: not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as exc:
        raise RunError(f"{where}: not a safetensors file ({exc})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def weights_metadata(path: Path) -> dict:
    """The metadata of a safetensors file from its header alone (no tensor is read)."""
    fd, size = _open_regular(path, MAX_ARTEFACT)
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        data = head + (fh.read(n) if 0 < n <= min(size - 8, 100 << 20) else b"")
    return _header_metadata(data, path)


def load_weights(path: Path) -> tuple[dict, dict]:
    """(state_dict, metadata) from a safetensors file; any parse failure becomes a RunError."""
    from safetensors.torch import load

    data = read_bytes(path, MAX_ARTEFACT)
    meta = _header_metadata(data, path)
    try:
        tensors = load(data)
    except Exception as exc:
        raise RunError(f"{path}: not a readable safetensors file (truncated or corrupted?): {exc}") from exc
    return tensors, meta


REQUIRED_ARTEFACTS = (WEIGHTS, ID_MAPS, TEST_RESULTS)


def host_id() -> str:
    """This machine, as a training run records it beside its pid (the boot id: a pid only means something there)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import platform

        return platform.node()


@dataclass(init=False)
class RunDirectory:
    """A run directory on disk; the reader methods validate what they read, the writer methods keep it consistent."""

    path: Path

    def __init__(self, path: Path | str):  # callers pass a str as often as a Path
        self.path = Path(path)

    # ------------------------------------------------------------------------------------------- writing
    def write_info(self, info: dict) -> None:
        """run.json, with the format marker first and its own content digest last."""
        info = {"format": FORMAT, **{k: v for k, v in info.items() if k not in ("format", "digest")}}
        info = json.loads(json.dumps(info, default=_json_default))  # what is written (numpy, Path -> JSON), in order
        info["digest"] = content_digest(info)
        atomic_write_json(self.path / RUN_FILE, info)

    def append_history(self, row: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _refuse_links(self.path / HISTORY)
        fd = os.open(self.path / HISTORY, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a") as fh:
            fh.write(json.dumps(row, default=_json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_history(self, epochs: int) -> None:
        """Keep the first `epochs` lines (a resumed run rewrites what came after its last checkpoint)."""
        rows = self.history()[:epochs]
        atomic_write_bytes(self.path / HISTORY, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def save_id_maps(self, users: np.ndarray, items: np.ndarray, licence_safe: bool = False) -> None:
        """Raw ids of indices 1..n; licence-safe (a restricted dataset): only their counts and sha256 digests."""
        arrays: dict[str, npt.ArrayLike]
        if licence_safe:
            from recsys.redistribution import ids_digest

            arrays = {"n_users": np.int64(len(users)), "n_items": np.int64(len(items)),
                      "users_sha256": np.array(ids_digest(users)), "items_sha256": np.array(ids_digest(items))}
        else:
            arrays = {"users": np.asarray(users, np.int64), "items": np.asarray(items, np.int64)}
        atomic_write_bytes(self.path / ID_MAPS, npz_bytes(**arrays))

    def save_test_results(self, df: pd.DataFrame) -> None:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(self.path / TEST_RESULTS, buf.getvalue())

    def artefact_hashes(self) -> dict:
        return {name: sha256_file(self.path / name) for name in REQUIRED_ARTEFACTS if (self.path / name).exists()}

    # ------------------------------------------------------------------------------------------- reading
    def info(self) -> dict:
        """run.json, checked: a run of this workbench, complete enough to use, and unedited since it was written."""
        f = self.path / RUN_FILE
        if not self.path.is_dir():
            raise RunError(f"{self.path}: no such run directory")
        if not (f.exists() or f.is_symlink()):
            raise RunError(f"{self.path}: not a run directory of this workbench (no {RUN_FILE})")
        try:
            info = json.loads(read_bytes(f, MAX_RUN_JSON))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunError(f"{f}: corrupted ({exc})") from exc
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            found = info.get("format") if isinstance(info, dict) else None
            raise RunError(f"{f}: not a run of this workbench (format {found!r}, expected {FORMAT!r})")
        for key in ("model", "dataset", "protocol", "config"):
            if key not in info:
                raise RunError(f"{f}: incomplete run record (no '{key}')")
        if "digest" in info and info["digest"] != content_digest(info):
            raise RunError(f"{f}: inconsistent: edited after the run wrote it (its content digest does not match); "
                           f"its numbers are not used")
        return info

    def history(self) -> list[dict]:
        """history.jsonl rows up to the first line that is not a JSON object (a line cut by a kill, or damage)."""
        f = self.path / HISTORY
        if not (f.exists() or f.is_symlink()):
            return []
        rows = []
        for line in read_bytes(f, MAX_HISTORY).decode("utf-8", "replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                break
            if not isinstance(row, dict):
                break
            rows.append(row)
        return rows

    def verify(self, info: dict | None = None, only: tuple[str, ...] | None = None) -> dict:
        """Check the recorded sha256 of every artefact (or of those named in `only`); a complete run must record
        them all. RunError on anything missing or different (tampered, truncated or copied from another run)."""
        info = info or self.info()
        length = ((info.get("config") or {}).get("max_len"), (info.get("protocol") or {}).get("max_len"))
        if None not in length and length[0] != length[1]:
            raise RunError(f"{self.path / RUN_FILE}: contradicts itself: max_len {length[0]} in its configuration, "
                           f"{length[1]} in its protocol (the protocol is derived from the configuration); refused")
        recorded = info.get("artefacts")
        if info.get("status") == "complete":
            missing = [n for n in REQUIRED_ARTEFACTS if not isinstance(recorded, dict) or n not in recorded]
            if missing:
                raise RunError(f"{self.path}: a complete run without the sha256 of {', '.join(missing)} in "
                               f"{RUN_FILE}; refused (its files cannot be checked)")
        for name, digest in (recorded or {}).items():
            if only is not None and name not in only:
                continue
            p = self.path / name
            if not (p.exists() or p.is_symlink()):
                raise RunError(f"{p}: missing (run.json lists it)")
            if sha256_file(p) != digest:
                raise RunError(f"{p}: contents differ from the sha256 recorded in run.json (modified, truncated "
                               f"or copied from another run)")
        return info

    def check_weights_model(self, info: dict) -> None:
        """The weights say which model and tool wrote them; RunError unless that is run.json's model."""
        meta = weights_metadata(self.path / WEIGHTS)
        if meta.get("format") != FORMAT or meta.get("model", info["model"]) != info["model"]:
            raise RunError(f"{self.path / WEIGHTS}: weights belong to another model or tool "
                           f"({meta.get('model')!r}, format {meta.get('format')!r}), not this {info['model']} run")

    def load_weights(self, expected_model: str | None = None) -> tuple[dict, dict]:
        info = self.verify()
        if expected_model and info["model"] != expected_model:
            raise RunError(f"{self.path}: this is a {info['model']} run, not {expected_model}")
        state, meta = load_weights(self.path / WEIGHTS)
        if meta.get("format") != FORMAT or meta.get("model", info["model"]) != info["model"]:
            raise RunError(f"{self.path / WEIGHTS}: weights belong to another model or tool "
                           f"({meta.get('model')!r}, format {meta.get('format')!r})")
        bound = meta.get("config_sha256")
        if bound is not None and bound != config_binding(info.get("config") or {}):
            raise RunError(f"{self.path / WEIGHTS}: the weights were trained with another configuration than "
                           f"{RUN_FILE} records (edited after training); refused")
        return state, info

    def _id_arrays(self) -> dict:
        """id_maps.npz's arrays: its recorded sha256 checked before anything is decompressed (when run.json
        records one), and the decompressed size bounded, so a crafted archive cannot take the page's memory."""
        f = self.path / ID_MAPS
        try:
            data = read_bytes(f, max_bytes(f))
            recorded = (self.info().get("artefacts") or {}).get(ID_MAPS)
            if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
                raise RunError(f"{f}: contents differ from the sha256 recorded in run.json (modified, truncated or "
                               f"copied from another run)")
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                unpacked = sum(i.file_size for i in zf.infolist())
            if unpacked > MAX_ID_MAPS_UNPACKED:
                raise RunError(f"{f}: unpacks to {unpacked:,} bytes, more than id maps can need "
                               f"({MAX_ID_MAPS_UNPACKED:,}); refused")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except RunError as exc:  # missing, a link, not a regular file, too large
            raise RunError(f"{f}: unreadable id maps ({str(exc).split(': ', 1)[-1]})") from None
        except Exception as exc:
            raise RunError(f"{f}: unreadable id maps ({exc})") from exc

    def id_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Raw ids of the run's users and items (index order); RunError for a licence-safe run, which has none."""
        z = self._id_arrays()
        if "users_sha256" in z:
            raise IdsWithheld(f"{self.path.name}: trained on a dataset that may not be redistributed, so its raw ids "
                              f"are not in the run folder; give the data folder it was trained on")
        if "users" not in z or "items" not in z:
            raise RunError(f"{self.path / ID_MAPS}: unreadable id maps (no users / items arrays)")
        return z["users"], z["items"]

    def id_maps_match(self, users: np.ndarray, items: np.ndarray) -> bool:
        """Whether raw ids rebuilt from the data are the run's own (by value, or by digest for a licence-safe run)."""
        z = self._id_arrays()
        if "users_sha256" in z:
            from recsys.redistribution import ids_digest

            return str(z["users_sha256"]) == ids_digest(users) and str(z["items_sha256"]) == ids_digest(items)
        return bool("users" in z and np.array_equal(z["users"], users) and "items" in z
                    and np.array_equal(z["items"], items))

    def test_results(self) -> pd.DataFrame:
        f = self.path / TEST_RESULTS
        try:
            return pd.read_parquet(io.BytesIO(read_bytes(f, max_bytes(f))))
        except RunError as exc:  # missing, a link, not a regular file, too large
            raise RunError(f"{f}: unreadable per-user results ({str(exc).split(': ', 1)[-1]})") from None
        except Exception as exc:
            raise RunError(f"{f}: unreadable per-user results ({exc})") from exc

    # ------------------------------------------------------------------------------------------- resume state
    def save_resume(self, state: dict) -> None:
        """Last-epoch training state: tensors, numbers and strings only, so it loads with weights_only=True."""
        resume = self.path / RESUME_DIR
        if resume.is_symlink():
            raise RunError(f"{resume}: a symbolic link; refusing to write through it")
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(resume / "state.pt", buf.getvalue())

    def has_resume(self) -> bool:
        return (self.path / RESUME_DIR / "state.pt").exists()

    def load_resume(self) -> dict:
        f = self.path / RESUME_DIR / "state.pt"
        if not self.has_resume():
            raise RunError(f"{self.path}: nothing to resume (no {RESUME_DIR}/state.pt)")
        import torch

        try:
            state = torch.load(io.BytesIO(read_bytes(f)), map_location="cpu", weights_only=True)
        except RunError:
            raise
        except Exception as exc:  # torch's own text advises weights_only=False, which would run code: not repeated
            text = str(exc)
            why = ("it holds objects other than plain tensors and numbers, and loading those could run code"
                   if "weights_only" in text or "Unsupported global" in text else
                   (text.strip().splitlines() or [type(exc).__name__])[0][:200])
            raise RunError(f"{f}: cannot resume from it ({why})") from None
        missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise RunError(f"{f}: not a resume state of this workbench (missing {', '.join(missing)})")
        return state


def clear_run(path: Path) -> None:
    """Remove the files a run wrote in `path` (and only those), so a new run can take the folder (--overwrite)."""
    path = Path(path)
    if path.is_symlink():
        raise RunError(f"{path}: a symbolic link; refusing to clear it")
    for name in (RUN_FILE, HISTORY, WEIGHTS, ID_MAPS, TEST_RESULTS, f"{RESUME_DIR}/state.pt"):
        (path / name).unlink(missing_ok=True)
    if (path / RESUME_DIR).is_dir() and not any((path / RESUME_DIR).iterdir()):
        (path / RESUME_DIR).rmdir()


RESUME_KEYS = ("epoch", "model", "optimizer", "best", "best_epoch", "bad_epochs", "train_seconds")


def recomputed_test_metrics(per_user: pd.DataFrame, names) -> dict:
    """The test metrics `names` recomputed from the per-user (per-row) results they were averaged from; a name
    with no source column is left out."""
    out: dict[str, float] = {"n": int(len(per_user))}
    for name in names:
        if name in per_user.columns and name.split("@")[0] in ("hr", "ndcg", "mrr"):
            out[name] = float(per_user[name].astype("float64").mean())
        elif name == "rmse" and "sq_error" in per_user.columns:
            out[name] = float(np.sqrt(per_user["sq_error"].astype("float64").mean()))
        elif name == "mae" and "abs_error" in per_user.columns:
            out[name] = float(per_user["abs_error"].astype("float64").mean())
        elif name == "mae" and {"pred_rating", "target_rating"} <= set(per_user.columns):
            diff = per_user["pred_rating"].astype("float64") - per_user["target_rating"].astype("float64")
            out[name] = float(diff.abs().mean())
    return out


def check_metrics(info: dict, per_user: pd.DataFrame, where: Path | str = RUN_FILE) -> None:
    """RunError ("inconsistent") unless every test metric in run.json is a number equal to what its per-user
    results give: a hand-edited metric, or one copied from another run, is never shown as real."""
    test = (info.get("metrics") or {}).get("test") if isinstance(info.get("metrics"), dict) else None
    if not isinstance(test, dict) or not test:
        raise RunError(f"{where}: a complete run without test metrics")
    bad = [k for k, v in test.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v]
    if bad:
        raise RunError(f"{where}: test metrics {', '.join(bad)} are missing or not numbers")
    again = recomputed_test_metrics(per_user, [k for k in test if k != "n"])
    unknown = sorted(set(test) - set(again))
    if unknown:
        raise RunError(f"{where}: inconsistent: test metrics {', '.join(unknown)} have no per-user results to check")
    off = [k for k in test if not np.isclose(float(test[k]), again[k], rtol=1e-9, atol=1e-12)]
    if off:
        shown = ", ".join(f"{k} {test[k]} vs {again[k]:.6g}" for k in off[:3])
        raise RunError(f"{where}: inconsistent: run.json's test metrics differ from its per-user results "
                       f"({shown}); its numbers are not used")
