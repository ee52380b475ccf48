"""Fault injection on run folders and training (docs/reliability.md lists each fault with its test): every fault gets
a clear message, never a wrong number, a hang or a lost epoch."""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from recsys import compare as C
from recsys.cli.train import main as train_main
from recsys.config import TrainConfig, resolve_config
from recsys.runs import (
    HISTORY,
    ID_MAPS,
    RUN_FILE,
    TEST_RESULTS,
    WEIGHTS,
    RunDirectory,
    RunError,
    content_digest,
    sha256_file,
)
from recsys.training.runner import dataset_name, run_training
from tests.conftest import ROOT, shared_dir

TINY = ["--set", "gmf_dim=8", "--set", "mlp_dims=[16,8]", "--set", "batch_size=4096", "--set", "cpu_threads=1"]


@pytest.fixture(scope="module")
def base_runs(tmp_path_factory):
    """A popularity run and a tiny NCF run on the embedded ML-100K, written by the real trainer."""
    root = tmp_path_factory.mktemp("runs")
    run_training(resolve_config("popular", {}, {}), root / "pop", ["test"], progress=False)
    run_training(resolve_config("ncf", {}, {"gmf_dim": 8, "mlp_dims": [16, 8], "batch_size": 4096, "epochs": 2,
                                            "cpu_threads": 1}), root / "ncf", ["test"], progress=False)
    return root


def copy_run(base_runs, name, tmp_path) -> Path:
    dst = tmp_path / "runs" / name
    shutil.copytree(base_runs / name, dst)
    return dst


def edit(path: Path, fn, forge_digest: bool = False) -> None:
    info = json.loads((path / RUN_FILE).read_text())
    fn(info)
    if forge_digest:
        info["digest"] = content_digest(info)
    (path / RUN_FILE).write_text(json.dumps(info))


def scanned(path: Path) -> C.Run:
    found = C.scan_runs(path.parent)
    run = next(r for r in found.runs if r.path == path) if any(r.path == path for r in found.runs) else None
    assert run is not None, found.errors
    return run


# ------------------------------------------------------------------------------------------- runs that cannot lie
def test_a_genuine_run_passes_every_check(base_runs):
    for name in ("pop", "ncf"):
        run = scanned(base_runs / name)
        assert run.problem is None and run.status == "complete" and run.info["metrics"]["test"]["n"] == 943


def test_hand_edited_metric_is_inconsistent(base_runs, tmp_path):
    p = copy_run(base_runs, "ncf", tmp_path)
    edit(p, lambda i: i["metrics"]["test"].update({"ndcg@10": 0.9}))
    found = C.scan_runs(p.parent)
    assert found.errors and "inconsistent: edited after the run wrote it" in found.errors[0][1]
    edit(p, lambda i: None, forge_digest=True)  # even with the digest forged, the per-user results disagree
    run = scanned(p)
    assert run.status == "inconsistent" and run.info["metrics"] == {} and "differ from its per-user" in run.problem
    with pytest.raises(RunError, match="not used"):
        C.load_test_results(run.path, run.info)


def test_deleting_the_hashes_does_not_switch_the_check_off(base_runs, tmp_path):
    p = copy_run(base_runs, "pop", tmp_path)
    edit(p, lambda i: i.pop("artefacts"), forge_digest=True)
    (p / WEIGHTS).write_bytes((p / WEIGHTS).read_bytes()[:-8] + b"\x00" * 8)  # tampered weights
    assert "without the sha256" in scanned(p).problem
    from recsys.inference import load_run

    with pytest.raises(RunError, match="without the sha256"):
        load_run(p)


def test_run_json_of_another_model_is_refused_everywhere(base_runs, tmp_path):
    p = copy_run(base_runs, "pop", tmp_path)
    shutil.copyfile(base_runs / "ncf" / RUN_FILE, p / RUN_FILE)  # another run's record in this folder
    assert "differ from the sha256" in scanned(p).problem
    q = copy_run(base_runs, "ncf", tmp_path)
    edit(q, lambda i: i.update(model="popular"), forge_digest=True)  # claims to be another model
    assert "belong to another model" in scanned(q).problem


