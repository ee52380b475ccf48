"""The scoring API (recsys-serve): every endpoint, every bad input as a clear 4xx, and the same top-k as Live."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recsys.inference import load_run, score_history, user_history
from recsys.serve.app import create_app
from tests.conftest import ROOT

SS4REC = "ss4rec-ranking-ml-100k-len50-released-seed0"
SASREC = "sasrec-ranking-ml-100k-len50-seed0"
NCF = "ncf-ranking-ml-100k-seed0"
NCF_RATING = "ncf-rating-ml-100k-chronological-seed0"
RATING_AWARE = "ss4rec-rating-ml-100k-chronological-len50-rating-aware-seed0"
HISTORY = [{"movie_id": 50, "timestamp": 881250949}, {"movie_id": 172, "timestamp": 881251949},
           {"movie_id": 133, "timestamp": 881350949}]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A runs folder with a few shipped ML-100K runs (copied, so a test may damage its own copy)."""
    root = tmp_path_factory.mktemp("runs")
    for name in (SS4REC, SASREC, NCF, NCF_RATING, RATING_AWARE, "popular-ranking-ml-100k-seed0"):
        shutil.copytree(ROOT / "checkpoints" / name, root / name, ignore=shutil.ignore_patterns("resume"))
    return root


@pytest.fixture(scope="module")
def client(runs) -> TestClient:
    return TestClient(create_app(runs))


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_health_runs_and_docs(client, runs):
    assert client.get("/health").json() == {"status": "ok", "runs_folder": str(runs)}
    listed = {r["run"]: r for r in client.get("/runs").json()["runs"]}
    assert set(listed) == {p.name for p in runs.iterdir()}
    ss = listed[SS4REC]
    recorded = json.loads((runs / SS4REC / "run.json").read_text())
    assert ss["model"] == "ss4rec" and ss["dataset"] == "ml-100k" and ss["seed"] == 0
    assert ss["reads_target_time"] is True and listed[SASREC]["reads_target_time"] is False
    assert ss["test_metrics"]["ndcg@10"] == recorded["metrics"]["test"]["ndcg@10"]
    assert listed[NCF_RATING]["scores"] == "predicted rating" and ss["scores"] == "logit"
    assert "/recommend" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("name", [SS4REC, SASREC])
def test_a_users_top_k_is_lives(client, runs, name):
    """Live, for an existing user: the user's history, the next rating a day after the last one, seen hidden."""
    got = client.post("/recommend", json={"run": name, "user_id": 42, "k": 10}).json()
    run = load_run(runs / name)
    hist = user_history(run, 42)
    times = hist["timestamp"].to_numpy()
    live = score_history(run, hist["item_idx"].to_numpy(), times, now=int(times[-1]) + 86400, k=10, hide_seen=True)
    assert [i["movie_id"] for i in got["items"]] == live.table["item"].tolist()
    np.testing.assert_allclose([i["score"] for i in got["items"]], live.table["score"], rtol=0, atol=1e-6)
    assert got["now"] == int(times[-1]) + 86400 and got["scores"] == "logit"
    seen = set(hist["item"].tolist()) if "item" in hist else set(run.prepared.item_map.raw[hist["item_idx"] - 1])
    assert not seen & {i["movie_id"] for i in got["items"]}


def test_a_built_historys_top_k_is_lives_and_moves_with_now(client, runs):
    body = {"run": SS4REC, "history": HISTORY, "now": 881350949 + 3600, "k": 10, "exclude_seen": False}
    got = client.post("/recommend", json=body).json()
    run = load_run(runs / SS4REC)
    items = run.prepared.item_map.to_index([e["movie_id"] for e in HISTORY])
    live = score_history(run, items, np.array([e["timestamp"] for e in HISTORY]), now=body["now"], k=10,
                         hide_seen=False)
    assert [i["movie_id"] for i in got["items"]] == live.table["item"].tolist()
    later = client.post("/recommend", json={**body, "now": body["now"] + 200 * 86400}).json()
    assert [i["score"] for i in later["items"]] != [i["score"] for i in got["items"]]  # SS4Rec reads the gap
    shuffled = client.post("/recommend", json={**body, "history": HISTORY[::-1]}).json()
    assert shuffled["items"] == got["items"]  # ordered by timestamp, whatever the order sent


def test_models_without_a_history_score_known_users_and_rating_runs_say_so(client):
    got = client.post("/recommend", json={"run": NCF_RATING, "user_id": 1, "k": 5}).json()
    assert got["scores"] == "predicted rating" and len(got["items"]) == 5
    assert all(1 <= i["score"] <= 5 for i in got["items"])
    assert [i["score"] for i in got["items"]] == sorted((i["score"] for i in got["items"]), reverse=True)
    assert client.post("/recommend", json={"run": NCF, "user_id": 1}).json()["now"] is None


