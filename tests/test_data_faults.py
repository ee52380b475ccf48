"""Data that is read whole or refused (issue 15): each test tries one fault on a source file or a cache and checks
that it is refused with the file and line, or that the stale copy is not served. Plus provenance: a dataset's
`source` never records an absolute path of the machine that read it."""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data import DataValidationError, embedded_ml100k_dir, load_dataset, loader, read_movielens
from recsys.data import integrity as integ
from tests.conftest import ML100K_ITEM, shared_dir, write

T0 = 880_000_000  # 1997-11-20: inside ML-100K's documented span


def ml100k_release(root: Path, n: int = 150, marker: bool = True) -> Path:
    """A small folder shaped like GroupLens's ML-100K; with marker=True it also holds the README and u.info the
    release ships, so it is held to the release's documented facts (span, count in u.info)."""
    d = root / "ml-100k"
    write(d / "u.data", "".join(f"{k // 3 + 1}\t{k % 3 + 1}\t{1 + k % 5}\t{T0 + 60 * k}\n" for k in range(n)))
    write(d / "u.item", ML100K_ITEM, encoding="latin-1")
    if marker:
        write(d / "u.info", f"{(n + 2) // 3} users\n3 items\n{n} ratings\n")
        write(d / "README", "MovieLens 100K (a test copy)\n")
    return d


def refused(path: Path, pattern: str) -> str:
    with pytest.raises(DataValidationError, match=pattern) as err:
        read_movielens(path)
    return str(err.value)


def cut(path: Path, keep: int) -> bytes:
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])
    return raw