def test_null_metrics_and_bad_history_lines_give_a_message_not_a_crash(base_runs, tmp_path):
    p = copy_run(base_runs, "ncf", tmp_path)
    edit(p, lambda i: i["metrics"]["test"].update({"hr@10": None}), forge_digest=True)
    with open(p / HISTORY, "a") as fh:
        fh.write("5\n{\"epoch\": 9}\n")
    run = scanned(p)
    assert "missing or not numbers" in run.problem
    assert len(RunDirectory(p).history()) == 2  # rows up to the line that is not an object
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.session_state["runs-folder"] = str(p.parent)
    at.run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    assert any("failed a check" in e.label for e in at.expander)


# ------------------------------------------------------------------------------------------- untrusted files
def test_fifo_run_json_and_device_links_do_not_hang_or_leak(base_runs, tmp_path):
    p = copy_run(base_runs, "pop", tmp_path)
    (p / RUN_FILE).unlink()
    os.mkfifo(p / RUN_FILE)
    found = C.scan_runs(p.parent)  # would block forever on open() without O_NONBLOCK
    assert "not a regular file" in found.errors[0][1]
    q = copy_run(base_runs, "ncf", tmp_path)
    (q / WEIGHTS).unlink()
    (q / WEIGHTS).symlink_to("/dev/zero")
    with pytest.raises(RunError, match="symbolic link"):
        sha256_file(q / WEIGHTS)
    (q / TEST_RESULTS).unlink()
    (q / TEST_RESULTS).symlink_to("/etc/passwd")
    with pytest.raises(RunError, match="symbolic link"):
        RunDirectory(q).test_results()