@pytest.mark.parametrize("body, status, field, words", [
    ({"run": "nope", "user_id": 1}, 404, "run", "no complete run named"),
    ({"run": "../checkpoints", "user_id": 1}, 404, "run", "no complete run named"),
    ({"run": SS4REC, "user_id": 99999}, 404, "user_id", "not a user"),
    ({"run": SS4REC, "history": [{"movie_id": 99999, "timestamp": 881250949}]}, 404, "history[0].movie_id",
     "not in run"),
    ({"run": SS4REC, "user_id": 1, "k": 0}, 422, "k", "greater than or equal to 1"),
    ({"run": SS4REC, "user_id": 1, "k": 101}, 422, "k", "less than or equal to 100"),
    ({"run": SS4REC, "history": []}, 422, "history", "empty"),
    ({"run": SS4REC, "history": [HISTORY[0]] * 5001}, 422, "history", "at most 5000"),
    ({"run": SS4REC, "history": [{"movie_id": 50, "timestamp": 5}]}, 422, "history[0].timestamp", "outside"),
    ({"run": SS4REC, "history": HISTORY, "now": 881250949}, 422, "now", "at or after"),
    ({"run": SS4REC, "user_id": 1, "history": HISTORY}, 422, "user_id", "either user_id or history"),
    ({"run": SS4REC}, 422, "user_id", "either user_id or history"),
    ({"run": NCF, "history": HISTORY}, 422, "history", "known users only"),
    ({"run": NCF, "user_id": 1, "now": 881250949}, 422, "now", "does not read time"),
    ({"run": RATING_AWARE, "user_id": 1}, 422, "run", "rating-aware"),
    ({"run": SS4REC, "user_id": "abc"}, 422, "user_id", "integer"),
    ({"run": SS4REC, "user_id": 1, "colour": "red"}, 422, "colour", "Extra inputs"),
    ({"user_id": 1}, 422, "run", "Field required"),
])
def test_bad_requests_get_a_clear_4xx_naming_the_field(client, body, status, field, words):
    err = error_of(client.post("/recommend", json=body), status)
    assert err["field"] == field and words in err["message"], err


def test_malformed_json_and_unknown_paths(client):
    err = error_of(client.post("/recommend", content=b'{"run": ', headers={"content-type": "application/json"}), 422)
    assert err["field"] == "body" and "malformed JSON" in err["message"]
    assert error_of(client.get("/nowhere"), 404)["field"] == "path"
    assert client.get("/recommend").status_code == 405


def test_tampered_runs_are_refused_with_their_reason(runs):
    broken = runs.parent / "broken-runs"
    weights, record = "popular-ranking-ml-100k-seed0", NCF
    for name in (weights, record):
        shutil.copytree(runs / name, broken / name)
    with open(broken / weights / "model.safetensors", "r+b") as fh:  # weights changed after training
        fh.seek(-4, 2)
        fh.write(b"\x00\x00\x80\x7f")
    info = json.loads((broken / record / "run.json").read_text())
    info["metrics"]["test"]["ndcg@10"] = 0.99  # a better number typed into run.json
    (broken / record / "run.json").write_text(json.dumps(info))
    client = TestClient(create_app(broken))
    assert NCF not in {r["run"] for r in client.get("/runs").json()["runs"]}
    for name, reason in ((weights, "sha256"), (record, "edited")):
        err = error_of(client.post("/recommend", json={"run": name, "user_id": 1}), 409)
        assert err["field"] == "run" and "cannot be used" in err["message"] and reason in err["message"], err


def test_metrics_count_requests_errors_and_latency_per_endpoint_and_run(runs):
    client = TestClient(create_app(runs))
    client.post("/recommend", json={"run": SASREC, "user_id": 3})
    client.post("/recommend", json={"run": SASREC, "user_id": 99999})
    client.post("/recommend", json={"run": "nope", "user_id": 3})
    text = client.get("/metrics").text
    assert f'recsys_requests_total{{endpoint="/recommend",run="{SASREC}",status="200"}} 1.0' in text
    assert f'recsys_errors_total{{endpoint="/recommend",run="{SASREC}",status="404"}} 1.0' in text
    assert 'recsys_errors_total{endpoint="/recommend",run="unknown",status="404"} 1.0' in text
    assert f'recsys_request_seconds_count{{endpoint="/recommend",run="{SASREC}"}} 2.0' in text


def test_recsys_serve_refuses_a_missing_folder(capsys):
    from recsys.cli.serve import main

    assert main(["--runs", "/no/such/folder"]) == 2
    assert "no such runs folder" in capsys.readouterr().err
