"""Campaigns (recsys-campaign) and the run folder's writer lock: plans, status, a runner killed and run again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recsys.campaign import PlanError, inspect, load_plan, render
from recsys.cli.train import main as train_main
from recsys.locking import LOCK_FILE, RunLock, lock_holder
from recsys.runs import RunDirectory, RunError
from tests.conftest import ROOT

NCF_SMALL = {"gmf_dim": 8, "mlp_dims": [16, 8], "batch_size": 4096, "patience": 50, "epochs": 3, "cpu_threads": 1}


def plan_file(tmp_path: Path, root: Path, runs: list[dict], name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "root": str(root), "runs": runs}))
    return path


def tiny_runs() -> list[dict]:
    return [{"model": "ncf", "objective": "rating", "seeds": [0, 1], "set": NCF_SMALL},
            {"model": "popular", "masked": True}]


def campaign(*args, check=True, timeout=600):
    out = subprocess.run([sys.executable, "scripts/campaign.py", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(out.stdout[-3000:] + out.stderr[-3000:])
    return out


def wait_for(predicate, seconds: float = 120, what: str = "") -> None:
    deadline = time.time() + seconds
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def learning(run: Path) -> list[dict]:
    """history.jsonl without its timings: what a resumed run must reproduce exactly."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_second")}
            for r in RunDirectory(run).history()]


# --------------------------------------------------------------------------------------------- the writer lock
def test_a_run_folder_has_one_writer(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, "first writer"):
        assert (run / LOCK_FILE).exists()
        holder = lock_holder(run)
        assert holder["pid"] == os.getpid() and holder["command"] == "first writer"
        with pytest.raises(RunError, match=f"being written by pid {os.getpid()}"):
            RunLock(run).acquire()
    assert lock_holder(run) is None and not run.exists()  # a folder the lock made and nothing wrote is removed
    run.mkdir()
    with RunLock(run):
        pass
    assert run.is_dir() and not (run / LOCK_FILE).exists()


