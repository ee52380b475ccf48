"""Readers, validation, cache and the `info` command, on hand-made files and on the real MovieLens copies."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recsys.data import DataUnavailableError, DataValidationError, load_dataset, loader, read_movielens
from recsys.data.prepare import prepare
from tests.conftest import ROOT, shared_dir, write


def check_canonical(data):
    inter = data.interactions
    assert list(inter.columns) == ["user", "item", "rating", "timestamp"]
    assert inter["user"].dtype == np.int64 and inter["item"].dtype == np.int64
    assert inter["rating"].dtype == np.float32
    assert inter["timestamp"].dtype in (np.int64, pd.Int64Dtype())
    assert list(data.items.columns) == ["item", "title", "year", "genres"]


# ---------------------------------------------------------------------------------------------- each format
def test_ml100k_native(ml100k_dir):
    d = read_movielens(ml100k_dir)
    check_canonical(d)
    assert d.name == "ml-100k"
    # file order is kept: it is the tie-break for equal timestamps
    assert d.interactions.values.tolist() == [[1, 1, 5, 100], [1, 2, 3, 100], [2, 1, 4, 50], [2, 3, 1, 70]]
    toy = d.items.set_index("item").loc[1]
    assert toy.title == "Toy Story (1995)" and toy.year == 1995 and toy.genres == "Animation|Children's|Comedy"
    assert d.items.set_index("item").loc[3].title == "Café Society (1995)"  # latin-1 decoded
    assert d.users["gender"].tolist() == ["M", "F"]


def test_ml1m_dat_latin1(ml1m_dir):
    d = read_movielens(ml1m_dir)
    check_canonical(d)
    assert d.interactions["timestamp"].tolist() == [978300760, 978302109, 978301968]
    assert d.items["title"].tolist() == ["Toy Story (1995)", "Café (1995)"]
    assert d.rating_scale == (1.0, 5.0) and d.users is not None


def test_ml10m_half_stars_no_users(ml10m_dir):
    d = read_movielens(ml10m_dir)
    assert d.name == "ml-10m"
    assert d.interactions["rating"].tolist() == [5.0, 4.5, 0.5]
    assert d.rating_scale == (0.5, 5.0) and d.users is None
    assert d.items["title"].tolist()[1] == "Net, The (1995)"


def test_csv_release_quoted_titles(csv_dir):
    d = read_movielens(csv_dir)
    check_canonical(d)
    items = d.items.set_index("item")
    assert items.loc[3].title == "American President, The (1995)" and items.loc[3].genres == ""
    assert pd.isna(items.loc[7].year)  # no year in the title
    assert d.stats()["items"] == 3 and d.stats()["rated_items"] == 2


def test_parquet_nullable_timestamps_refuse_chronological(parquet_dir):
    d = read_movielens(parquet_dir)
    assert d.interactions["timestamp"].dtype == pd.Int64Dtype()
    assert d.n_missing_timestamps == 1 and d.notes
    with pytest.raises(DataValidationError, match="no timestamp|none"):
        prepare(d, 1, 1, require_timestamps=True)
    p = prepare(d, 1, 1, timestamped_only=True)  # user 2 has an untimestamped rating: dropped whole
    assert p.interactions["user"].unique().tolist() == [1]
    assert p.interactions["timestamp"].dtype == np.int64


def test_release_name_detected_from_the_folder(ml1m_dir, tmp_path):
    """load_dataset(None, folder) names the release from the folder (guess_name), and the release's facts follow."""
    data = load_dataset(None, ml1m_dir)
    assert data.name == "ml-1m" and data.rating_scale == (1.0, 5.0)
    upper = tmp_path / "ML-1M"
    shutil.copytree(ml1m_dir, upper)
    assert load_dataset(None, upper).name == "ml-1m"
    write(upper / "ratings.dat", "1::1::4.5::978300760\n")
    with pytest.raises(DataValidationError, match="not a whole star: ml-1m"):  # ML-1M ratings are whole stars
        load_dataset(None, upper)


def test_recbole_atomic_embedded_default():
    d = load_dataset()
    s = d.stats()
    assert (s["dataset"], s["ratings"], s["users"], s["items"]) == ("ml-100k", 100_000, 943, 1682)
    assert d.items.set_index("item").loc[1].title == "Toy Story (1995)"  # year put back into the title
    assert s["time_min"].startswith("1997-09") and s["time_max"].startswith("1998-04")


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("body, where, what", [
    ("userId,movieId,timestamp\n1,1,5\n", "ratings.csv:1", "missing column"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,10\n1,x,4.0,11\n", "ratings.csv:3", "not numeric"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,10\n1,1,4.0\n", "ratings.csv:3", "expected 4 fields"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,10\n2,1,7.0,11\n", "ratings.csv:3", "outside"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,10\n2,1,3.0,11\n1,1,2.0,10\n", "ratings.csv:4", "duplicate"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,10\n2,99,3.0,11\n", "ratings.csv:3", "item 99"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,10\n2,1,3.0,-5\n", "ratings.csv:3", "negative timestamp"),
])
def test_validation_names_file_and_line(tmp_path, body, where, what):
    d = tmp_path / "bad"
    write(d / "ratings.csv", body)
    write(d / "movies.csv", "movieId,title,genres\n1,A (1990),Drama\n")
    with pytest.raises(DataValidationError) as err:
        read_movielens(d)
    assert where in str(err.value) and what in str(err.value)


