"""Shared fixtures: small MovieLens folders in every native format, and the optional shared benchmark copies."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

pytest_plugins = ["tests.fake_mamba_ssm"]  # fixtures of the GPU-path tests (mamba_ssm stand-ins)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RECSYS_SHARED_MOVIELENS", ROOT.parent / "shared" / "movielens"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own processed-data cache, so no test reads another's (or the user's) cache."""
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    # the dashboard and the API read only configured roots (recsys.roots): tests' run and data folders live in
    # pytest's temporary folder, which is allowed here as a user would allow theirs
    base = str(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("RECSYS_RUNS_ROOTS", base)
    monkeypatch.setenv("RECSYS_DATA_ROOTS", os.pathsep.join([base, str(SHARED)]))


def free_port() -> int:
    """A free TCP port on loopback (for torchrun's rendezvous and the streamlit test server)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_dir(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present (benchmark copies live in ../shared/movielens)")
    return path


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


ML100K_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
    "3|Caf\xe9 Society (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
)


@pytest.fixture
def ml100k_dir(tmp_path) -> Path:
    d = tmp_path / "ml-100k"
    write(d / "u.data", "1\t1\t5\t100\n1\t2\t3\t100\n2\t1\t4\t50\n2\t3\t1\t70\n")
    write(d / "u.item", ML100K_ITEM, encoding="latin-1")
    write(d / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    return d


@pytest.fixture
def ml1m_dir(tmp_path) -> Path:
    d = tmp_path / "ml-1m"
    write(d / "ratings.dat", "1::1::5::978300760\n1::3::3::978302109\n2::1::4::978301968\n")
    write(d / "movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n3::Caf\xe9 (1995)::Drama\n",
          encoding="latin-1")
    write(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return d


@pytest.fixture
def ml10m_dir(tmp_path) -> Path:
    d = tmp_path / "ml-10M100K"
    write(d / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n2::122::0.5::838983392\n")
    write(d / "movies.dat", "122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action|Crime|Thriller\n")
    return d


@pytest.fixture
def csv_dir(tmp_path) -> Path:
    d = tmp_path / "ml-latest-small"
    write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
                             "2,1,0.5,964982224\n")
    write(d / "movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                            '3,"American President, The (1995)",(no genres listed)\n7,Babylon 5,Sci-Fi\n')
    return d


@pytest.fixture
def parquet_dir(tmp_path) -> Path:
    d = tmp_path / "ml-1m"
    df = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "movie_id": [1, 3, 5, 1, 3], "rating": [5, 3, 4, 4, 2],
                       "timestamp": pd.array([10, 20, 30, None, 40], dtype="Int64")})
    d.mkdir(parents=True)
    df.to_parquet(d / "ratings.parquet", index=False)
    write(d / "movies.dat", "1::A (1990)::Drama\n3::B (1991)::Comedy\n5::C (1992)::War\n")
    return d


@pytest.fixture(autouse=True, scope="session")
def _one_cpu_thread():
    """Tiny test models run fastest single-threaded, and OpenMP spin-waiting collapses on a busy 2-core box."""
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the subprocesses tests start


# The slow tier (`make test` runs everything; `make test-fast` runs the rest, about one minute of CPU): files that train
# real runs, render every page, drive a browser, launch servers or re-evaluate the shipped runs.
SLOW_FILES = {"test_browser.py", "test_bench_app.py", "test_bench_scripts.py", "test_shipped_runs.py",
              "test_runpod.py", "test_campaign.py", "test_gpu_s5.py", "test_gpu_mamba_ssm.py", "test_training.py",
              "test_app.py",
              "test_answer.py", "test_ablation_study.py", "test_pages_ss4rec.py", "test_serve.py", "test_faults.py",
              "test_rating_aware.py", "test_explore.py", "test_contracts.py", "test_packaging.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
