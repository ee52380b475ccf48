"""The decisions of scripts/runpod/launch.sh, in Python so that they can be unit-tested (tests/test_runpod.py).

    python scripts/runpod/plan.py prepare RUN_DIR      skip | resume | fresh (a partial RUN_DIR is removed for fresh)
    python scripts/runpod/plan.py source [--smoke] [--zip ZIP] [--data-dir DIR]
                                                       where the data come from: zip PATH | dir PATH | synthetic |
                                                       cached PATH | download
    python scripts/runpod/plan.py unzip ZIP DEST [--release ml-25m]
                                                       unpack a pre-downloaded release (zip-slip checked, md5 checked
                                                       against the pinned one with --release), print the data folder
    python scripts/runpod/plan.py online URL           exit 0 when URL answers (the only network use, and only when the
                                                       data must be downloaded)
    python scripts/runpod/plan.py env [--require-cuda] GPU, torch/CUDA, mamba-ssm fast path, CPU kernels
    python scripts/runpod/plan.py report OUT_DIR RUN... one line per run: status, epochs, samples/s, train seconds

Only `source` (for a cached release), `unzip --release` and `env` import the project or torch; the rest is the
standard library, so the launcher can use them before its virtual environment exists.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

RUN_FILE = "run.json"
RESUME_STATE = Path("resume") / "state.pt"
HISTORY = "history.jsonl"
UNPACKED_MARKER = ".unpacked-md5"


class PlanError(Exception):
    """A problem the launcher reports as is (exit 2) and stops on."""


# ------------------------------------------------------------------------------------------------ runs
def run_status(run_dir: Path) -> str | None:
    """run.json's "status" ("complete", "running", ...), or None when there is no readable run.json."""
    try:
        info = json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return info.get("status") if isinstance(info, dict) else None


def decide(run_dir: str | Path) -> str:
    """What the launcher does with a run directory it is about to (re)start.

    skip:   run.json says "status": "complete" (a finished run is never trained again);
    resume: run.json exists and resume/state.pt holds at least one finished epoch (`train.py --resume DIR`);
    fresh:  anything else: no directory, or one killed before its first checkpoint (no run.json, an unreadable
            one, or run.json without resume state); the partial directory is removed and the run starts over.
    """
    run_dir = Path(run_dir)
    status = run_status(run_dir)
    if status == "complete":
        return "skip"
    if status is not None and (run_dir / RESUME_STATE).is_file():
        return "resume"
    return "fresh"


def prepare(run_dir: str | Path) -> str:
    """decide(), and for "fresh" remove what a killed attempt left (train.py refuses a folder with run.json)."""
    action = decide(run_dir)
    run_dir = Path(run_dir)
    if action == "fresh" and (run_dir.exists() or run_dir.is_symlink()):
        if run_dir.is_dir() and not run_dir.is_symlink():
            shutil.rmtree(run_dir)
        else:
            run_dir.unlink()
    return action


def _history(run_dir: Path) -> list[dict]:
    rows = []
    try:
        lines = (run_dir / HISTORY).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # a line cut by a kill
    return rows


def summary_row(run_dir: str | Path) -> dict:
    """The figures the launcher's log reports for one run directory."""
    run_dir = Path(run_dir)
    row = {"run": run_dir.name, "status": "missing", "epochs": 0, "samples_per_second": None,
           "train_seconds": None, "test": ""}
    if not run_dir.exists():
        return row
    try:
        info = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        info = {}
    history = _history(run_dir)
    row["status"] = info.get("status", "no run.json")
    row["epochs"] = len(history)
    if history:
        row["samples_per_second"] = history[-1].get("samples_per_second")
    row["train_seconds"] = info.get("train_seconds",
                                    sum(r.get("seconds", 0.0) for r in history) if history else None)
    test = (info.get("metrics") or {}).get("test") or {}
    keys = ["rmse", "mae"] if info.get("objective") == "rating" else ["hr@10", "ndcg@10"]
    row["test"] = ", ".join(f"{k} {test[k]:.4f}" for k in keys if isinstance(test.get(k), (int, float)))
    row["device"] = (info.get("environment") or {}).get("device", "")
    return row


