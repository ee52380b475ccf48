"""Explore MovieLens: headline numbers, distributions, long tails, genres over time, gaps between ratings, a movie
search and one user's timeline. Every number comes from recsys.explore and every chart from recsys.charts; this page
only arranges widgets. The user of the timeline is the sidebar's when the sidebar's SS4Rec run was trained on the
dataset shown here (one user across pages); for other data the page has its own picker.
"""
import streamlit as st

from recsys import charts
from recsys import explore as ex
from recsys.app import state
from recsys.app.common import cached_dataset, dataset_or_error, show_chart

st.title("Explore MovieLens")
st.caption("The embedded default is ML-100K (GroupLens, as shipped in the recbole==1.2.1 wheel). Point to any "
           "MovieLens folder (ML-1M, ML-10M, ML-20M, ML-25M, ml-latest, ml-latest-small) to explore it instead.")
source = st.radio("Dataset", ["Embedded ML-100K", "A folder on this machine"], horizontal=True)
data_dir = None
if source != "Embedded ML-100K":
    data_dir = st.text_input("MovieLens folder", placeholder="/path/to/ml-1m").strip()
    if not data_dir:
        st.info("Type the path of a folder that holds u.data, ratings.dat, ratings.csv or ratings.parquet.")
        st.stop()
data = dataset_or_error(None, data_dir)
if data is None:
    st.stop()


# Cached views: keyed on (data_dir, fingerprint) — cheap to hash — and the dataset is fetched from the cached loader,
# so the (possibly 25M-row) DataFrame is never hashed. Only small frames are cached (never per-rating arrays).
@st.cache_data(show_spinner=False, max_entries=8)
def overview(data_dir, fp):
    inter = cached_dataset(None, data_dir).interactions
    return {"ratings": ex.rating_distribution(inter), "months": ex.ratings_per_month(inter),
            "items": ex.long_tail(inter, "item", max_points=400), "users": ex.long_tail(inter, "user", max_points=400),
            "items_line": ex.long_tail_summary(inter, "item"), "users_line": ex.long_tail_summary(inter, "user"),
            "timestamped": int(inter["timestamp"].notna().sum())}


@st.cache_data(show_spinner=False, max_entries=8)
def genres(data_dir, fp, period):
    d = cached_dataset(None, data_dir)
    return ex.genre_totals(d.interactions, d.items), ex.genre_shares_over_time(d.interactions, d.items, period)


@st.cache_data(show_spinner=False, max_entries=8)
def gaps(data_dir, fp, bins_per_decade):
    g = ex.user_gaps(cached_dataset(None, data_dir).interactions)
    return ex.gap_summary(g), ex.gap_histogram(g, bins_per_decade)


@st.cache_data(show_spinner=False, max_entries=8)
def movies(data_dir, fp):
    d = cached_dataset(None, data_dir)
    return ex.item_table(d.interactions, d.items)


@st.cache_data(show_spinner=False, max_entries=8)
def users(data_dir, fp):
    return ex.user_ids(cached_dataset(None, data_dir).interactions)


fp = data.fingerprint
name = data.name
stats = data.stats()
c = st.columns(5)
c[0].metric("Ratings", f"{stats['ratings']:,}")
c[1].metric("Users", f"{stats['users']:,}")
c[2].metric("Movies rated", f"{stats['rated_items']:,}", help=f"{stats['items']:,} movies in the item file")
c[3].metric("Rating range", f"{stats['rating_min']:g} – {stats['rating_max']:g}")
c[4].metric("Density", f"{stats['density']:.2%}")
if stats.get("time_min"):
    st.write(f"**{stats['dataset']}** · ratings from {stats['time_min'][:10]} to {stats['time_max'][:10]} (UTC) · "
             f"source `{stats['source']}`")
else:
    st.write(f"**{stats['dataset']}** · no rating has a timestamp · source `{stats['source']}`")
for note in data.notes:
    st.warning(note)

