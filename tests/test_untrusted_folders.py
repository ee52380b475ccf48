"""The dashboard and the API facing untrusted run folders and typed paths (issue 26): confined to configured roots,
bounded reads, copies counted once, errors that are not verdicts, writers told apart from the dead."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from recsys import compare as C
from recsys import runs as runs_module
from recsys.config import resolve_config
from recsys.roots import OutsideRoots, check_recorded_data_dir, confine_data, confine_runs
from recsys.runs import HISTORY, ID_MAPS, RUN_FILE, TEST_RESULTS, RunDirectory, RunError, content_digest
from recsys.training.runner import run_training
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted")
    run_training(resolve_config("popular", {}, {}), root / "pop", ["test"], progress=False)
    return root / "pop"


def fresh(pop_run, tmp_path, name="runs/pop") -> Path:
    dst = tmp_path / name
    shutil.copytree(pop_run, dst)
    return dst


def edit(path: Path, fn) -> None:
    info = json.loads((path / RUN_FILE).read_text())
    fn(info)
    info["digest"] = content_digest(info)
    (path / RUN_FILE).write_text(json.dumps(info))


# ------------------------------------------------------------------------------------------------- confinement
@pytest.mark.parametrize("typed", ["/etc", "/proc", "/", "/no/such/folder", "../../../../etc", "~"])
def test_a_typed_runs_folder_outside_the_roots_is_refused_without_saying_what_exists(typed):
    with pytest.raises(OutsideRoots) as err:
        confine_runs(typed)
    msg = str(err.value)
    assert "outside the runs folders this app may read" in msg and "RECSYS_RUNS_ROOTS" in msg
    assert "no such" not in msg and "not a folder" not in msg  # the same words whether it exists or not


def test_a_link_inside_the_roots_to_a_folder_outside_is_refused(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    with pytest.raises(OutsideRoots):
        confine_runs(link)
    assert confine_runs(ROOT / "checkpoints") == ROOT / "checkpoints"
    assert confine_runs("checkpoints") == ROOT / "checkpoints"  # relative to the project, as the sidebar takes it


def test_roots_can_be_widened_by_the_person_who_starts_the_server(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_DATA_ROOTS", str(tmp_path))
    assert confine_data(tmp_path / "ml-1m") == tmp_path / "ml-1m"
    monkeypatch.delenv("RECSYS_DATA_ROOTS")
    with pytest.raises(OutsideRoots, match="RECSYS_DATA_ROOTS"):
        confine_data(tmp_path / "ml-1m")


def test_a_run_json_cannot_point_the_server_at_another_folder(pop_run, tmp_path):
    p = fresh(pop_run, tmp_path)
    edit(p, lambda i: i["config"].update(data_dir="/etc"))
    with pytest.raises(OutsideRoots):
        check_recorded_data_dir(RunDirectory(p).info())
    from recsys.serve.service import ServeError, Service

    with pytest.raises(ServeError, match="outside the data folders"):
        Service(p.parent).loaded("pop")


def test_a_dataset_name_with_dot_dot_is_refused_and_makes_no_folder(pop_run, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(cache))
    p = fresh(pop_run, tmp_path)
    edit(p, lambda i: i["config"].update(dataset="../../escaped"))
    from recsys.inference import load_run

    with pytest.raises(RunError, match="trained with another configuration"):  # the weights' binding first
        load_run(p)
    from recsys.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="dataset must be a release name"):  # and every reader of a config
        RunConfig.from_dict(RunDirectory(p).info()["config"])
    assert not (tmp_path / "escaped").exists() and not any(tmp_path.glob("**/escaped*"))


def test_the_dashboard_listens_on_this_machine_only():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    make = subprocess.run(["make", "--no-print-directory", "-n", "app"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)  # under `make test` a nested make would print its directory otherwise
    (command,) = [line for line in make.stdout.splitlines() if "streamlit run" in line]
    assert "--server.address 127.0.0.1" in command


def test_the_sidebar_and_explore_refuse_folders_outside_the_roots():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app_pages" / "compare.py"), default_timeout=60)
    at.session_state["runs-folder"] = "/etc"
    at.run()
    assert not at.exception
    assert any("outside the runs folders this app may read" in e.value for e in at.error)
    assert not any("passwd" in m.value for m in [*at.markdown, *at.error, *at.caption])
    ex = AppTest.from_file(str(ROOT / "app_pages" / "explore.py"), default_timeout=60)
    ex.run()
    ex.radio[0].set_value("A folder on this machine").run()
    ex.text_input[0].set_value("/etc").run()
    assert not ex.exception
    assert any("outside the data folders this app may read" in e.value for e in ex.error)


# ------------------------------------------------------------------------------------------------- bounded reads
def test_a_zip_bomb_id_maps_is_refused_before_it_is_unpacked(pop_run, tmp_path, monkeypatch):
    p = fresh(pop_run, tmp_path)
    buf = io.BytesIO()
    np.savez_compressed(buf, users=np.zeros(2_000_000, dtype=np.int64), items=np.zeros(10, dtype=np.int64))
    (p / ID_MAPS).write_bytes(buf.getvalue())  # 16 MB unpacked from a few KB
    with pytest.raises(RunError, match="differ from the sha256 recorded"):  # not the run's: refused unread
        RunDirectory(p).id_maps()
    edit(p, lambda i: i["artefacts"].update({ID_MAPS: runs_module.sha256_file(p / ID_MAPS)}))  # hash forged too
    monkeypatch.setattr(runs_module, "MAX_ID_MAPS_UNPACKED", 1 << 20)
    with pytest.raises(RunError, match="unpacks to 16,000,\\d+ bytes, more than id maps can need"):
        RunDirectory(p).id_maps()


def test_each_artefact_is_bounded_by_its_kind(pop_run, tmp_path):
    p = fresh(pop_run, tmp_path)
    with open(p / TEST_RESULTS, "r+b") as fh:
        fh.truncate(600 << 20)  # sparse: costs no disk, was read whole into memory before
    with pytest.raises(RunError, match="more than the 536,870,912 a run file may hold"):
        RunDirectory(p).test_results()
    run = C.scan_runs(p.parent).runs[0]
    assert run.status == "inconsistent" and "may hold" in run.problem
    with open(p / HISTORY, "wb") as fh:
        fh.truncate(60 << 20)
    assert C.read_history(p) == []  # refused at its size: no learning curve, no 10-second page


def test_ten_thousand_empty_folders_are_one_line(tmp_path, pop_run):
    root = tmp_path / "many"
    shutil.copytree(pop_run, root / "pop")
    for i in range(10_000):
        (root / f"empty{i:05d}").mkdir()
    scan = C.scan_runs(root)
    assert [r.label for r in scan.runs] == ["pop"]
    assert len(scan.errors) == 1 and "10,000 sub-folder(s) with no run.json ignored" in scan.errors[0][1]
    assert "and 9,995 more" in scan.errors[0][1]


# ------------------------------------------------------------------------------------------------- one run, once
def test_a_copied_or_linked_run_is_one_run_not_another_seed(pop_run, tmp_path):
    root = tmp_path / "runs"
    p = fresh(pop_run, tmp_path)
    shutil.copytree(p, root / "pop-copy")
    (root / "pop-link").symlink_to(p)
    scan = C.scan_runs(root)
    assert [r.label for r in scan.runs] == ["pop"]
    dropped = sorted(path.name for path, msg in scan.errors if "the same run as" in msg)
    assert dropped == ["pop-copy", "pop-link"]
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from analyse_runs import checked_runs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert len(checked_runs([root, root])) == 1  # a folder named twice is still one run


def test_an_error_while_checking_is_not_a_verdict(pop_run, tmp_path, monkeypatch):
    from recsys.compare import discovery

    p = fresh(pop_run, tmp_path)
    real = discovery.check_metrics
    calls = {"n": 0}

    def short_of_memory(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError
        return real(*a, **k)

    monkeypatch.setattr(discovery, "check_metrics", short_of_memory)
    first = C.scan_runs(p.parent).runs[0]
    assert first.status == "unchecked" and "could not be checked just now (MemoryError)" in first.problem
    assert first.info["metrics"] == {}  # its numbers are not used meanwhile
    again = C.scan_runs(p.parent).runs[0]  # nothing cached: checked again, and genuine
    assert again.status == "complete" and again.problem is None


# ------------------------------------------------------------------------------------------------- alive or not
HOLD = """
import sys, time
from recsys.locking import RunLock
with RunLock(sys.argv[1], "holder"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_running_means_a_writer_holds_the_lock_whatever_the_recorded_pid(pop_run, tmp_path):
    p = fresh(pop_run, tmp_path)
    edit(p, lambda i: i.update(status="running", pid=os.getpid()))  # a pid that is alive, but not its writer
    (p / ".lock").write_text("{}")  # a lock file nobody holds: the writer is gone
    run = C.scan_runs(p.parent).runs[0]
    assert run.status == "interrupted" and "--resume" in run.problem
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(p)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert C.scan_runs(p.parent).runs[0].status == "running"
    finally:
        holder.kill()
        holder.wait()
    assert C.scan_runs(p.parent).runs[0].status == "interrupted"


def test_a_run_recorded_on_another_machine_is_not_running_forever(pop_run, tmp_path):
    p = fresh(pop_run, tmp_path)
    edit(p, lambda i: i.update(status="running", pid=1, host_id="a-pod-long-gone"))
    assert C.scan_runs(p.parent).runs[0].status == "running"  # it may be: files written just now
    old = time.time() - 3 * 86400
    for name in (RUN_FILE, HISTORY):
        if (p / name).exists():
            os.utime(p / name, (old, old))
    run = C.scan_runs(p.parent).runs[0]
    assert run.status == "interrupted" and "another machine (a-pod-long-gone)" in run.problem


def test_check_verdicts_persist_across_restarts_and_a_disguised_rewrite_is_checked_again(pop_run, tmp_path,
                                                                                       monkeypatch):
    """A restarted dashboard reads the checks' verdicts from the cache instead of re-hashing every run; a results
    file rewritten in place with its size and mtime restored still changes the stamp (its ctime), so it is checked
    again and refused."""
    from recsys.compare import discovery as D

    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(D, "_verdicts", None)
    D._checked.cache_clear()
    p = fresh(pop_run, tmp_path)
    assert C.scan_runs(p.parent).runs[0].status == "complete"
    stored = json.loads((tmp_path / "cache" / D.CHECKS_FILE).read_text())
    assert [v for k, v in stored.items() if os.path.realpath(p) in k] == [None]  # checked, nothing wrong

    def no_check(path):
        raise AssertionError("checked again: the stored verdict was not used")

    monkeypatch.setattr(D, "_check", no_check)  # a restart: empty memory, the same cache on disk
    monkeypatch.setattr(D, "_verdicts", None)
    D._checked.cache_clear()
    assert C.scan_runs(p.parent).runs[0].status == "complete"

    monkeypatch.undo()
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(D, "_verdicts", None)
    D._checked.cache_clear()
    results = p / TEST_RESULTS
    before = results.stat()
    data = bytearray(results.read_bytes())
    data[-200] ^= 0xFF  # the same size, other bytes
    with open(results, "r+b") as fh:  # in place: the same inode
        fh.write(bytes(data))
    os.utime(results, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (results.stat().st_size, results.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    run = C.scan_runs(p.parent).runs[0]
    assert run.status == "inconsistent" and run.problem
    D._checked.cache_clear()