# ---------------------------------------------------------------------------------------------- 1. cut files
def test_shared_ml100k_cut_halfway_is_refused(tmp_path):
    """The reported fault: u.data cut halfway used to load 50,177 ratings with an 'earliest rating' in 1970."""
    d = tmp_path / "ml-100k"
    shutil.copytree(shared_dir("ml-100k"), d)
    os.chmod(d / "u.data", 0o644)
    raw = cut(d / "u.data", (d / "u.data").stat().st_size // 2)
    refused(d, r"u\.data:50177: the file ends mid-line .* looks cut")
    (d / "u.data").write_bytes(raw[: len(raw) // 2] + b"\n")  # cut, then given a newline (e.g. by an editor)
    refused(d, r"u\.data:50177: timestamp \d+ has 7 digits, fewer than every other .* looks cut")
    (d / "u.data").write_bytes(raw[: raw.index(b"\n", len(raw) // 2) + 1])  # cut exactly at a line end
    refused(d, r"u\.data: 50,177 ratings, but .*u\.info says 100,000")


def test_cut_mid_line_without_final_newline(tmp_path):
    d = ml100k_release(tmp_path)
    cut(d / "u.data", (d / "u.data").stat().st_size - 4)
    refused(d, r"u\.data:150: the file ends mid-line")


def test_cut_last_line_with_fewer_fields(tmp_path):
    d = ml100k_release(tmp_path)
    raw = (d / "u.data").read_bytes()
    (d / "u.data").write_bytes(raw[: raw.rindex(b"\t")] + b"\n")  # the last line lost its timestamp field
    refused(d, r"u\.data:150: expected 4 fields .*the last line: the file looks cut")


def test_last_timestamp_shorter_than_all_others(tmp_path):
    d = ml100k_release(tmp_path, marker=False)  # format checks only: this one needs no release facts
    raw = (d / "u.data").read_bytes()
    (d / "u.data").write_bytes(raw[:-5] + b"\n")  # '880008940' -> '88000'
    refused(d, r"u\.data:150: timestamp 88000 has 5 digits, fewer than every other timestamp")


def test_timestamp_outside_documented_span_needs_the_release(tmp_path):
    d = ml100k_release(tmp_path)
    text = (d / "u.data").read_text().replace(f"\t{T0 + 60 * 9}\n", "\t946684800\n")  # line 10 -> 2000-01-01
    write(d / "u.data", text)
    msg = refused(d, r"u\.data:10: timestamp 946684800 \(2000-01-01\) is outside ml-100k's span 1997-09-19 \.\. "
                     r"1998-04-22")
    assert "README" in msg  # says where the span is documented
    (d / "README").unlink()
    (d / "u.info").unlink()
    assert len(read_movielens(d).interactions) == 150  # your own ML-100K-shaped data: no release span applies


@pytest.mark.parametrize("fixture, name", [("ml1m_dir", "ratings.dat"), ("csv_dir", "ratings.csv"),
                                           ("csv_dir", "movies.csv"), ("ml1m_dir", "movies.dat"),
                                           ("ml1m_dir", "users.dat"), ("ml100k_dir", "u.item"),
                                           ("ml100k_dir", "u.user")])
def test_every_text_file_cut_mid_line_is_refused(request, fixture, name):
    d = request.getfixturevalue(fixture)
    lines = (d / name).read_bytes().count(b"\n")
    cut(d / name, (d / name).stat().st_size - 2)
    refused(d, rf"{name}:{lines}: the file ends mid-line")


def test_embedded_copy_cut_is_refused(tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    for ext in ("inter", "item", "user"):
        shutil.copyfile(embedded_ml100k_dir() / f"ml-100k.{ext}", d / f"ml-100k.{ext}")
    cut(d / "ml-100k.inter", 1_000_000)
    refused(d, r"ml-100k\.inter:\d+: the file ends mid-line")
    (d / "ml-100k.inter").write_bytes(b"")
    refused(d, r"ml-100k\.inter: the file is empty \(0 bytes\)")


def test_ml1m_release_span_and_count(tmp_path):
    d = tmp_path / "ml-1m"
    write(d / "ratings.dat", "1::1::5::978300760\n1::3::3::915148800\n")  # line 2: 1999-01-01
    write(d / "movies.dat", "1::Toy Story (1995)::Animation\n3::Heat (1995)::Action\n")
    write(d / "README", "These files contain 1,000,209 anonymous ratings (a test copy)\n")
    refused(d, r"ratings\.dat:2: timestamp 915148800 \(1999-01-01\) is outside ml-1m's span 2000-01-01")
    write(d / "ratings.dat", "1::1::5::978300760\n1::3::3::978302109\n")
    refused(d, r"ratings\.dat: 2 ratings, but the ml-1m release .* says 1,000,209")


def test_rebuilt_release_span_from_its_readme_or_a_loose_one(csv_dir):
    write(csv_dir / "README.txt", "It contains 3 ratings. These data were created by 2 users between "
                                  "March 29, 1996 and September 24, 2018.\n")
    assert len(read_movielens(csv_dir).interactions) == 3
    write(csv_dir / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,1577836800\n"
                                   "2,1,0.5,964982224\n")  # line 3: 2020-01-01, after the README's span
    refused(csv_dir, r"ratings\.csv:3: timestamp 1577836800 \(2020-01-01\) is outside ml-latest-small's span "
                     r"1996-03-29 \.\. 2018-09-24")
    write(csv_dir / "README.txt", "A README that states no span.\n")
    write(csv_dir / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,1\n")
    refused(csv_dir, r"ratings\.csv:3: timestamp 1 \(1970-01-01\) is outside ml-latest-small's span 1995-01-01 "
                     r"\.\. \d{4}-\d\d-\d\d \(not documented: a sanity span")


def test_shared_and_embedded_copies_are_held_to_their_release_facts():
    emb = integ.release_expectations("ml-100k", "recbole-atomic", embedded_ml100k_dir())
    assert emb is not None and emb.ratings == 100_000
    shared = integ.release_expectations("ml-100k", "ml-100k", shared_dir("ml-100k"))
    assert shared is not None and shared.ratings == 100_000 and "u.info" in shared.ratings_doc
    assert load_dataset().stats()["ratings"] == 100_000  # and still load
    assert load_dataset("ml-100k", shared_dir("ml-100k")).stats()["ratings"] == 100_000


# ---------------------------------------------------------------------------------------------- 2. missing, empty
@pytest.mark.parametrize("fixture, name, body, pattern", [
    ("ml100k_dir", "u.data", "1\t1\t5\t100\n1\t2\t3\t\n", r"u\.data:2: missing value in column 'timestamp'"),
    ("ml100k_dir", "u.data", "1\t1\t5\t100\n\t2\t3\t100\n", r"u\.data:2: missing value in column 'user'"),
    ("csv_dir", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,NA,964982704\n",
     r"ratings\.csv:3: missing value in column 'rating'"),
    ("ml1m_dir", "ratings.dat", "1::1::5::978300760\n1::3::3::\n", r"ratings\.dat:2: missing value in column 'tim"),
])
def test_missing_value_is_reported_as_missing(request, fixture, name, body, pattern):
    d = request.getfixturevalue(fixture)
    write(d / name, body)
    msg = refused(d, pattern)
    assert "negative" not in msg and "-9223372036854775808" not in msg


def test_missing_id_in_parquet_is_reported_as_missing(parquet_dir):
    df = pd.read_parquet(parquet_dir / "ratings.parquet")
    df["user_id"] = pd.array([1, 1, None, 2, 2], dtype="Int64")
    df.to_parquet(parquet_dir / "ratings.parquet", index=False)
    refused(parquet_dir, r"ratings\.parquet \(row 2\): missing value in column 'user'")


@pytest.mark.parametrize("fixture, name, body, pattern", [
    ("ml100k_dir", "u.data", "", r"u\.data: the file is empty \(0 bytes\)"),
    ("ml100k_dir", "u.item", "", r"u\.item: the file is empty \(0 bytes\) \(needed for titles and genres\)"),
    ("ml100k_dir", "u.item", "\n\n", r"u\.item: no rows"),
    ("ml1m_dir", "movies.dat", "", r"movies\.dat: the file is empty"),
    ("csv_dir", "movies.csv", "", r"movies\.csv: the file is empty"),
    ("csv_dir", "ratings.csv", "", r"ratings\.csv: the file is empty"),
])
def test_empty_files_get_their_own_message(request, fixture, name, body, pattern):
    d = request.getfixturevalue(fixture)
    write(d / name, body)
    refused(d, pattern)


@pytest.mark.parametrize("fixture, name, body, pattern", [
    ("ml100k_dir", "u.data", "1\t1\t5\t100\n99999999999999999999\t2\t3\t100\n",
     r"u\.data:2: column 'user' value 99999999999999999999 is too large for a 64-bit integer"),
    ("csv_dir", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,99999999999999999999\n",
     r"ratings\.csv:3: column 'timestamp' value 99999999999999999999 is too large"),
    ("ml100k_dir", "u.item", "99999999999999999999|Toy Story (1995)|01-Jan-1995||x" + "|0" * 19 + "\n",
     r"u\.item:1: id is too large for a 64-bit integer"),
    ("csv_dir", "movies.csv", "movieId,title,genres\n1,A (1995),Drama\n3.5,B (1995),Drama\n",
     r"movies\.csv:3: id is not a whole number"),
])
def test_id_too_large_for_int64(request, fixture, name, body, pattern):
    d = request.getfixturevalue(fixture)
    write(d / name, body, encoding="latin-1")
    refused(d, pattern)


def test_fractional_ratings_refused_in_whole_star_releases(ml100k_dir, ml1m_dir, tmp_path):
    write(ml100k_dir / "u.data", "1\t1\t5\t100\n1\t2\t3.5\t100\n")
    refused(ml100k_dir, r"u\.data:2: rating 3\.5 is not a whole star: ml-100k ratings are whole numbers 1\.\.5")
    write(ml1m_dir / "ratings.dat", "1::1::5::978300760\n1::3::4.5::978302109\n")
    refused(ml1m_dir, r"ratings\.dat:2: rating 4\.5 is not a whole star: ml-1m")
    d = tmp_path / "ml-100k-atomic"
    write(d / "ml-100k.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t2.5\t881250949\n")
    write(d / "ml-100k.item", "item_id:token\tmovie_title:token_seq\n1\tToy Story\n")
    refused(d, r"ml-100k\.inter:2: rating 2\.5 is not a whole star")


def test_fractional_rating_refused_in_the_ml1m_parquet_copy(parquet_dir):
    df = pd.read_parquet(parquet_dir / "ratings.parquet")
    df["rating"] = [5.0, 3.0, 4.5, 4.0, 2.0]
    df.to_parquet(parquet_dir / "ratings.parquet", index=False)
    refused(parquet_dir, r"ratings\.parquet \(row 2\): rating 4\.5 is not a whole star")


# ---------------------------------------------------------------------------------------------- 3. caches
def test_dashboard_cache_rereads_an_edited_file(csv_dir):
    from recsys.app import common

    common._load.clear()
    first = common.cached_dataset(None, str(csv_dir))
    assert common.cached_dataset(None, str(csv_dir)) is first  # unchanged files: served from memory
    write(csv_dir / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,2.0,964982703\n")
    edited = common.cached_dataset(None, str(csv_dir))
    assert edited is not first and edited.interactions["rating"].tolist() == [2.0]
    assert edited.fingerprint != first.fingerprint
    common._load.clear()


def _entry(cache: Path) -> Path:
    (entry,) = list(cache.iterdir())
    return entry


def test_cache_entry_with_a_valid_but_different_parquet_is_rebuilt(csv_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_dataset(data_dir=csv_dir, cache_dir=cache)
    entry = _entry(cache)
    first.interactions.iloc[:1].to_parquet(entry / "interactions.parquet", index=False)  # readable, wrong
    calls = []
    real = loader.read_movielens
    monkeypatch.setattr(loader, "read_movielens", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = load_dataset(data_dir=csv_dir, cache_dir=cache)
    assert calls == [1] and len(again.interactions) == 3
    pd.testing.assert_frame_equal(first.interactions, again.interactions)
    load_dataset(data_dir=csv_dir, cache_dir=cache)
    assert calls == [1]  # the rebuilt entry is trusted again


@pytest.mark.parametrize("tamper", ["rows", "old-format", "fingerprint", "reader-version"])
def test_cache_meta_mismatch_is_rebuilt(csv_dir, tmp_path, monkeypatch, tamper):
    cache = tmp_path / "cache"
    load_dataset(data_dir=csv_dir, cache_dir=cache)
    meta_path = _entry(cache) / "meta.json"
    meta = json.loads(meta_path.read_text())
    if tamper == "rows":
        meta["files"]["interactions.parquet"]["rows"] = 2
    elif tamper == "old-format":
        del meta["files"]
    elif tamper == "reader-version":  # written before the current checks: they must run again
        meta["reader_version"] = "1"
    else:
        meta["fingerprint"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    calls = []
    real = loader.read_movielens
    monkeypatch.setattr(loader, "read_movielens", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert len(load_dataset(data_dir=csv_dir, cache_dir=cache).interactions) == 3 and calls == [1]


def test_identical_folders_share_a_cache_entry_but_not_a_source(csv_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    other = tmp_path / "elsewhere" / csv_dir.name
    shutil.copytree(csv_dir, other)
    a = load_dataset(data_dir=csv_dir, cache_dir=cache)

    def boom(*a, **k):
        raise AssertionError("the shared cache entry should serve folder B")

    monkeypatch.setattr(loader, "read_movielens", boom)
    b = load_dataset(data_dir=other, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1 and b.fingerprint == a.fingerprint
    assert b.source == integ.source_label(other) and b.source != a.source
    assert b.source.endswith("elsewhere/ml-latest-small")
    assert load_dataset(data_dir=csv_dir, cache_dir=cache).source == a.source


# ---------------------------------------------------------------------------------------------- 4. provenance
def test_embedded_source_names_package_and_version():
    version = importlib.metadata.version("recbole")
    for data in (load_dataset(), load_dataset()):  # read, then from the cache
        assert data.source == f"embedded ml-100k (recbole=={version} wheel: dataset_example/ml-100k)"


def test_relative_data_dir_stays_relative(ml1m_dir, monkeypatch):
    monkeypatch.chdir(ml1m_dir.parent)
    assert load_dataset(data_dir="ml-1m").source == "ml-1m"
    assert load_dataset(data_dir="./x/../ml-1m/").source == "ml-1m"
    monkeypatch.chdir(ml1m_dir)  # "." names no folder: the absolute rule applies
    assert load_dataset("ml-1m", ".").source == f"…/{ml1m_dir.parent.name}/ml-1m"


def test_absolute_data_dir_never_recorded(ml1m_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    under_home = home / "data" / "ml-1m"
    shutil.copytree(ml1m_dir, under_home)
    monkeypatch.setenv("HOME", str(home))
    assert load_dataset(data_dir=under_home).source == "~/data/ml-1m"
    assert load_dataset(data_dir="~/data/ml-1m").source == "~/data/ml-1m"
    monkeypatch.setenv("HOME", "/nonexistent-home")
    work = tmp_path / "work" / "repo"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    beside = tmp_path / "work" / "shared" / "ml-1m"
    shutil.copytree(ml1m_dir, beside)
    assert load_dataset(data_dir=beside).source == "../shared/ml-1m"
    elsewhere = home / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    far = load_dataset(data_dir=beside)
    assert far.source == "…/shared/ml-1m"
    for data in (far, read_movielens(beside)):
        assert not data.source.startswith("/") and str(tmp_path) not in data.source
        assert str(tmp_path) not in json.dumps(data.stats())


def test_source_label_rule_directly(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.chdir(tmp_path)
    assert integ.source_label("/home/someone/.cache/ss4rec-workbench/movielens/ml-25m") == \
        "~/.cache/ss4rec-workbench/movielens/ml-25m"
    assert integ.source_label("/srv/datasets/movielens/ml-1m") == "…/movielens/ml-1m"
    assert integ.source_label("/srv/x", given="../shared/movielens/ml-1m") == "../shared/movielens/ml-1m"
    assert integ.source_label(embedded_ml100k_dir()).startswith("embedded ml-100k (recbole==")


def test_digit_check_needs_enough_lines():
    """A tiny hand-made file may have a short last timestamp (the fixtures do); 100 lines or more may not."""
    integ.check_last_timestamp(np.array([880_000_000] * 98 + [88]), "x:99")
    with pytest.raises(DataValidationError, match="x:100: timestamp 88 has 2 digits"):
        integ.check_last_timestamp(np.array([880_000_000] * 99 + [88]), "x:100")


# ------------------------------------------------------------------- issue 26: data files that lie about what they are
def test_millisecond_timestamps_are_refused_with_the_likely_unit(tmp_path):
    plain = tmp_path / "mine"  # a plain folder (no release facts): accepted and trained on year 29688 before
    write(plain / "u.data", f"1\t1\t5\t{T0}\n1\t2\t3\t{T0 * 1000}\n2\t1\t4\t{T0}\n")
    write(plain / "u.item", ML100K_ITEM, encoding="latin-1")
    msg = refused(plain, r"u\.data:2: timestamp 880000000000 is after 2100-01-01")
    assert "milliseconds (1997-11-20 if so)" in msg
    release = ml100k_release(tmp_path)  # a release folder: crashed in the span check ("year 29895 is out of range")
    write(release / "u.data", "".join(f"1\t{1 + k % 3}\t5\t{(T0 + k) * 1000}\n" for k in range(3)))
    refused(release, r"u\.data:1: timestamp 880000000000 is after 2100-01-01 .* milliseconds")


@pytest.mark.parametrize("kind", ["directory", "fifo", "dev-zero"])
def test_a_ratings_file_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    d = tmp_path / "ml-100k"
    write(d / "u.item", ML100K_ITEM, encoding="latin-1")
    if kind == "directory":
        (d / "u.data").mkdir()
    elif kind == "fifo":
        os.mkfifo(d / "u.data")  # reading it would wait for a writer for good
    else:
        (d / "u.data").symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(DataValidationError, match="a MovieLens file must be a regular file"):
        load_dataset(None, d, cache=False, download=False)


def test_encodings_are_detected_and_said(tmp_path, csv_dir):
    d = ml100k_release(tmp_path, marker=False)
    write(d / "u.item", ML100K_ITEM.replace("Caf\xe9 Society", "Les Mis\xe9rables"), encoding="utf-8")
    data = read_movielens(d)
    assert "Les Misérables (1995)" in set(data.items["title"])  # not "MisÃ©rables"
    assert any("u.item: read as UTF-8" in n for n in data.notes)
    write(csv_dir / "movies.csv", 'movieId,title,genres\n1,Caf\xe9 (1995),Drama\n3,B (1991),Comedy\n'
                                  '7,C (1992),War\n', encoding="latin-1")  # crashed with UnicodeDecodeError
    data = read_movielens(csv_dir)
    assert "Café (1995)" in set(data.items["title"])
    assert any("movies.csv: read as latin-1" in n for n in data.notes)
    clean = read_movielens(ml100k_release(tmp_path / "clean", marker=False))
    assert not clean.notes  # the release's own encoding: nothing to say


def test_a_huge_line_is_quoted_clipped(tmp_path):
    d = tmp_path / "ml-100k"
    write(d / "u.data", f"1\t1\t5\t{T0}\n" + "x" * 3_000_000 + "\n")
    write(d / "u.item", ML100K_ITEM, encoding="latin-1")
    msg = refused(d, r"u\.data:2: ")
    assert len(msg) < 400 and "3,000,002 characters" in msg


def test_a_fully_quoted_csv_is_read(csv_dir):
    write(csv_dir / "ratings.csv", '"userId","movieId","rating","timestamp"\n"1","1","4.0","964982703"\n'
                                   '"1","3","4.5","964981247"\n"2","1","0.5","964982224"\n')
    data = read_movielens(csv_dir)
    assert len(data.interactions) == 3 and data.interactions["rating"].tolist() == [4.0, 4.5, 0.5]


@pytest.mark.parametrize("magic,what", [(b"\x1f\x8b\x08\x00", "a gzip archive"), (b"PK\x03\x04", "a zip archive")])
def test_an_archive_named_like_a_text_file_is_named_for_what_it_is(tmp_path, magic, what):
    d = tmp_path / "ml-100k"
    write(d / "u.item", ML100K_ITEM, encoding="latin-1")
    (d / "u.data").write_bytes(magic + os.urandom(200))  # diagnosed as "cut short" before
    msg = refused(d, rf"u\.data: {what}, not a text file")
    assert "cut" not in msg


def test_a_folder_is_named_for_the_release_its_files_are(tmp_path, ml1m_dir, ml10m_dir):
    from recsys.data.readers import guess_name, identify_release

    mine = tmp_path / "my-copy"
    shutil.copytree(ml1m_dir, mine)
    assert identify_release(mine) == "ml-1m" and guess_name(mine) == "ml-1m"  # was "ml-100k" in `info`
    write(ml10m_dir / "tags.dat", "1::122::funny::838985046\n")
    assert identify_release(ml10m_dir) == "ml-10m"
    with pytest.raises(DataValidationError, match=r"--dataset ml-100k, but the folder holds ml-1m's files"):
        load_dataset("ml-100k", mine, cache=False, download=False)
    with pytest.raises(DataValidationError, match=r"--dataset ml-1m, but the folder holds ml-10m's files"):
        load_dataset("ml-1m", ml10m_dir, cache=False, download=False)


def test_info_names_the_release_a_folder_holds(tmp_path, ml1m_dir, capsys):
    from recsys.data.__main__ import main as data_main

    mine = tmp_path / "copy"
    shutil.copytree(ml1m_dir, mine)
    assert data_main(["info", "--data-dir", str(mine), "--no-download", "--no-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == "ml-1m"