def test_validation_headerless_and_dat(ml100k_dir, ml1m_dir):
    write(ml100k_dir / "u.data", "1\t1\t5\t100\n1\t2\t3\n")
    with pytest.raises(DataValidationError, match=r"u.data:2: expected 4 fields"):
        read_movielens(ml100k_dir)
    write(ml1m_dir / "ratings.dat", "1::1::5::978300760\n1::3::five::978302109\n")
    with pytest.raises(DataValidationError, match=r"ratings.dat:2: column 'rating' is not numeric"):
        read_movielens(ml1m_dir)


def test_no_ratings_file_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match="no MovieLens ratings file"):
        read_movielens(tmp_path / "empty")
    with pytest.raises(DataUnavailableError, match="does not exist"):
        load_dataset("ml-1m", tmp_path / "nope")
    with pytest.raises(DataUnavailableError, match="unknown dataset"):
        load_dataset("ml-7m")


# ---------------------------------------------------------------------------------------------- cache
def test_cache_serves_second_load_and_notices_edits(csv_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_dataset(data_dir=csv_dir, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1 and first.fingerprint

    def boom(*a, **k):
        raise AssertionError("source re-read although the cache is valid")

    monkeypatch.setattr(loader, "read_movielens", boom)
    again = load_dataset(data_dir=csv_dir, cache_dir=cache)
    pd.testing.assert_frame_equal(first.interactions, again.interactions)
    pd.testing.assert_frame_equal(first.items, again.items)
    monkeypatch.undo()
    write(csv_dir / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,2.0,964982703\n")
    edited = load_dataset(data_dir=csv_dir, cache_dir=cache)
    assert edited.fingerprint != first.fingerprint and edited.interactions["rating"].tolist() == [2.0]


def test_failed_load_leaves_nothing_behind(csv_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    write(csv_dir / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,9.0,1\n")
    with pytest.raises(DataValidationError):
        load_dataset(data_dir=csv_dir, cache_dir=cache)
    assert not cache.exists() or not list(cache.iterdir())
    write(csv_dir / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n")

    def dies(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", dies)
    data = load_dataset(data_dir=csv_dir, cache_dir=cache)  # still served, just not cached
    assert len(data.interactions) == 1
    assert not list(cache.iterdir())  # no half-written entry, no temp folder


def test_corrupt_cache_entry_is_rebuilt(csv_dir, tmp_path):
    cache = tmp_path / "cache"
    load_dataset(data_dir=csv_dir, cache_dir=cache)
    entry = next(cache.iterdir())
    (entry / "interactions.parquet").write_bytes(b"garbage")
    data = load_dataset(data_dir=csv_dir, cache_dir=cache)
    assert len(data.interactions) == 3


# ---------------------------------------------------------------------------------------------- real copies
EXPECTED = {  # from ../shared/movielens/README.md
    "ml-100k": dict(ratings=100_000, users=943, items=1682, rated_items=1682, rating_min=1.0, rating_max=5.0),
    "ml-latest-small": dict(ratings=100_836, users=610, rated_items=9724, rating_min=0.5, rating_max=5.0),
    "ml-1m": dict(ratings=1_000_209, users=6040, rated_items=3706, rating_min=1.0, rating_max=5.0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_info_matches_shared_readme(name):
    path = shared_dir(name)
    out = subprocess.run([sys.executable, "-m", "recsys.data", "info", name, "--data-dir", str(path)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    stats = json.loads(out.stdout)
    for key, value in EXPECTED[name].items():
        assert stats[key] == value, key
    if name == "ml-1m":
        assert stats["missing_timestamps"] == 475_978
    if name == "ml-100k":
        assert stats["time_min"].startswith("1997-09") and stats["time_max"].startswith("1998-04")
    if name == "ml-latest-small":
        assert stats["time_min"].startswith("1996-03") and stats["time_max"].startswith("2018-09")


def test_shared_ml1m_timestamped_users_are_1_to_2999():
    d = load_dataset("ml-1m", shared_dir("ml-1m"))
    p = prepare(d, 1, 1, timestamped_only=True)
    users = p.interactions["user"]
    assert (users.min(), users.max(), users.nunique(), len(users)) == (1, 2999, 2999, 487_650)


def test_info_cli_error_is_clean():
    out = subprocess.run([sys.executable, "-m", "recsys.data", "info", "ml-25m", "--no-download"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "Traceback" not in out.stderr
