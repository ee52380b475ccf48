"""Behaviour unchanged: every shipped run in checkpoints/ loads, and re-evaluated with today's code gives exactly the
test metrics its run.json records (the same model factory, data pipeline, protocol and metrics that made it)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recsys.inference import load_run
from recsys.training.reevaluate import rebuild_run

ROOT = Path(__file__).resolve().parents[1]
ON_DISK = sorted(p.parent for p in (ROOT / "checkpoints").glob("*/run.json"))
# a campaign may be training into checkpoints/ on this machine: only finished runs are checked here, and the test
# below makes sure nothing unfinished is ever tracked (a clean clone, as CI has, holds only what git tracks)
SHIPPED = [p for p in ON_DISK if json.loads((p / "run.json").read_text()).get("status") == "complete"]


def test_runs_are_shipped():
    assert len(SHIPPED) >= 10


def test_no_unfinished_run_is_tracked():
    """A run still training (or stopped) in checkpoints/ must never be committed: it has no metrics to check."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "checkpoints"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = {ROOT / f for f in listed.stdout.splitlines() if f.endswith("/run.json")}
    unfinished = [p.parent.name for p in tracked if p.exists()
                  and json.loads(p.read_text()).get("status") != "complete"]
    assert not unfinished, unfinished
    assert not [f for f in listed.stdout.splitlines() if "/resume/" in f or f.endswith((".lock", ".tmp"))]


def needs_data(path: Path) -> None:
    """Skip a run whose data is not embedded (ML-1M: ../shared/movielens/ml-1m beside the clone, as in CI)."""
    data_dir = json.loads((path / "run.json").read_text())["config"].get("data_dir")
    if data_dir and not (ROOT / data_dir).is_dir():
        pytest.skip(f"{path.name}: its data folder {data_dir} is not here")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_run_reevaluates_to_its_recorded_metrics(path, monkeypatch):
    needs_data(path)
    monkeypatch.chdir(ROOT)
    recorded = json.loads((path / "run.json").read_text())["metrics"]["test"]
    r = rebuild_run(path)
    r.model.eval()
    metrics, per_user = r.task.evaluate(r.model, "test", "cpu", batch_size=1024)
    assert metrics["n"] == recorded["n"] == len(per_user)
    for key, value in recorded.items():
        assert math.isclose(metrics[key], value, rel_tol=0, abs_tol=1e-6), (key, metrics[key], value)
    assert set(recorded) == set(metrics)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_run_loads_for_the_dashboard(path, monkeypatch):
    needs_data(path)
    monkeypatch.chdir(ROOT)
    run = load_run(path)
    assert run.fingerprint_matches and run.kind == json.loads((path / "run.json").read_text())["model"]


def test_no_shipped_run_lets_a_restricted_dataset_be_read_back():
    """ML-1M (and the other GroupLens releases that forbid redistribution): a shipped run holds digests instead of
    raw ids and per-user results without the raw user id or the held-out movie (recsys/redistribution.py)."""
    import numpy as np
    import pandas as pd

    from recsys.redistribution import WITHHELD_COLUMNS, restricted

    for path in sorted(p.parent for p in (ROOT / "checkpoints").rglob("run.json")):
        info = json.loads((path / "run.json").read_text())
        if not restricted(info["dataset"]["name"]):
            continue
        with np.load(path / "id_maps.npz", allow_pickle=False) as z:
            assert "users" not in z.files and "items" not in z.files, path
        if (path / "test_results.parquet").exists():
            columns = pd.read_parquet(path / "test_results.parquet").columns
            assert not set(WITHHELD_COLUMNS) & set(columns), path
