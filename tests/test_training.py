"""Training engine, floors, NCF, run directories and scripts/train.py, on the embedded ML-100K."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.compare import scan_runs
from recsys.config import ConfigError, resolve_config
from recsys.runs import RunDirectory, RunError
from recsys.training.runner import run_training
from tests.conftest import ROOT, free_port

SMALL = {"gmf_dim": 8, "mlp_dims": [16, 8], "batch_size": 4096, "patience": 50, "cpu_threads": 1}


def train(tmp_path, model, name, **over):
    cfg = resolve_config(model, {}, {**(SMALL if model == "ncf" else {}), **over})
    return run_training(cfg, tmp_path / name, ["python", "scripts/train.py", "--model", model], progress=False)


def cli(*args, env=None, check=True):
    out = subprocess.run([sys.executable, "scripts/train.py", *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if check and out.returncode != 0:
        raise AssertionError(out.stderr[-3000:])
    return out


def test_floors_and_ncf_rating_beats_them(tmp_path):
    gm = train(tmp_path, "global-mean", "gm")
    bias = train(tmp_path, "bias", "bias")
    ncf = train(tmp_path, "ncf", "ncf", objective="rating", epochs=6)
    rm = {n: r["metrics"]["test"]["rmse"] for n, r in (("gm", gm), ("bias", bias), ("ncf", ncf))}
    assert rm["bias"] < rm["gm"] - 0.03  # biases carry real signal
    assert rm["ncf"] < rm["gm"]
    losses = [h["train_loss"] for h in RunDirectory(tmp_path / "ncf").history()]
    assert losses[-1] < losses[0] * 0.9  # training lowers the loss
    # same users and protocol for every rating run: the chronological hold-out of each user's last rating
    assert gm["metrics"]["test"]["n"] == bias["metrics"]["test"]["n"] == ncf["metrics"]["test"]["n"] == 943
    for r in (gm, bias, ncf):
        assert set(r["metrics"]["test"]) >= {"rmse", "mae"} and r["protocol"]["split"] == "chronological"


def test_ranking_run_directory_contract(tmp_path):
    train(tmp_path, "ncf", "rank", epochs=2)
    run = RunDirectory(tmp_path / "rank")
    on_disk = run.info()
    assert on_disk["status"] == "complete" and on_disk["command"].startswith("python scripts/train.py")
    for k in ("hr@10", "ndcg@10", "mrr@10"):
        assert 0 <= on_disk["metrics"]["test"][k] <= 1
    assert on_disk["protocol"]["split"] == "leave_one_out_by_time" and on_disk["dataset"]["fingerprint"]
    assert len(run.history()) == 2
    users, items = run.id_maps()
    assert len(users) == on_disk["dataset"]["n_users"] and len(items) == on_disk["dataset"]["n_items"]
    res = run.test_results()
    assert len(res) == 943 and {"user_id", "rank", "hr@10", "gap_before_target", "history_length"} <= set(res.columns)
    assert np.isclose(res["ndcg@10"].mean(), on_disk["metrics"]["test"]["ndcg@10"])
    state, _ = run.load_weights("ncf")
    assert "user_gmf.weight" in state
    with pytest.raises(RunError, match="ncf run, not ss4rec"):
        run.load_weights("ss4rec")
    assert [r.path.name for r in scan_runs(tmp_path).runs] == ["rank"]


def test_tampered_truncated_and_foreign_runs_are_refused(tmp_path):
    train(tmp_path, "popular", "pop")
    run = RunDirectory(tmp_path / "pop")
    w = run.path / "model.safetensors"
    blob = bytearray(w.read_bytes())
    blob[-1] ^= 0xFF
    w.write_bytes(bytes(blob))
    with pytest.raises(RunError, match="sha256"):
        run.load_weights()
    w.write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.raises(RunError):
        run.load_weights()
    from recsys.runs import load_weights

    with pytest.raises(RunError, match="truncated or corrupted"):
        load_weights(w)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "run.json").write_text(json.dumps({"model": "x"}))
    with pytest.raises(RunError, match="not a run of this workbench"):
        RunDirectory(tmp_path / "foreign").info()
    (tmp_path / "foreign" / "run.json").write_text("{not json")
    with pytest.raises(RunError, match="corrupted"):
        RunDirectory(tmp_path / "foreign").info()
    with pytest.raises(RunError, match="no such run directory"):
        RunDirectory(tmp_path / "nothing").info()


def test_a_run_json_whose_protocol_contradicts_its_configuration_is_refused(tmp_path):
    """max_len has one owner (the configuration); a run.json whose protocol says otherwise (edited with its digest
    recomputed) is refused rather than shown with one length on one page and another elsewhere."""
    from recsys.runs import content_digest

    train(tmp_path, "popular", "pop")
    f = tmp_path / "pop" / "run.json"
    info = json.loads(f.read_text())
    assert info["protocol"]["max_len"] == info["config"]["max_len"]
    RunDirectory(f.parent).verify()
    info["protocol"]["max_len"] = info["config"]["max_len"] + 1
    info["digest"] = content_digest(info)
    f.write_text(json.dumps(info))
    with pytest.raises(RunError, match="contradicts itself: max_len"):
        RunDirectory(f.parent).verify()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/recsys-pwned",))


def test_resume_state_cannot_execute_code(tmp_path):
    run = RunDirectory(tmp_path / "r")
    (run.path / "resume").mkdir(parents=True)
    with open(run.path / "resume" / "state.pt", "wb") as fh:
        pickle.dump({"epoch": _Exploit()}, fh)
    if os.path.exists("/tmp/recsys-pwned"):
        os.remove("/tmp/recsys-pwned")
    with pytest.raises(RunError, match="cannot resume"):
        run.load_resume()
    assert not os.path.exists("/tmp/recsys-pwned")


def test_killed_run_resumes_to_the_same_result(tmp_path):
    args = ["--model", "ncf", "--objective", "rating", "--epochs", "3", "--quiet"]
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    cli(*args, *sets, "--out", str(tmp_path / "whole"))
    killed = cli(*args, *sets, "--out", str(tmp_path / "broken"), env={"RECSYS_CRASH_AFTER_EPOCH": "1"}, check=False)
    assert killed.returncode == 137
    broken = RunDirectory(tmp_path / "broken")
    assert broken.info()["status"] == "running" and len(broken.history()) == 1
    cli("--resume", str(tmp_path / "broken"), "--quiet")
    whole = RunDirectory(tmp_path / "whole")
    a, b = whole.info(), broken.info()
    assert b["status"] == "complete" and len(broken.history()) == 3
    assert a["metrics"]["test"]["rmse"] == pytest.approx(b["metrics"]["test"]["rmse"], abs=1e-7)
    wa, _ = whole.load_weights()
    wb, _ = broken.load_weights()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
    assert [h["train_loss"] for h in whole.history()] == pytest.approx([h["train_loss"] for h in broken.history()])


def test_cli_errors_are_clear(tmp_path):
    out = cli("--help")
    assert "--resume" in out.stdout and "--data-dir" in out.stdout
    bad = cli("--model", "ncf", "--set", "nonsense=1", check=False)
    assert bad.returncode == 2 and "unknown option 'nonsense'" in bad.stderr
    bad = cli("--model", "ncf", "--dataset", "ml-7m", "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "unknown dataset" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("--resume", str(tmp_path / "missing"), check=False)
    assert bad.returncode == 2 and "no such run directory" in bad.stderr
    with pytest.raises(ConfigError, match="floor is a rating model"):
        resolve_config("bias", {}, {"objective": "ranking"})
    with pytest.raises(ConfigError, match="leave-one-out"):
        resolve_config("ncf", {}, {"split": "random"})


def test_distributed_two_process_gloo(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={free_port()}",
         "scripts/train.py", "--model", "ncf", "--objective", "rating", "--device", "cpu", "--epochs", "2",
         "--quiet", "--out", str(tmp_path / "ddp"), "--set", "batch_size=2048", "--set", "cpu_threads=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = RunDirectory(tmp_path / "ddp").info()
    assert info["environment"]["world_size"] == 2 and info["status"] == "complete"
    # recorded as it runs again from a fresh clone: the project's venv torchrun (or a plain torchrun)
    venv = Path(sys.executable).is_relative_to(ROOT)
    torchrun = str(Path(sys.executable).relative_to(ROOT).with_name("torchrun")) if venv else "torchrun"
    assert info["command"].startswith(f"{torchrun} --nproc_per_node=2 scripts/train.py")
    hist = RunDirectory(tmp_path / "ddp").history()
    assert len(hist) == 2 and hist[1]["train_loss"] < hist[0]["train_loss"]


def test_reevaluate_with_seen_items_masked(tmp_path):
    from recsys.training.reevaluate import evaluate_run

    train(tmp_path, "ncf", "ncf", epochs=1)
    info = evaluate_run(tmp_path / "ncf", tmp_path / "ncf-masked", {"mask_seen": True}, ["python", "evaluate"])
    plain, masked = RunDirectory(tmp_path / "ncf").test_results(), RunDirectory(tmp_path / "ncf-masked").test_results()
    assert (masked["rank"].to_numpy() <= plain["rank"].to_numpy()).all()  # masking only removes competitors
    assert (masked["rank"] < plain["rank"]).any()
    assert info["protocol"]["mask_seen"] is True and info["evaluated_from"]["run_id"] == "ncf"
    RunDirectory(tmp_path / "ncf-masked").load_weights("ncf")  # artefact hashes recorded for the new run
    with pytest.raises(ConfigError, match="only evaluation settings"):
        evaluate_run(tmp_path / "ncf", tmp_path / "x", {"lr": 0.1}, ["x"])


def test_resume_refuses_options_that_would_change_the_run(tmp_path):
    args = ["--model", "ncf", "--objective", "rating", "--epochs", "2", "--quiet"]
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    killed = cli(*args, *sets, "--out", str(tmp_path / "run"), env={"RECSYS_CRASH_AFTER_EPOCH": "1"}, check=False)
    assert killed.returncode == 137
    for extra in (["--epochs", "5"], ["--set", "lr=0.1"], ["--seed", "3"], ["--overwrite"]):
        out = cli("--resume", str(tmp_path / "run"), *extra, check=False)
        assert out.returncode == 2 and "cannot change it" in out.stderr, (extra, out.stderr)
    assert len(RunDirectory(tmp_path / "run").history()) == 1  # untouched
    cli("--resume", str(tmp_path / "run"), "--quiet")
    assert RunDirectory(tmp_path / "run").info()["status"] == "complete"


def test_recorded_command_is_shell_quoted_and_resumes(tmp_path):
    import shlex

    out = tmp_path / "a folder with spaces"
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    killed = cli("--model", "ncf", "--objective", "rating", "--epochs", "2", "--quiet", *sets, "--out", str(out),
                 env={"RECSYS_CRASH_AFTER_EPOCH": "1"}, check=False)
    assert killed.returncode == 137
    recorded = RunDirectory(out).info()["command"]
    argv = shlex.split(recorded)
    assert argv[argv.index("--out") + 1] == str(out)  # one argument, spaces and all
    cli("--resume", str(out), "--quiet")
    info = RunDirectory(out).info()
    assert info["status"] == "complete" and str(out) in shlex.split(info["command"])
