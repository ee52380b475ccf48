"""recsys.explore against hand-computed values on tiny frames, and the Explore page through AppTest (no browser)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from recsys import explore as ex
from recsys.app import state
from tests.conftest import ROOT, shared_dir, write


def ts(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").timestamp())


def frame(rows, nullable=False) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    df = df.astype({"user": "int64", "item": "int64", "rating": "float32"})
    df["timestamp"] = df["timestamp"].astype("Int64" if nullable else "int64")
    return df


def items_frame(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["item", "title", "year", "genres"])
    return df.astype({"item": "int64", "year": "Int64"})


# Gaps: user 1's ratings in file order are at 50, 10, 50, 3650 -> chronological 10, 50 (row 1), 50 (row 3), 3650
# (the tie at 50 keeps file order), gaps 40, 0, 3600; user 2: 40, 100 -> 60; user 3 has one rating (no gap).
GAPS = frame([(2, 1, 3, 100), (1, 1, 4, 50), (1, 2, 5, 10), (1, 3, 2, 50), (2, 2, 1, 40), (1, 4, 4, 3650),
              (3, 1, 5, 5)])
GAP_ITEMS = items_frame([(1, "One (1990)", 1990, "Drama"), (2, "Two (1991)", 1991, "Comedy"),
                         (3, "Three (1992)", 1992, ""), (4, "Four (1993)", 1993, "Drama")])


# ---------------------------------------------------------------------------------------------------------------
# human gaps

@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (1, "1 s"), (45, "45 s"), (59, "59 s"), (60, "1 min"), (90, "1.5 min"), (45 * 60, "45 min"),
    (3600, "1 h"), (7200, "2 h"), (36 * 3600, "1.5 d"), (3 * 86400, "3 d"), (45 * 86400, "45 d"),
    (int(2 * 365.25 * 86400), "2 y"), (None, "—"), (float("nan"), "—"), (pd.NA, "—"),
])
def test_format_gap(seconds, text):
    assert ex.format_gap(seconds) == text


# ---------------------------------------------------------------------------------------------------------------
# gaps between consecutive ratings

def test_user_gaps_sorted_by_time_ties_by_file_order():
    g = ex.user_gaps(GAPS)
    assert g["user"].tolist() == [1, 1, 1, 2]
    assert g["gap"].tolist() == [40, 0, 3600, 60]
    assert g["gap"].dtype == np.int64


def test_user_gaps_skip_ratings_without_timestamp():
    df = frame([(1, 1, 4, 10), (1, 2, 4, None), (1, 3, 4, 70), (2, 1, 3, None), (2, 2, 3, None)], nullable=True)
    g = ex.user_gaps(df)
    assert g["user"].tolist() == [1] and g["gap"].tolist() == [60]
    assert ex.user_gaps(frame([(1, 1, 4, 10)])).empty


def test_gap_summary_counts_zero_gaps_separately():
    s = ex.gap_summary(ex.user_gaps(GAPS))
    assert s["gaps"] == 4 and s["zero_gaps"] == 1 and s["positive_gaps"] == 3
    assert s["zero_share"] == pytest.approx(0.25)
    assert s["median"] == pytest.approx(50.0)  # median of 0, 40, 60, 3600
    assert ex.gap_summary(np.array([], dtype=np.int64))["zero_share"] == 0.0


def test_gap_histogram_log_bins():
    h = ex.gap_histogram(ex.user_gaps(GAPS), bins_per_decade=1)
    assert h["bin_lo"].tolist() == pytest.approx([1, 10, 100, 1000])
    assert h["bin_hi"].tolist() == pytest.approx([10, 100, 1000, 10000])
    assert h["gaps"].tolist() == [0, 2, 0, 1]  # 40 and 60; 3600; the zero gap is in no bin
    assert h["share"].tolist() == pytest.approx([0, 0.5, 0, 0.25])  # shares of ALL 4 gaps
    assert h["share"].sum() + ex.gap_summary(ex.user_gaps(GAPS))["zero_share"] == pytest.approx(1.0)
    assert h["range"].iloc[1] == "10 s – 1.7 min"


def test_gap_histogram_edges_are_logspace_and_bins_half_open():
    h = ex.gap_histogram(np.array([10, 100, 0, 1]), bins_per_decade=1)
    assert h["gaps"].tolist() == [1, 2]  # 1 in [1, 10); 10 in [10, 100]; 100 in the last (closed) bin
    h4 = ex.gap_histogram(np.array([5, 20_000, 86_400 * 400]), bins_per_decade=4)
    edges = np.append(h4["bin_lo"].to_numpy(), h4["bin_hi"].iloc[-1])
    assert edges == pytest.approx(np.logspace(0, 8, 33)[: len(edges)])
    assert h4["bin_hi"].iloc[-1] >= 86_400 * 400 > h4["bin_lo"].iloc[-1]  # ends at the bin holding the max
    assert h4["gaps"].sum() == 3
    assert ex.gap_histogram(np.array([0, 0])).empty and ex.gap_histogram(np.array([], dtype=np.int64)).empty


def test_gap_references_are_minute_hour_day_month():
    assert ex.GAP_REFERENCES["seconds"].tolist() == [60, 3600, 86400, 30 * 86400]


# ---------------------------------------------------------------------------------------------------------------
# distributions and long tails

def test_rating_distribution_and_months():
    df = frame([(1, 1, 4, ts("2000-01-05")), (1, 2, 4, ts("2000-01-31 23:59:59")), (2, 1, 5, ts("2000-03-01")),
                (2, 2, 1, None)], nullable=True)
    d = ex.rating_distribution(df)
    assert d["rating"].tolist() == [1.0, 4.0, 5.0] and d["ratings"].tolist() == [1, 2, 1]
    assert d["share"].tolist() == pytest.approx([0.25, 0.5, 0.25])
    m = ex.ratings_per_month(df)  # the untimed rating is left out; the empty February is kept as 0
    assert [str(x)[:7] for x in m["month"]] == ["2000-01", "2000-02", "2000-03"]
    assert m["ratings"].tolist() == [2, 0, 1]
    # the data start on Jan 5 (January partial) and end on Mar 1 (March partial); February is whole
    assert m["partial"].tolist() == [True, False, True]
    whole = ex.ratings_per_month(frame([(1, 1, 4, ts("2000-01-01")), (1, 2, 4, ts("2000-01-31 12:00"))]))
    assert whole["partial"].tolist() == [False]
    assert ex.ratings_per_month(frame([(1, 1, 4, None)], nullable=True)).empty


TAIL = frame([(u, 1, 4, u) for u in range(5)] + [(u, 2, 4, u) for u in range(3)] + [(0, 3, 4, 9), (1, 4, 4, 9)])


def test_long_tail_ranks_and_cumulative_share():
    t = ex.long_tail(TAIL, "item")  # items hold 5, 3, 1, 1 of 10 ratings
    assert t["rank"].tolist() == [1, 2, 3, 4] and t["ratings"].tolist() == [5, 3, 1, 1]
    assert t["cum_share"].tolist() == pytest.approx([0.5, 0.8, 0.9, 1.0])
    u = ex.long_tail(TAIL, "user")  # users 0 and 1: 3 each; 2: 2; 3, 4: 1
    assert u["ratings"].tolist() == [3, 3, 2, 1, 1]
    with pytest.raises(ValueError):
        ex.long_tail(TAIL, "genre")


def test_long_tail_subsampling_keeps_head_and_end():
    big = frame([(u, i, 4, 0) for i in range(1, 301) for u in range(1 + 300 // i)])
    t = ex.long_tail(big, "item", max_points=50)
    assert len(t) <= 50 and t["rank"].iloc[0] == 1 and t["rank"].iloc[-1] == 300
    assert t["rank"].is_monotonic_increasing and t["cum_share"].iloc[-1] == pytest.approx(1.0)


def test_top_share_and_summary_line():
    assert ex.top_share(TAIL, "item", 0.25) == (1, 4, pytest.approx(0.5))
    assert ex.top_share(TAIL, "item", 0.5) == (2, 4, pytest.approx(0.8))
    assert ex.top_share(TAIL, "item", 0.01) == (1, 4, pytest.approx(0.5))  # at least one
    assert ex.top_share(TAIL, "user", 0.4) == (2, 5, pytest.approx(0.6))
    line = ex.long_tail_summary(TAIL, "item")
    assert line.startswith("top 1% of movies (1 of 4 rated) hold 50.0% of ratings")
    assert "median 2 ratings per movie" in line
    assert ex.long_tail_summary(TAIL, "user").startswith("top 1% of users (1 of 5 active) hold 30.0% of ratings")


# ---------------------------------------------------------------------------------------------------------------
# genres over time

GENRE_ITEMS = items_frame([(1, "A (1990)", 1990, "Drama|Comedy"), (2, "B (1991)", 1991, "Drama"),
                           (3, "C (1992)", 1992, ""), (4, "D (1993)", 1993, "(no genres listed)")])
GENRE_RATINGS = frame([(1, 1, 4, ts("2000-06-01")), (2, 2, 4, ts("2000-12-31 23:59:59")), (3, 3, 4, ts("2000-02-01")),
                       (1, 2, 3, ts("2001-01-01")), (2, 4, 3, ts("2001-05-05")), (3, 1, 2, None)], nullable=True)


def test_item_genres_split_and_skip_empty():
    g = ex.item_genres(GENRE_ITEMS)
    assert sorted(map(tuple, g[["item", "genre"]].to_numpy().tolist())) == [(1, "Comedy"), (1, "Drama"), (2, "Drama")]


def test_genre_shares_per_year():
    s = ex.genre_shares_over_time(GENRE_RATINGS, GENRE_ITEMS)
    got = {(int(r.period), r.genre): (r.ratings, r.total, r.share) for r in s.itertuples()}
    # 2000: 3 ratings (A, B, C): Drama 2/3, Comedy 1/3. 2001: 2 ratings (B, D): Drama 1/2, no Comedy row.
    assert got.keys() == {(2000, "Comedy"), (2000, "Drama"), (2001, "Drama")}
    assert got[(2000, "Drama")] == (2, 3, pytest.approx(2 / 3))
    assert got[(2000, "Comedy")] == (1, 3, pytest.approx(1 / 3))
    assert got[(2001, "Drama")] == (1, 2, pytest.approx(0.5))


def test_genre_shares_per_month_and_totals():
    s = ex.genre_shares_over_time(GENRE_RATINGS, GENRE_ITEMS, period="month")
    june = s.loc[s["period"] == pd.Timestamp("2000-06-01")]
    assert june.set_index("genre")["share"].to_dict() == {"Comedy": 1.0, "Drama": 1.0}
    t = ex.genre_totals(GENRE_RATINGS, GENRE_ITEMS)  # all 6 ratings, timestamped or not: Drama 4, Comedy 2
    assert t["genre"].tolist() == ["Drama", "Comedy"] and t["ratings"].tolist() == [4, 2]
    assert t["share"].tolist() == pytest.approx([4 / 6, 2 / 6])
    assert ex.top_genres(GENRE_RATINGS, GENRE_ITEMS, n=1) == ["Drama"]
    with pytest.raises(ValueError):
        ex.genre_shares_over_time(GENRE_RATINGS, GENRE_ITEMS, period="week")


# ---------------------------------------------------------------------------------------------------------------
# movies

MOVIES = items_frame([(1, "Star Wars (1977)", 1977, "Action|Sci-Fi"), (2, "Return of the Jedi (1983)", 1983, "Action"),
                      (3, "Star Trek: The Motion Picture (1979)", 1979, "Sci-Fi"), (4, "Unrated (2000)", 2000, "")])
MOVIE_RATINGS = frame([(1, 1, 5, 1), (2, 1, 4, 2), (1, 3, 3, 3), (2, 3, 2, 4), (3, 3, 4, 5), (1, 2, 4, 6)])


def test_item_table_counts_and_means():
    t = ex.item_table(MOVIE_RATINGS, MOVIES).set_index("item")
    assert t["ratings"].to_dict() == {1: 2, 2: 1, 3: 3, 4: 0}
    assert t.loc[1, "mean_rating"] == pytest.approx(4.5) and t.loc[3, "mean_rating"] == pytest.approx(3.0)
    assert np.isnan(t.loc[4, "mean_rating"])


def test_search_titles_case_insensitive_substring():
    table = ex.item_table(MOVIE_RATINGS, MOVIES)
    hit = ex.search_titles(table, "STAR")
    assert hit["title"].tolist() == ["Star Trek: The Motion Picture (1979)", "Star Wars (1977)"]  # most rated first
    assert hit.columns.tolist() == ["item", "title", "year", "genres", "ratings", "mean_rating"]
    assert ex.search_titles(table, "(1977)")["item"].tolist() == [1]  # literal, not a regex
    assert ex.search_titles(table, "  jedi ")["ratings"].tolist() == [1]
    assert ex.search_titles(table, "nothing like this").empty
    assert ex.search_titles(table, "").empty and ex.search_titles(table, "   ").empty
    assert len(ex.search_titles(table, "(", limit=2)) == 2


# ---------------------------------------------------------------------------------------------------------------
# one user

def test_user_timeline_chronological_with_human_gaps():
    t = ex.user_timeline(GAPS, GAP_ITEMS, 1)
    assert t["item"].tolist() == [2, 1, 3, 4]  # 10, 50, 50 (tie: file order), 3650
    assert t["n"].tolist() == [1, 2, 3, 4]
    assert t["title"].tolist() == ["Two (1991)", "One (1990)", "Three (1992)", "Four (1993)"]
    assert t["gap_s"].tolist()[1:] == [40, 0, 3600] and pd.isna(t["gap_s"].iloc[0])
    assert t["gap"].tolist() == ["—", "40 s", "0 s", "1 h"]
    assert t["time"].iloc[0] == pd.Timestamp(10, unit="s")
    assert t["rating"].tolist() == [5.0, 4.0, 2.0, 4.0]


def test_user_timeline_day_gaps_and_untimed_ratings_last():
    df = frame([(7, 2, 3, None), (7, 1, 4, ts("2000-01-04")), (7, 3, 5, ts("2000-01-01"))], nullable=True)
    t = ex.user_timeline(df, GAP_ITEMS, 7)
    assert t["item"].tolist() == [3, 1, 2] and t["gap"].tolist() == ["—", "3 d", "—"]
    assert pd.isna(t["time"].iloc[2])


def test_user_timeline_unknown_user_raises_clear_error():
    with pytest.raises(ex.UnknownUserError, match=r"user 99 has no ratings in this dataset \(ids 1\.\.3, 3 users\)"):
        ex.user_timeline(GAPS, GAP_ITEMS, 99)
    with pytest.raises(ex.UnknownUserError, match="whole number"):
        ex.user_timeline(GAPS, GAP_ITEMS, "abc")
    assert ex.user_ids(GAPS).tolist() == [1, 2, 3]


def test_user_profile():
    users = pd.DataFrame({"user": [1, 2], "age": [24, 53], "gender": ["M", "F"]})
    assert ex.user_profile(users, 2) == {"age": 53, "gender": "F"}
    assert ex.user_profile(users, 3) == {} and ex.user_profile(None, 1) == {}
    ml1m = pd.DataFrame({"user": [1, 2], "gender": ["F", "M"], "age": [1, 56], "occupation": ["10", "16"]})
    assert ex.user_profile(ml1m, 1, "ml-1m") == {"gender": "female", "age": "under 18", "occupation": "K-12 student"}
    assert ex.user_profile(ml1m, 2, "ml-1m")["occupation"] == "self-employed"
    assert ex.user_profile(ml1m, 2)["age"] == 56  # other releases: as in the file


# ---------------------------------------------------------------------------------------------------------------
# the page (AppTest)

def run_app():
    """The app, switched to Explore (the answer page is the default)."""
    return AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run() \
        .switch_page("app_pages/explore.py").run()


def chart_titles(at) -> list[str]:
    """Each chart's title: the page shows it as text above the chart (recsys.app.common.show_chart) and the spec
    keeps it in usermeta."""
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    return [s.get("title") or (s.get("usermeta") or {}).get("title") for s in specs]


def test_page_renders_every_section_on_embedded_data():
    at = run_app()
    assert not at.exception and not at.error
    values = {m.label: m.value for m in at.metric}
    assert values["Ratings"] == "100,000" and values["Users"] == "943" and values["Movies rated"] == "1,682"
    assert values["Gaps"] == "99,057"  # 100,000 ratings - 943 users
    assert values["Exactly 0 s"].endswith("%")
    titles = chart_titles(at)
    assert len(titles) == 7 and all(t.startswith("ml-100k: ") for t in titles)
    for part in ("rating distribution", "ratings per month", "user activity", "movie popularity", "genre",
                 "gaps between consecutive ratings", "ratings of user 1"):
        assert any(part in t for t in titles), part
    assert any("log axis" in i.value for i in at.info)
    assert any(m.value.startswith("Top 1% of movies") for m in at.markdown)
    genres = own_widget(at.multiselect, "explore_genres")
    assert genres.value == ["Drama", "Comedy", "Action", "Thriller", "Romance", "Adventure"]
    genres.set_value([]).run()
    assert not at.exception and any("at least one genre" in i.value for i in at.info)


def test_switching_datasets_starts_genres_and_user_from_the_new_datas_own_defaults():
    """Genres and the user id are per dataset: after ML-100K -> ml-latest-small the chips and the chart show the new
    data's top six genres at once, and the user id its first user (not ML-100K's choice, unknown there)."""
    at = run_app()
    own_widget(at.multiselect, "explore_genres").set_value(["Drama"]).run()
    at.radio[0].set_value("A folder on this machine").run()
    at.text_input[0].set_value(str(shared_dir("ml-latest-small"))).run()
    assert not at.exception
    genres = own_widget(at.multiselect, "explore_genres")
    assert len(genres.value) == 6 and genres.value != ["Drama"]
    shares = next(c for c, t in zip(at.get("vega_lite_chart"), chart_titles(at), strict=True) if "genre" in (t or ""))
    import pyarrow as pa

    spec = json.loads(shares.proto.spec)
    table = pa.ipc.open_stream(shares.proto.datasets[0].data.data).read_all()
    plotted = set(table.column("genre").to_pylist())
    assert spec["encoding"]["color"]["sort"] == genres.value
    assert plotted == set(genres.value)  # the chart and the chips agree on the first run after the switch
    assert user_box(at).value == "1"


def test_page_title_search():
    at = run_app()
    at.text_input(key="explore_title_query").set_value("star wars").run()
    assert not at.exception
    found = at.dataframe[0].value
    assert found["title"].tolist() == ["Star Wars (1977)"] and found["ratings"].tolist() == [583]
    at.text_input(key="explore_title_query").set_value("no such film xyz").run()
    assert not at.exception and any("No movie title" in i.value for i in at.info)


def user_box(at):
    """The user id the timeline follows: the sidebar's when the sidebar's SS4Rec run was trained on the dataset shown
    (the page then has no picker of its own), else the page's own picker."""
    own = [box for box in at.text_input if str(box.key).startswith("explore_user::")]
    return own[0] if own else at.text_input(key=state.USER)