with st.spinner("Summarising the ratings (cached after the first time)..."):
    ov = overview(data_dir, fp)
if ov["timestamped"] < stats["ratings"]:
    st.warning(f"Time-based views (ratings per month, genres over time, gaps, timelines) use only the "
               f"{ov['timestamped']:,} of {stats['ratings']:,} ratings that have a timestamp.")

tabs = st.tabs(["Ratings & long tails", "Genres over time", "Gaps between ratings", "Find a movie",
                "A user's timeline"])

# ---------------------------------------------------------------------------------------------------------------
with tabs[0]:
    left, right = st.columns(2)
    with left:
        st.subheader("Rating distribution")
        show_chart(charts.rating_distribution_chart(ov["ratings"], name))
    with right:
        st.subheader("Ratings per month")
        if ov["months"].empty:
            st.info("No rating has a timestamp.")
        else:
            show_chart(charts.ratings_per_month_chart(ov["months"], name))
            if ov["months"]["partial"].any():
                st.caption("Pale bars: months the data start or end inside, so they hold only part of a month's "
                           "ratings (a short bar there is the collection window, not a drop in activity).")

    st.subheader("Long tails")
    st.caption("Rank plots on log-log axes: rank 1 is the most active user / most rated movie. A straight line is a "
               "power law; the cumulative share says how much of the data the head holds.")
    left, right = st.columns(2)
    for col, key, who, line in ((left, "users", "user activity", "users_line"),
                                (right, "items", "movie popularity", "items_line")):
        with col:
            show_chart(charts.long_tail_chart(ov[key], name, who))
            st.write(ov[line][0].upper() + ov[line][1:] + ".")

# ---------------------------------------------------------------------------------------------------------------
with tabs[1]:
    st.subheader("Genre popularity over time")
    span_years = ((stats["timestamp_max"] - stats["timestamp_min"]) / (365.25 * 86400)
                  if stats.get("timestamp_min") is not None else 0)
    period = st.radio("Period", ["year", "month"], index=0 if span_years >= 3 else 1, horizontal=True,
                      key="explore_genre_period",
                      help="Defaults to months when the ratings span under three years (ML-100K: 7 months).")
    totals, shares = genres(data_dir, fp, period)
    if totals.empty or shares.empty:
        st.info("No genres (or no timestamped ratings) in this dataset.")
    else:
        picked = st.multiselect("Genres", totals["genre"].tolist(), default=totals["genre"].head(6).tolist(),
                                key=f"explore_genres::{fp}",  # per dataset: a switch starts from its own six
                                help="Defaults to the six most rated genres.")
        if not picked:
            st.info("Pick at least one genre.")
        else:
            view = shares.loc[shares["genre"].isin(picked)]
            show_chart(charts.genre_shares_chart(view, name, period, picked))
            st.caption("Share = ratings of movies in the genre / all ratings in that period. Genres come from the "
                       "item file; a movie with several genres counts for each, so shares add up to more than 100%.")

# ---------------------------------------------------------------------------------------------------------------
with tabs[2]:
    st.subheader("Gaps between a user's consecutive ratings")
    st.caption("What SS4Rec's time-aware S5 layer is driven by: each user's ratings sorted by timestamp (ties broken "
               "by file order), and the seconds between one rating and the next. Computed on the whole dataset, "
               "before any k-core filtering.")
    bpd = st.select_slider("Bins per power of ten", options=[2, 4, 5, 10], value=4, key="explore_gap_bins")
    summary, hist = gaps(data_dir, fp, bpd)
    if summary["gaps"] == 0:
        st.info("No user has two timestamped ratings, so there are no gaps to show.")
    else:
        c = st.columns(4)
        c[0].metric("Gaps", f"{summary['gaps']:,}")
        c[1].metric("Exactly 0 s", f"{summary['zero_share']:.1%}", help=f"{summary['zero_gaps']:,} gaps")
        c[2].metric("Median gap", ex.format_gap(summary["median"]))
        c[3].metric("75th percentile", ex.format_gap(summary["q75"]))
        st.info(f"{summary['zero_share']:.1%} of gaps ({summary['zero_gaps']:,}) are exactly 0 s — several ratings "
                f"stamped with the same second. Zero has no place on a log axis, so those gaps are not in the chart; "
                f"the bars show the other {summary['positive_gaps']:,} as shares of all {summary['gaps']:,} gaps.")
        if not hist.empty:
            show_chart(charts.gap_histogram_chart(hist, name, ex.GAP_REFERENCES))

