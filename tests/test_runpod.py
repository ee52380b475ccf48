"""The RunPod launcher (scripts/runpod/launch.sh) before anyone rents a GPU: its decisions (scripts/runpod/plan.py)
one by one, then the whole script in --smoke mode on the CPU: a pod killed mid-run (RECSYS_CRASH_AFTER_EPOCH makes
every trained model die like `kill -9` after its first checkpointed epoch), the relaunch that resumes those runs and
skips the finished ones, a run killed before its first write that is started over, the pre-downloaded-zip and
DATA_DIR routes, all without network (a dead proxy would make any HTTP attempt fail) and without touching the
repository's checkpoints/."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

_spec = importlib.util.spec_from_file_location("runpod_plan", ROOT / "scripts" / "runpod" / "plan.py")
plan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plan)

LAUNCH = ROOT / "scripts" / "runpod" / "launch.sh"
RUNS = ["popular-ranking-ml-25m-seed0", "ncf-ranking-ml-25m-seed0", "bias-rating-ml-25m-random-seed0",
        "ncf-rating-ml-25m-random-seed0", "ss4rec-ranking-ml-25m-len200-seed0"]
TRAINED = [r for r in RUNS if not r.startswith(("popular", "bias"))]


def write_run(d: Path, status: str | None = None, resume: bool = False, history: list[dict] | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    if status is not None:
        (d / "run.json").write_text(json.dumps({"status": status, "objective": "ranking", "train_seconds": 3.5,
                                                "metrics": {"test": {"hr@10": 0.25, "ndcg@10": 0.125}}}))
    if resume:
        (d / "resume").mkdir(exist_ok=True)
        (d / "resume" / "state.pt").write_bytes(b"x")
    if history:
        (d / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    return d


# ------------------------------------------------------------------------------------------------ plan.py
def test_decide_skip_resume_fresh(tmp_path):
    assert plan.decide(tmp_path / "absent") == "fresh"
    assert plan.decide(write_run(tmp_path / "complete", "complete", resume=True)) == "skip"
    assert plan.decide(write_run(tmp_path / "done-no-state", "complete")) == "skip"          # fitted floors
    assert plan.decide(write_run(tmp_path / "checkpointed", "running", resume=True)) == "resume"
    assert plan.decide(write_run(tmp_path / "first-epoch", "running")) == "fresh"            # no state.pt yet
    assert plan.decide(write_run(tmp_path / "no-run-json", None, resume=True)) == "fresh"   # killed before run.json
    broken = write_run(tmp_path / "broken", None, resume=True)
    (broken / "run.json").write_text('{"status": "compl')                                    # unreadable
    assert plan.decide(broken) == "fresh"


def test_prepare_removes_only_partial_runs(tmp_path):
    partial = write_run(tmp_path / "partial", None)
    (partial / "id_maps.npz").write_bytes(b"half")
    assert plan.prepare(partial) == "fresh" and not partial.exists()
    kept = write_run(tmp_path / "kept", "running", resume=True)
    assert plan.prepare(kept) == "resume" and (kept / "resume" / "state.pt").exists()
    done = write_run(tmp_path / "done", "complete")
    assert plan.prepare(done) == "skip" and (done / "run.json").exists()
    assert plan.prepare(tmp_path / "never") == "fresh"


def test_data_source_prefers_local_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "downloads"))
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    archive = tmp_path / "ml-25m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-25m/ratings.csv", "userId,movieId,rating,timestamp\n")
    assert plan.data_source(zip_path=str(archive), data_dir=str(folder)) == ("zip", str(archive))
    assert plan.data_source(data_dir=str(archive)) == ("zip", str(archive))   # DATA_DIR=the zip
    assert plan.data_source(data_dir=str(folder)) == ("dir", str(folder))
    assert plan.data_source(smoke=True) == ("synthetic", None)
    assert plan.data_source() == ("download", None)                           # the only network case
    cached = tmp_path / "downloads" / "ml-25m"
    cached.mkdir(parents=True)
    (cached / ".complete").write_text("6b51fb2759a8657d3bfcbfc42b592ada\n")   # as recsys.data.download leaves it
    assert plan.data_source() == ("cached", str(cached))
    with pytest.raises(plan.PlanError, match="no such folder"):
        plan.data_source(data_dir=str(tmp_path / "nope"))
    with pytest.raises(plan.PlanError, match="no such file"):
        plan.data_source(zip_path=str(tmp_path / "nope.zip"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(plan.PlanError, match="not a zip"):
        plan.data_source(data_dir=str(tmp_path / "notes.txt"))


def test_unzip_once_atomically_and_safely(tmp_path):
    archive = tmp_path / "ml-25m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-25m/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n")
        zf.writestr("ml-25m/movies.csv", "movieId,title,genres\n1,A (1990),Drama\n")
    folder = plan.unzip(archive, tmp_path / "data")
    assert folder == tmp_path / "data" / "ml-25m" / "ml-25m"
    assert (folder / "ratings.csv").read_text().endswith("1,1,4.0,1\n")
    (folder / "ratings.csv").write_text("edited")          # a second call with the same archive does not unpack again
    assert plan.unzip(archive, tmp_path / "data") == folder and (folder / "ratings.csv").read_text() == "edited"
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]   # no temporary folder left
    md5 = plan.md5_file(archive)
    assert plan.unzip(archive, tmp_path / "data2", expected_md5=md5.upper()).is_dir()
    with pytest.raises(plan.PlanError, match="differs from the published"):
        plan.unzip(archive, tmp_path / "data3", expected_md5="0" * 32)
    assert not (tmp_path / "data3").exists()
    flat = tmp_path / "flat.zip"                          # files at the top level: the folder itself holds them
    with zipfile.ZipFile(flat, "w") as zf:
        zf.writestr("ratings.csv", "x")
        zf.writestr("movies.csv", "y")
    assert plan.unzip(flat, tmp_path / "data") == tmp_path / "data" / "flat"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(plan.PlanError, match="outside the target folder"):
        plan.unzip(evil, tmp_path / "data")
    assert not (tmp_path / "escaped.txt").exists()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(plan.PlanError):
        plan.unzip(bad, tmp_path / "data")


def test_report_reads_history_and_run_json(tmp_path):
    write_run(tmp_path / "a", "complete", history=[{"epoch": 1, "seconds": 2.0, "samples_per_second": 1000.0},
                                                   {"epoch": 2, "seconds": 1.5, "samples_per_second": 1234.4}])
    b = write_run(tmp_path / "b", resume=True)
    (b / "run.json").write_text(json.dumps({"status": "running"}))
    (b / "history.jsonl").write_text('{"epoch": 1, "seconds": 2.5, "samples_per_second": 99.0}\n{"ep')  # cut by a kill
    text = plan.report(tmp_path, ["a", "b", "c"])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines()[2:]}
    assert rows["a"][1:5] == ["complete", "2", "1,234", "3.5"]
    assert rows["a"][6] == "hr@10 0.2500, ndcg@10 0.1250"
    assert rows["b"][1:5] == ["running", "1", "99", "2.5"]      # train seconds summed from the history
    assert rows["c"][1:3] == ["missing", "0"]


def test_online_is_false_without_a_server():
    assert plan.online(f"http://127.0.0.1:{free_port()}/ml-25m.zip.md5", timeout=5) is False


# ------------------------------------------------------------------------------------------------ launch.sh --smoke
def launch(out: Path, tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    dead = f"http://127.0.0.1:{free_port()}"   # any HTTP(S) attempt would fail: the smoke run needs no network
    full_env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "RECSYS_CACHE_DIR": str(tmp / "cache"),
                "RECSYS_DATA_DIR": str(tmp / "no-downloads"), "HTTP_PROXY": dead, "HTTPS_PROXY": dead,
                "http_proxy": dead, "https_proxy": dead, "NO_PROXY": "", "no_proxy": "", **env}
    for key in ("ZIP", "DATA_DIR", "OUT_DIR", "RECSYS_CRASH_AFTER_EPOCH"):
        if key not in env:
            full_env.pop(key, None)
    return subprocess.run(["bash", str(LAUNCH), "--smoke", "--out", str(out), *args], env=full_env,
                          capture_output=True, text=True, timeout=600)


def status(out: Path, name: str) -> str | None:
    return plan.run_status(out / name)


def history(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / name / "history.jsonl").read_text().splitlines()]


def test_launcher_smoke_killed_pod_resume_skip(tmp_path):
    out = tmp_path / "runs"
    checkpoints_before = {p.name for p in (ROOT / "checkpoints").iterdir()}

    # 1. a pod that dies: every trained model is killed right after its first checkpointed epoch (of 2)
    first = launch(out, tmp_path, "--epochs", "2", RECSYS_CRASH_AFTER_EPOCH="1")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "3 run(s) did not finish" in first.stderr
    assert {r: status(out, r) for r in RUNS} == {r: ("running" if r in TRAINED else "complete") for r in RUNS}
    epoch1 = {r: history(out, r) for r in TRAINED}
    assert all(len(h) == 1 for h in epoch1.values())
    assert all((out / r / "resume" / "state.pt").is_file() for r in TRAINED)
    log = (out / "runs-log.txt").read_text()
    assert "data: synthetic ML-25M-format files at scale 0.001" in log
    for r in TRAINED:
        assert f"{r}: fresh -> FAILED (exit 137)" in log
    assert (out / "ml25m-runs.tar.gz").is_file()              # packed even when runs failed

    # 2. a run killed before its first write (folder, no run.json) is started over; pre-downloaded zip route
    (out / RUNS[0] / "run.json").unlink()
    (out / RUNS[0] / "junk.tmp").write_text("left by a kill")
    synthetic = out / ".data" / "synthetic-ml25m-0.001"
    archive = tmp_path / "ml-25m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in ("ratings.csv", "movies.csv"):
            zf.write(synthetic / f, f"ml-25m/{f}")
    complete_before = (out / RUNS[2] / "run.json").stat().st_mtime_ns
    second = launch(out, tmp_path, ZIP=str(archive))
    assert second.returncode == 0, second.stdout + second.stderr
    assert all(status(out, r) == "complete" for r in RUNS)
    assert not (out / RUNS[0] / "junk.tmp").exists()
    assert (out / RUNS[2] / "run.json").stat().st_mtime_ns == complete_before   # finished: not touched
    for r in TRAINED:                                           # resumed: epoch 1 kept as it was, epoch 2 added
        h = history(out, r)
        assert [row["epoch"] for row in h] == [1, 2] and h[0] == epoch1[r][0]
        assert json.loads((out / r / "run.json").read_text())["epochs_run"] == 2
    log = (out / "runs-log.txt").read_text()
    new = log[log.rindex("== launch"):]
    assert f"data: {archive} unpacked to" in new and "(no network)" in new
    assert f"{RUNS[0]}: starting" in new and f"{RUNS[2]}: complete, skipped" in new
    for r in TRAINED:
        assert f"{r}: resuming from its last finished epoch" in new and f"{r}: resume -> exit 0" in new

    # 3. everything finished: a relaunch skips every run; offline DATA_DIR route (the unpacked folder)
    stamps = {r: (out / r / "run.json").stat().st_mtime_ns for r in RUNS}
    unpacked = out / ".data" / "ml-25m" / "ml-25m"
    third = launch(out, tmp_path, DATA_DIR=str(unpacked))
    assert third.returncode == 0, third.stdout + third.stderr
    assert {r: (out / r / "run.json").stat().st_mtime_ns for r in RUNS} == stamps
    log = (out / "runs-log.txt").read_text()
    new = log[log.rindex("== launch"):]
    assert f"data: DATA_DIR={unpacked} (no network)" in new
    assert all(f"{r}: complete, skipped" in new for r in RUNS)
    for section in ("== environment", "== data", "== runs", "== throughput", "== pack"):
        assert section in new
    assert "torch " in new and "mamba-ssm fast path: False" in new and "GPU: none visible to torch" in new
    assert '"ratings": 25000' in new                         # the data info
    rows = [line for line in new.splitlines() if line.startswith("| ") and "-ml-25m-" in line]
    assert [line.split("|")[1].strip() for line in rows] == RUNS
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == "complete"
        if cells[0] in TRAINED:
            assert cells[2] == "2" and float(cells[3].replace(",", "")) > 0

    # the pack: every run directory without its resume state, and the log
    with tarfile.open(out / "ml25m-runs.tar.gz") as tar:
        names = tar.getnames()
        packed_log = tar.extractfile("runs-log.txt").read().decode()
    assert "runs-log.txt" in names and packed_log == log
    for r in RUNS:
        assert f"{r}/run.json" in names and f"{r}/model.safetensors" in names
    assert not [n for n in names if "/resume" in n]
    assert not [n for n in names if n.startswith(".data")]
    new = {p.name for p in (ROOT / "checkpoints").iterdir()} - checkpoints_before
    leaked = new & {*RUNS, "runs-log.txt", "ml25m-runs.tar.gz", ".data"}
    assert not leaked, f"the smoke launch wrote into the repository's checkpoints/: {leaked}"


def test_launcher_gpu_mode_refuses_a_machine_without_cuda(tmp_path):
    """Without --smoke the launcher checks the driver first (no nvidia-smi: stop), then that torch sees the GPU
    (a CPU build of torch: stop before any data or training), and logs what it found."""
    import shutil

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU path would go on to train")
    env = {**os.environ, "PYTHON": sys.executable, "RECSYS_DATA_DIR": str(tmp_path / "none"),
           "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                   if not (Path(p) / "nvidia-smi").exists())}
    if shutil.which("nvidia-smi", path=env["PATH"]) is None:
        out = subprocess.run(["bash", str(LAUNCH), "--out", str(tmp_path / "a")], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 1 and "no NVIDIA driver on this machine" in out.stderr
    fake = tmp_path / "bin" / "nvidia-smi"        # a driver that lists a GPU, with a torch that cannot use it
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ncase "$1" in -L) echo "GPU 0: NVIDIA Fake (UUID: GPU-0)";;\n'
                    '*) echo "name, memory.total [MiB], driver_version"; echo "NVIDIA Fake, 49140 MiB, 550.0";; esac\n')
    fake.chmod(0o755)
    env["PATH"] = f"{fake.parent}{os.pathsep}{env['PATH']}"
    out = subprocess.run(["bash", str(LAUNCH), "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "cannot use the GPU" in out.stdout and "environment check failed" in out.stderr
    log = (tmp_path / "b" / "runs-log.txt").read_text()
    assert "NVIDIA Fake, 49140 MiB" in log and "GPU: none visible to torch" in log
    assert "== data" not in log and not [p for p in (tmp_path / "b").iterdir() if p.is_dir()]