def test_writes_never_follow_symlinks_and_are_world_readable(base_runs, tmp_path):
    p = copy_run(base_runs, "ncf", tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    (p / HISTORY).unlink()
    (p / HISTORY).symlink_to(outside)
    with pytest.raises(RunError, match="symbolic link"):
        RunDirectory(p).append_history({"epoch": 1})
    assert outside.read_text() == "keep\n"
    for name in (RUN_FILE, WEIGHTS, ID_MAPS, TEST_RESULTS):
        assert stat.S_IMODE((base_runs / "ncf" / name).stat().st_mode) == 0o644, name


def test_identical_runs_give_byte_identical_artefacts(base_runs, tmp_path):
    run_training(resolve_config("popular", {}, {}), tmp_path / "again", ["test"], progress=False)
    for name in (WEIGHTS, ID_MAPS, TEST_RESULTS):
        assert (tmp_path / "again" / name).read_bytes() == (base_runs / "pop" / name).read_bytes(), name


# ------------------------------------------------------------------------------------------- training
def cli(*args, env=None):
    return subprocess.run([sys.executable, "scripts/train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def test_resume_after_early_stopping_ends_where_the_unbroken_run_did(tmp_path):
    args = ["--model", "ncf", "--epochs", "30", "--quiet", *TINY, "--set", "patience=1", "--set", "lr=0.02"]
    whole = cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    stopped_at = RunDirectory(tmp_path / "whole").info()["epochs_run"]
    assert stopped_at < 30  # early stopping fired
    killed = cli(*args, "--out", str(tmp_path / "killed"), env={"RECSYS_CRASH_AFTER_EPOCH": str(stopped_at)})
    assert killed.returncode == 137
    resumed = cli("--resume", str(tmp_path / "killed"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a, b = RunDirectory(tmp_path / "whole").info(), RunDirectory(tmp_path / "killed").info()
    assert b["epochs_run"] == stopped_at and a["metrics"] == b["metrics"]
    assert (tmp_path / "whole" / WEIGHTS).read_bytes() == (tmp_path / "killed" / WEIGHTS).read_bytes()


def test_run_killed_before_its_first_checkpoint_is_shown_and_restarts(tmp_path):
    out = tmp_path / "runs" / "dead"
    r = cli("--model", "ncf", "--epochs", "2", "--quiet", *TINY, "--out", str(out),
            env={"RECSYS_CRASH_AFTER_EPOCH": "1"})
    assert r.returncode == 137
    shutil.rmtree(out / "resume")  # as if killed inside epoch 1: nothing to resume from
    run = scanned(out)
    assert run.status == "interrupted" and "--resume" in run.problem  # not "running" forever
    again = cli("--resume", str(out), "--quiet")
    assert again.returncode == 0, again.stderr
    assert "from the start" in again.stdout and RunDirectory(out).info()["status"] == "complete"


def test_diverging_loss_fails_the_run_and_overwrite_is_the_way_out(tmp_path):
    out = tmp_path / "div"
    r = cli("--model", "ncf", "--epochs", "3", "--quiet", *TINY, "--set", "lr=1e6", "--out", str(out))
    assert r.returncode == 2 and "diverged" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    info = RunDirectory(out).info()
    assert info["status"] == "failed" and "diverged" in info["failure"]
    refused = cli("--model", "ncf", "--epochs", "1", "--quiet", *TINY, "--out", str(out))
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    ok = cli("--model", "ncf", "--epochs", "1", "--quiet", *TINY, "--out", str(out), "--overwrite")
    assert ok.returncode == 0, ok.stderr
    assert RunDirectory(out).info()["status"] == "complete"


def test_disk_full_is_one_line_and_the_run_stays_resumable(tmp_path, monkeypatch, capsys):
    import recsys.runs as runs_module

    real = runs_module.atomic_write_bytes
    calls = {"n": 0}

    def full_disk(path, data):
        if Path(path).name == "state.pt":
            calls["n"] += 1
            if calls["n"] == 2:  # the second epoch's checkpoint cannot be written
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(runs_module, "atomic_write_bytes", full_disk)
    out = tmp_path / "full"
    code = train_main(["--model", "ncf", "--epochs", "3", "--quiet", *TINY, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0] and "resumed" in err[0]
    monkeypatch.setattr(runs_module, "atomic_write_bytes", real)
    assert RunDirectory(out).load_resume()["epoch"] == 0  # epoch 1's checkpoint is intact
    assert train_main(["--resume", str(out), "--quiet"]) == 0
    assert RunDirectory(out).info()["epochs_run"] == 3


def test_bad_resume_file_and_missing_command_are_clear(base_runs, tmp_path, capsys):
    import torch

    p = copy_run(base_runs, "ncf", tmp_path)
    edit(p, lambda i: i.update(status="running"), forge_digest=True)
    torch.save({"epoch": 0, "model": {}}, p / "resume" / "state.pt")
    assert train_main(["--resume", str(p), "--quiet"]) == 2
    assert "missing optimizer" in capsys.readouterr().err
    edit(p, lambda i: i.pop("command"), forge_digest=True)
    assert train_main(["--resume", str(p), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "records no command" in err and "weights_only=False" not in err


# ------------------------------------------------------------------------------------------- provenance
def test_provenance_of_a_run(base_runs):
    info = RunDirectory(base_runs / "pop").info()
    env = info["environment"]
    assert {"git_commit", "git_dirty", "cpu_kernels"} <= set(env)
    assert info["config"]["dataset"] == "ml-100k"
    assert dataset_name(TrainConfig(data_dir="/somewhere/ml-1m")) == "ml-1m"
    assert dataset_name(TrainConfig()) == "ml-100k"


def test_dataset_name_comes_from_the_data_dir(tmp_path):
    ml1m = shared_dir("ml-1m")
    out = tmp_path / "p"
    code = train_main(["--model", "popular", "--data-dir", str(ml1m), "--set", "timestamped_users_only=true",
                       "--out", str(out), "--quiet"])
    assert code == 0
    info = RunDirectory(out).info()
    assert info["dataset"]["name"] == "ml-1m" and info["config"]["dataset"] == "ml-1m"