def own_widget(widgets, prefix: str):
    """The page's widget whose key is `prefix` for the dataset shown (keys carry the data's fingerprint)."""
    return next(w for w in widgets if str(w.key).startswith(prefix + "::"))


def test_page_user_timeline_and_unknown_user():
    at = run_app()
    user_box(at).set_value("5").run()
    assert not at.exception
    assert any(m.value.startswith("User 5: 175 ratings") for m in at.markdown)
    history = at.dataframe[-1].value
    assert len(history) == 175 and history["gap since previous"].iloc[0] == "—"
    assert history["time"].is_monotonic_increasing
    assert any("ratings of user 5" in t for t in chart_titles(at))
    user_box(at).set_value("99999").run()
    assert not at.exception
    assert any("user 99999 has no ratings" in w.value for w in at.warning)


def test_page_own_user_box_says_when_the_text_is_not_an_id(tmp_path):
    at = run_app()
    at.text_input(key=state.RUNS_FOLDER).set_value(str(tmp_path)).run()  # no run on these data: the page's own box
    box = own_widget(at.text_input, "explore_user")
    box.set_value("12.7").run()
    assert not at.exception
    assert any("“12.7” is not a user id" in w.value for w in at.main.warning)
    assert own_widget(at.text_input, "explore_user").value == "12.7"
    assert not any(m.value.startswith("User 12") for m in at.markdown)  # not rounded to user 12


