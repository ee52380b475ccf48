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
SHIPPED = sorted(p.parent for p in (ROOT / "checkpoints").glob("*/run.json"))


def test_runs_are_shipped():
    assert len(SHIPPED) >= 10


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_run_reevaluates_to_its_recorded_metrics(path):
    recorded = json.loads((path / "run.json").read_text())["metrics"]["test"]
    r = rebuild_run(path)
    r.model.eval()
    metrics, per_user = r.task.evaluate(r.model, "test", "cpu", batch_size=1024)
    assert metrics["n"] == recorded["n"] == len(per_user)
    for key, value in recorded.items():
        assert math.isclose(metrics[key], value, rel_tol=0, abs_tol=1e-6), (key, metrics[key], value)
    assert set(recorded) == set(metrics)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_run_loads_for_the_dashboard(path):
    run = load_run(path)
    assert run.fingerprint_matches and run.kind == json.loads((path / "run.json").read_text())["model"]