# ---------------------------------------------------------------------------------------------------------------
with tabs[3]:
    st.subheader("Find a movie")
    query = st.text_input("Search a movie by title", placeholder="e.g. star wars", key="explore_title_query")
    if query.strip():
        found = ex.search_titles(movies(data_dir, fp), query, limit=None)
        if found.empty:
            st.info(f"No movie title in {name} contains “{query.strip()}”.")
        else:
            st.caption(f"{len(found):,} movie(s) whose title contains “{query.strip()}”, most rated first"
                       + (" (showing 200)" if len(found) > 200 else "") + ".")
            st.dataframe(found.head(200)[["title", "year", "genres", "ratings", "mean_rating", "item"]],
                         hide_index=True, width="stretch",
                         column_config={"mean_rating": st.column_config.NumberColumn("mean rating", format="%.2f"),
                                        "ratings": st.column_config.NumberColumn("ratings", format="%d"),
                                        "year": st.column_config.NumberColumn("year", format="%d"),
                                        "item": st.column_config.NumberColumn("movie id", format="%d")})
    else:
        st.caption("Case-insensitive substring of the title, e.g. “star wars” or “(1995)”.")

# ---------------------------------------------------------------------------------------------------------------
with tabs[4]:
    st.subheader("One user's timeline")
    ids = users(data_dir, fp)
    st.caption(f"{len(ids):,} users with ratings, ids {ids.min():,} to {ids.max():,}." if len(ids) else "No users.")
    if state.follows_sidebar_user(fp):
        uid = state.entered_user()
        st.caption(f"User {uid if uid is not None else '?'}: the user chosen in the sidebar (its SS4Rec run was "
                   f"trained on these data); change it there.")
        if uid is None:
            st.warning(state.user_problem() or "The sidebar's user id is not a whole number.")
    else:
        uid = state.user_id_input("User id", f"explore_user::{fp}",  # per dataset: a switch starts at its first user
                                  int(ids[0]) if len(ids) else 1)
    if uid is None:
        st.stop()
    try:
        tl = ex.user_timeline(data.interactions, data.items, int(uid))
    except ex.UnknownUserError as exc:
        st.warning(f"{exc}. Pick another user id.")
    else:
        profile = ex.user_profile(data.users, int(uid), name)
        known = tl.dropna(subset=["time"])
        line = f"User {int(uid)}: {len(tl):,} ratings, mean {tl['rating'].mean():.2f}"
        if len(known):
            line += f", from {known['time'].min():%Y-%m-%d} to {known['time'].max():%Y-%m-%d}"
        if profile:
            line += " · " + ", ".join(f"{k} {v}" for k, v in profile.items())
        st.write(line)
        if len(known) < len(tl):
            st.warning(f"{len(tl) - len(known):,} of this user's ratings have no timestamp; they are listed last "
                       f"and left out of the chart.")
        if len(known):
            show_chart(charts.user_timeline_chart(known, name, int(uid)))
        table = tl.assign(time=tl["time"].dt.strftime("%Y-%m-%d %H:%M:%S").fillna("unknown"))
        st.dataframe(table[["n", "time", "title", "rating", "gap"]].rename(columns={"gap": "gap since previous"}),
                     hide_index=True, width="stretch")
        st.caption("All of this user's ratings in the file. The model pages (State trajectories, Live) count them "
                   "after the 5-core filter the runs train on (users and movies with at least 5 ratings), so a "
                   "user can have fewer ratings there.")