def report(out_dir: str | Path, names: list[str]) -> str:
    lines = ["| run | status | epochs | samples/s (last epoch) | train seconds | device | test |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        r = summary_row(Path(out_dir) / name)
        sps = f"{r['samples_per_second']:,.0f}" if r["samples_per_second"] else "n/a (fitted, no epochs)"
        if r["status"] == "missing":
            sps = "n/a"
        secs = f"{r['train_seconds']:,.1f}" if isinstance(r["train_seconds"], (int, float)) else "n/a"
        lines.append(f"| {r['run']} | {r['status']} | {r['epochs']} | {sps} | {secs} | {r.get('device', '')} | "
                     f"{r['test']} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ data
def cached_release(name: str) -> Path | None:
    """The complete downloaded copy of a release (as recsys.data finds it without the network), or None."""
    try:
        from recsys.data import download as dl
    except ImportError:
        return None
    folder = dl.default_data_root() / name
    return folder if dl.is_complete(folder, dl.get_release(name)) else None


def data_source(smoke: bool = False, zip_path: str | None = None, data_dir: str | None = None,
                release: str = "ml-25m") -> tuple[str, str | None]:
    """Where the launcher's data come from, network last:

    zip:       ZIP=..., or DATA_DIR pointing at a zip file: unpacked locally, no network;
    dir:       DATA_DIR=... (an unzipped release, or any folder of ML-25M-format files): used as is, no network;
    synthetic: --smoke without either: tiny ML-25M-shaped files from recsys.data.synthetic;
    cached:    the release was downloaded before (its folder is complete): no network;
    download:  nothing local; the only case that needs files.grouplens.org.
    """
    if zip_path:
        if not Path(zip_path).is_file():
            raise PlanError(f"ZIP={zip_path}: no such file")
        return "zip", str(Path(zip_path).resolve())
    if data_dir:
        p = Path(data_dir)
        if p.is_file():
            if not zipfile.is_zipfile(p):
                raise PlanError(f"DATA_DIR={data_dir} is a file but not a zip archive")
            return "zip", str(p.resolve())
        if not p.is_dir():
            raise PlanError(f"DATA_DIR={data_dir}: no such folder")
        return "dir", str(p.resolve())
    if smoke:
        return "synthetic", None
    cached = cached_release(release)
    if cached is not None:
        return "cached", str(cached)
    return "download", None


def md5_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _safe_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise PlanError(f"refusing to unpack {info.filename!r}: it would land outside the target folder "
                            f"(not a genuine MovieLens archive)")
    return infos


def _data_folder(root: Path) -> Path:
    """The folder of the unpacked files: the zip's single top-level folder (ml-25m/ in GroupLens' zip), else root."""
    entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return root


def unzip(zip_path: str | Path, dest: str | Path, expected_md5: str | None = None) -> Path:
    """Unpack a pre-downloaded release into dest/<zip name without .zip>, once: a second call with the same archive
    (same md5) returns the folder without unpacking again; another archive replaces it. Atomic: the files are
    unpacked into a temporary folder next to the target and renamed, so a kill leaves no half-unpacked folder.
    expected_md5: the release's published checksum; a mismatch is an error and nothing is unpacked."""
    zip_path, dest = Path(zip_path), Path(dest)
    if not zip_path.is_file():
        raise PlanError(f"{zip_path}: no such file")
    digest = md5_file(zip_path)
    if expected_md5 and digest != expected_md5.lower():
        raise PlanError(f"{zip_path}: md5 {digest} differs from the published {expected_md5} (a truncated or "
                        f"different download; fetch it again)")
    target = dest / zip_path.name.removesuffix(".zip")
    marker = target / UNPACKED_MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        return _data_folder(target)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=dest))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                _safe_members(zf)
                zf.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise PlanError(f"{zip_path}: not a valid zip archive ({exc})") from exc
        (tmp / UNPACKED_MARKER).write_text(digest + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _data_folder(target)


def online(url: str, timeout: float = 15) -> bool:
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return 200 <= resp.status < 400
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ environment
def environment() -> str:
    import platform

    import torch

    lines = [f"python {platform.python_version()} ({sys.executable})", f"torch {torch.__version__}",
             f"CUDA (torch build) {torch.version.cuda or 'none (CPU build)'}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability "
                         f"{p.major}.{p.minor}")
        lines.append(f"bf16 supported: {torch.cuda.is_bf16_supported()}")
    else:
        lines.append("GPU: none visible to torch")
    from recsys.models.mamba import fast_path_available

    lines.append(f"mamba-ssm fast path: {fast_path_available()}")
    try:
        from recsys.models import native

        lines.append(f"CPU kernels: {'native' if native.available() else 'pure PyTorch'} ({native.status()})")
    except Exception as exc:  # informative only
        lines.append(f"CPU kernels: unknown ({exc})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/runpod/plan.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("run_dir")
    p = sub.add_parser("decide")
    p.add_argument("run_dir")
    p = sub.add_parser("source")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--zip", dest="zip_path")
    p.add_argument("--data-dir")
    p.add_argument("--release", default="ml-25m")
    p = sub.add_parser("unzip")
    p.add_argument("zip_path")
    p.add_argument("dest")
    p.add_argument("--release", help="check the archive's md5 against this release's published one")
    p = sub.add_parser("online")
    p.add_argument("url")
    p = sub.add_parser("env")
    p.add_argument("--require-cuda", action="store_true")
    p = sub.add_parser("report")
    p.add_argument("out_dir")
    p.add_argument("runs", nargs="+")
    args = ap.parse_args(argv)
    try:
        if args.command == "prepare":
            print(prepare(args.run_dir))
        elif args.command == "decide":
            print(decide(args.run_dir))
        elif args.command == "source":
            kind, path = data_source(args.smoke, args.zip_path, args.data_dir, args.release)
            print(kind if path is None else f"{kind} {path}")
        elif args.command == "unzip":
            md5 = None
            if args.release:
                from recsys.data.download import get_release

                md5 = get_release(args.release).md5
            print(unzip(args.zip_path, args.dest, md5))
        elif args.command == "online":
            return 0 if online(args.url) else 1
        elif args.command == "env":
            print(environment(), flush=True)
            import torch

            if args.require_cuda and not torch.cuda.is_available():
                raise PlanError(f"this torch build ({torch.__version__}) cannot use the GPU "
                                f"(torch.cuda.is_available() is False)")
        elif args.command == "report":
            print(report(args.out_dir, args.runs))
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