def test_a_killed_holder_releases_the_lock(tmp_path):
    run = tmp_path / "run"
    code = (f"import time; from recsys.locking import RunLock; RunLock({str(run)!r}, 'holder').acquire(); "
            f"print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert lock_holder(run)["pid"] == proc.pid
        with pytest.raises(RunError, match="being written by"):
            RunLock(run).acquire()
    finally:
        proc.kill()
        proc.wait()
    assert (run / LOCK_FILE).exists() and lock_holder(run) is None  # the file stays, the lock went with the process
    with RunLock(run, "second"):
        assert lock_holder(run)["command"] == "second"


def test_the_next_writer_removes_what_a_killed_atomic_write_left(tmp_path):
    run = tmp_path / "run"
    (run / "resume").mkdir(parents=True)
    for name in ("run.json.k2j3.tmp", "resume/state.pt.x9.tmp"):
        (run / name).write_bytes(b"half")
    (run / "history.jsonl").write_text("{}\n")
    with RunLock(run):
        assert sorted(p.name for p in run.rglob("*") if p.is_file()) == [LOCK_FILE, "history.jsonl"]


def test_training_refuses_a_folder_another_process_writes(tmp_path, capsys):
    out = tmp_path / "ncf"
    sets = [a for k, v in NCF_SMALL.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    with RunLock(out, "someone else"):
        rc = train_main(["--model", "ncf", "--objective", "rating", *sets, "--out", str(out), "--quiet"])
    assert rc == 2
    assert "being written by pid" in capsys.readouterr().err
    assert not (out / "run.json").exists()


# --------------------------------------------------------------------------------------------- plans
def test_plan_jobs_are_named_and_configured_as_train_would(tmp_path):
    plan = load_plan(plan_file(tmp_path, tmp_path / "runs", tiny_runs()))
    keys = [j.key for j in plan.jobs]
    assert keys == ["ncf-rating-ml-100k-chronological-seed0", "ncf-rating-ml-100k-chronological-seed1",
                    "popular-ranking-ml-100k-seed0", "popular-ranking-ml-100k-masked-seed0"]
    masked = plan.jobs[3]
    assert masked.kind == "evaluate" and masked.after == "popular-ranking-ml-100k-seed0"
    assert plan.jobs[1].config["seed"] == 1 and plan.jobs[1].config["gmf_dim"] == 8
    assert all(j.path.parent == tmp_path / "runs" for j in plan.jobs)


@pytest.mark.parametrize("runs, message", [
    ([{"model": "ncf", "colour": "red"}], "unknown key"),
    ([{"model": "nope"}], "unknown model 'nope'"),
    ([{"model": "ncf", "set": {"lr": -1}}], "lr must be a number > 0"),
    ([{"model": "ncf", "seeds": [0, "1"]}], "seeds"),
    ([{"model": "ncf"}, {"model": "ncf"}], "both make ncf-ranking-ml-100k-seed0"),
    ([{"config": "configs/ncf-ranking.yaml"}], "no 'model'"),
    ([{"model": "ncf", "config": "configs/none.yaml"}], "cannot read config"),
])
def test_bad_plans_are_refused_before_anything_runs(tmp_path, runs, message):
    with pytest.raises(PlanError, match=message):
        load_plan(plan_file(tmp_path, tmp_path / "runs", runs))
    assert not (tmp_path / "runs").exists()


def test_a_plan_that_is_not_yaml_or_has_no_runs_gets_a_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe runs: [")
    assert "cannot read the plan" in campaign("status", str(bad), check=False).stderr
    bad.write_text("name: x\n")
    out = campaign("status", str(bad), check=False)
    assert out.returncode == 2 and "non-empty list under 'runs'" in out.stderr


# --------------------------------------------------------------------------------------------- running
def test_a_killed_campaign_resumes_to_the_same_results(tmp_path):
    """The runner is killed (-9) mid-way through a run; its child stops with it, and running the plan again
    finishes every run with the metrics and weights an unbroken campaign gets. A corrupted folder in the plan gets
    a message and the other runs go on."""
    whole = plan_file(tmp_path, tmp_path / "whole", tiny_runs(), "whole")
    campaign("run", str(whole), "--parallel", "2", "--quiet")
    broken_root = tmp_path / "broken"
    runs = tiny_runs() + [{"model": "bias", "objective": "rating"}]
    broken = plan_file(tmp_path, broken_root, runs, "broken")
    corrupted = broken_root / "bias-rating-ml-100k-chronological-seed0"
    corrupted.mkdir(parents=True)
    (corrupted / "run.json").write_text("{not json")

    first = broken_root / "ncf-rating-ml-100k-chronological-seed0"
    proc = subprocess.Popen([sys.executable, "scripts/campaign.py", "run", str(broken), "--parallel", "1", "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: len(RunDirectory(first).history()) >= 1 if (first / "run.json").exists() else False,
             what="the first epoch")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: lock_holder(first) is None, 60, "the orphaned training to stop with its runner")
    mid = {s.job.key: s for s in inspect(load_plan(broken))}
    assert mid[first.name].state == "stopped" and mid[first.name].epochs < 3
    assert RunDirectory(first).info()["status"] == "interrupted"
    assert mid[corrupted.name].state == "broken"

    again = campaign("run", str(broken), "--parallel", "2", "--quiet", check=False)
    assert again.returncode == 1  # the corrupted run is left alone, so not everything is done
    assert f"skipped {corrupted.name}: broken" in again.stdout and "corrupted" in again.stdout
    for job in load_plan(whole).jobs:
        a, b = RunDirectory(job.path).info(), RunDirectory(broken_root / job.key).info()
        assert b["status"] == "complete", job.key
        assert a["metrics"] == b["metrics"], job.key
        assert learning(job.path) == learning(broken_root / job.key), job.key
    assert (broken_root / "popular-ranking-ml-100k-masked-seed0" / "run.json").exists()


def test_a_failing_run_is_reported_and_the_others_go_on(tmp_path):
    runs = [{"model": "ncf", "objective": "rating", "set": {**NCF_SMALL, "lr": 1.0e12, "variant": "diverges"}},
            {"model": "bias", "objective": "rating"}]
    plan = plan_file(tmp_path, tmp_path / "runs", runs)
    out = campaign("run", str(plan), "--parallel", "1", "--quiet", check=False)
    assert out.returncode == 1
    bad = "ncf-rating-ml-100k-chronological-diverges-seed0"
    assert f"failed {bad} (exit 2)" in out.stdout and "lower --lr" in out.stdout
    assert "done bias-rating-ml-100k-chronological-seed0" in out.stdout
    again = campaign("run", str(plan), "--quiet", check=False)
    assert f"skipped {bad}: failed" in again.stdout and "started" not in again.stdout
    retried = campaign("run", str(plan), "--quiet", "--retry-failed", check=False)
    assert f"resumed {bad}" in retried.stdout and f"failed {bad}" in retried.stdout


def test_status_table_runs_nothing_and_says_what_is_left(tmp_path):
    plan = load_plan(plan_file(tmp_path, tmp_path / "runs", tiny_runs()))
    text = render(inspect(plan))
    assert "4 runs: 4 waiting" in text and "not estimable" in text
    assert not (tmp_path / "runs").exists()
    first = plan.jobs[0]
    with RunLock(first.path, "elsewhere"):
        states = {s.job.key: s for s in inspect(plan)}
        assert states[first.key].state == "training" and f"pid {os.getpid()}" in states[first.key].message
        out = campaign("run", str(plan.path), "--only", first.key, "--quiet", check=False)
        assert out.returncode == 1 and f"skipped {first.key}: training" in out.stdout
    assert not (first.path / "run.json").exists()


def test_a_folder_with_another_configuration_is_not_touched(tmp_path):
    root = tmp_path / "runs"
    plan = load_plan(plan_file(tmp_path, root, [{"model": "ncf", "objective": "rating", "set": NCF_SMALL}]))
    sets = [a for k, v in {**NCF_SMALL, "epochs": 1}.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert train_main(["--model", "ncf", "--objective", "rating", *sets, "--out", str(plan.jobs[0].path),
                       "--quiet"]) == 0
    state = inspect(plan)[0]
    assert state.state == "differs" and "epochs" in state.message
    before = (plan.jobs[0].path / "run.json").read_bytes()
    out = campaign("run", str(plan.path), "--quiet", check=False)
    assert out.returncode == 1 and "differs" in out.stdout
    assert (plan.jobs[0].path / "run.json").read_bytes() == before


def test_curves_table_reads_each_runs_validation_curve(tmp_path):
    from recsys.campaign.status import JobState, curves

    plan = load_plan(plan_file(tmp_path, tmp_path / "runs", tiny_runs()))
    a = JobState(plan.jobs[0], "done", epochs=3, best=0.25, best_epoch=2, values=[0.1, 0.25, 0.2],
                 seconds=[10.0, 20.0, 40.0])
    b = JobState(plan.jobs[1], "training", epochs=1, best=0.05, best_epoch=1, values=[0.05], seconds=[12.0])
    table = curves([a, b, JobState(plan.jobs[2], "waiting")], every=2).splitlines()
    assert table[0] == "| run | ep 1 | ep 2 | best (epoch) | s/epoch | train s to best |"
    assert table[2] == f"| {plan.jobs[0].key} | 0.1000 | 0.2500 | 0.2500 (2) | 20 | 30 |"
    assert table[3] == f"| {plan.jobs[1].key} | 0.0500 |  | 0.0500 (1) | 12 | 12 |"
    assert len(table) == 4  # a run without an epoch has no curve
