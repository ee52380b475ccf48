"""Runs on a dataset that may not be redistributed (ML-1M) are written licence-safe: no raw id, no (user, movie)
pair, no timestamp can be read back from the run folder, while its numbers stay checkable and the pages that are
given the data folder still load it."""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.config import resolve_config
from recsys.inference import load_run
from recsys.runs import ID_MAPS, TEST_RESULTS, RunDirectory, RunError, check_metrics
from recsys.training.reevaluate import evaluate_run
from recsys.training.runner import run_training
from tests.conftest import write

RAW_USERS = [1001 + 7 * u for u in range(12)]  # ids that cannot appear by chance in indices or counts
RAW_ITEMS = [5003 + 11 * i for i in range(10)]


def ml1m_like(tmp_path: Path) -> Path:
    """An ML-1M-format folder (`::`-separated .dat files) big enough for the 5-core leave-one-out protocol."""
    rng = np.random.default_rng(0)
    lines = []
    for u in RAW_USERS:
        for k, i in enumerate(rng.choice(RAW_ITEMS, size=8, replace=False)):
            lines.append(f"{u}::{i}::{int(rng.integers(1, 6))}::{978300000 + 1000 * k + u}\n")
    d = tmp_path / "ml-1m"
    write(d / "ratings.dat", "".join(lines))
    write(d / "movies.dat", "".join(f"{i}::Movie {i} (1999)::Drama\n" for i in RAW_ITEMS), encoding="latin-1")
    write(d / "users.dat", "".join(f"{u}::F::25::1::12345\n" for u in RAW_USERS))
    return d


def train(tmp_path: Path, data: Path, model: str = "popular", **over) -> Path:
    cfg = resolve_config(model, {}, {"dataset": "ml-1m", "data_dir": str(data), **over})
    out = tmp_path / f"{model}-run"
    run_training(cfg, out, ["python", "scripts/train.py", "--model", model], progress=False)
    return out


def shipped_bytes(run: Path) -> bytes:
    """Everything a shipped folder would carry (the npz members decompressed)."""
    blobs = []
    for f in sorted(run.rglob("*")):
        if f.is_file():
            blobs.append(f.read_bytes())
            if f.suffix == ".npz":
                with zipfile.ZipFile(io.BytesIO(f.read_bytes())) as z:
                    blobs += [z.read(n) for n in z.namelist()]
    return b"".join(blobs)


def leaks(blob: bytes, raw: int) -> bool:
    """True when `raw` can be read back from `blob`: as int64 bytes (arrays) or as a number in text (JSON, parquet
    statistics). A run of hex digits (a git commit, a sha256) may contain the digits by chance: that is not a leak."""
    if np.int64(raw).tobytes() in blob:
        return True
    return re.search(rb"(?<![0-9a-fA-F])" + str(raw).encode() + rb"(?![0-9a-fA-F])", blob) is not None


def test_the_leak_check_finds_ids_in_text_and_arrays_but_not_inside_hashes():
    assert leaks(b'{"user": 1078}', 1078) and leaks(b"user1078,", 1078) and leaks(np.int64(1078).tobytes(), 1078)
    assert not leaks(b'"git_commit": "a06d8268e09f4cdfb12b78ac66011be31cd41078"', 1078)
    assert not leaks(b'"users_sha256": "ff1078ab"', 1078) and not leaks(b'{"user": 10789}', 1078)


def test_an_ml1m_run_holds_no_raw_id_and_no_user_movie_pair(tmp_path):
    run = train(tmp_path, ml1m_like(tmp_path))
    per_user = pd.read_parquet(run / TEST_RESULTS)
    assert "user_id" not in per_user and "target" not in per_user and "user" in per_user
    with np.load(run / ID_MAPS, allow_pickle=False) as z:
        assert set(z.files) == {"n_users", "n_items", "users_sha256", "items_sha256"}
        assert int(z["n_users"]) == 12 and int(z["n_items"]) == 10
    blob = shipped_bytes(run)
    for raw in RAW_USERS + RAW_ITEMS:  # as int64 (arrays) and as text (JSON, parquet statistics)
        assert not leaks(blob, raw), raw
    info = RunDirectory(run).verify()
    assert "may not be redistributed" in info["licence_safe"]
    check_metrics(info, per_user)  # its numbers are still checked against its per-user results
    with pytest.raises(RunError, match="give the data folder"):
        RunDirectory(run).id_maps()


def test_an_ml1m_run_loads_with_its_data_and_refuses_other_data(tmp_path):
    data = ml1m_like(tmp_path)
    run = train(tmp_path, data)
    loaded = load_run(run, data_dir=str(data))
    assert loaded.prepared.n_users == 12
    other = tmp_path / "other"
    other.mkdir()
    write(other / "ml-1m" / "ratings.dat", (data / "ratings.dat").read_text().replace("1001::", "1000::"))
    for name in ("movies.dat", "users.dat"):
        (other / "ml-1m" / name).write_bytes((data / name).read_bytes())
    with pytest.raises(RunError, match="id maps do not match"):
        load_run(run, data_dir=str(other / "ml-1m"))


def test_a_masked_reevaluation_of_an_ml1m_run_stays_licence_safe(tmp_path):
    run = train(tmp_path, ml1m_like(tmp_path))
    out = tmp_path / "masked"
    evaluate_run(run, out, {"mask_seen": True}, ["python", "scripts/evaluate.py"])
    per_user = pd.read_parquet(out / TEST_RESULTS)
    assert "user_id" not in per_user and "target" not in per_user
    assert (out / ID_MAPS).read_bytes() == (run / ID_MAPS).read_bytes()


def test_an_ml100k_run_keeps_its_raw_ids(tmp_path):
    cfg = resolve_config("popular", {}, {})
    run_training(cfg, tmp_path / "p", ["python"], progress=False)
    users, items = RunDirectory(tmp_path / "p").id_maps()
    assert len(users) == 943 and "user_id" in pd.read_parquet(tmp_path / "p" / TEST_RESULTS)


def test_the_pages_get_an_ml1m_runs_users_from_its_data_folder_or_are_told_which(tmp_path):
    from recsys.compare import run_users

    data = ml1m_like(tmp_path)
    run = train(tmp_path, data)
    assert sorted(run_users(run).tolist()) == RAW_USERS  # rebuilt from the data folder run.json names
    data.rename(tmp_path / "elsewhere")
    with pytest.raises(RunError, match=f"put that release's files in {data}"):
        run_users(run)
    other = ml1m_like(tmp_path / "x")
    (other / "ratings.dat").write_text((other / "ratings.dat").read_text().replace("1001::", "1000::"))
    other.rename(data)
    with pytest.raises(RunError, match="not the copy the run was trained on"):
        run_users(run)