def test_page_follows_the_sidebar_user_on_the_data_of_the_sidebar_run(tmp_path):
    at = run_app()
    if not any(box.key == state.SS4REC_RUN for box in at.selectbox):
        pytest.skip("no SS4Rec run in checkpoints/")
    # the shipped SS4Rec run was trained on the embedded ML-100K: one user picker, in the sidebar
    assert not [box for box in at.text_input if str(box.key).startswith("explore_user::")]
    at.text_input(key=state.USER).set_value("7").run()
    assert not at.exception and any(m.value.startswith("User 7: ") for m in at.markdown)
    # without a run on these data (an empty runs folder), the page has its own picker again
    at.text_input(key=state.RUNS_FOLDER).set_value(str(tmp_path)).run()
    assert not at.exception and own_widget(at.text_input, "explore_user").value == "1"


def test_page_bad_folders_show_clear_errors(tmp_path):
    at = run_app()
    at.radio[0].set_value("A folder on this machine").run()
    assert not at.exception and at.info
    at.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert not at.exception and any("does not exist" in e.value for e in at.error)
    (tmp_path / "empty").mkdir()
    at.text_input[0].set_value(str(tmp_path / "empty")).run()
    assert not at.exception and any("no MovieLens ratings file" in e.value for e in at.error)
    bad = tmp_path / "ml-100k"
    write(bad / "u.data", "1\t1\t5\t100\n1\tx\t3\t100\n")
    write(bad / "u.item", "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n")
    at.text_input[0].set_value(str(bad)).run()
    assert not at.exception
    assert any("u.data:2" in e.value and "not numeric" in e.value for e in at.error)
    assert not at.get("vega_lite_chart")


def test_page_warns_about_missing_timestamps(parquet_dir):
    at = run_app()
    at.radio[0].set_value("A folder on this machine").run()
    at.text_input[0].set_value(str(parquet_dir)).run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["Ratings"] == "5"
    assert any("only the 4 of 5 ratings that have a timestamp" in w.value for w in at.warning)
    own_widget(at.text_input, "explore_user").set_value("2").run()  # one rating without a timestamp, listed last
    assert not at.exception
    assert any("1 of this user's ratings have no timestamp" in w.value for w in at.warning)
    assert at.dataframe[-1].value["time"].tolist() == ["1970-01-01 00:00:40", "unknown"]
